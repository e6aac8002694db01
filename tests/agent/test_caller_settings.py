"""The caller's per-snapshot settings (settings.PER_SNAPSHOT) travel with its request to the
agent: checked on the caller's side first (one line, exit 2, as without an agent), applied
by the agent within its own (a caller may lower each, never raise it past the agent's,
and the snapshot's notes say when the agent lowered one). The same settings through a
private agent and in this process give the same snapshot, setting by setting: each case
names what in the snapshot shows it (links, the capture's budget and path, the collector
and its helper threads), and the snapshot records the settings it was taken with."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from agent_support import RunningAgent, sideeye
from agent_support import Target as Manyparked
from oracle import start_app

from pytest_sideeye import engine, settings
from pytest_sideeye.agent import snapshot_via_agent
from pytest_sideeye.agent.protocol import (
                                           HttpError,
                                           SnapshotRequest,
                                           TargetSpec,
                                           parse_snapshot_request,
)

CAPTURE = {"main.parkHandler": ["order"]}
BUDGET_NOTE = re.compile(r"capture stopped at its pause budget \(([\d.]+) ms\).*"
                         r"(read in BPF|read by Python)")


def _links(snap) -> bool:
    return bool(snap.links)


def _capture_budget(snap) -> set:
    """Which pause budget stopped the capture, and on which path (BPF or Python)."""
    return {m.groups() for p in snap.processes for n in p.notes if (m := BUDGET_NOTE.search(n))}


def _stop_hook_used(snap) -> set:
    return {not p.collector.startswith("iterator (stop hook disabled") for p in snap.processes}


def _goroutines_by_hook(snap) -> set:
    """Processes whose goroutines the stop hook walked none of (its budget was spent)."""
    return {p.pid for p in snap.processes if re.search(r"\(0 of \d+ goroutines by the hook",
                                                       p.collector or "")}


def _walked_after_a_preread(snap) -> bool:
    return any(p.walk == "pre-read" for p in snap.processes)


def _helper_threads(snap) -> bool:
    return any("by helper threads" in (p.collector or "") for p in snap.processes)


def _stopped_together(snap) -> tuple:
    """Together mode: the snapshot says so, and each process waited stopped for the others."""
    return snap.together, all("waited" in p.pause_parts_ns for p in snap.processes)


# (the settings, what shows them, its value with them). Without them each shows otherwise
# (checked below), so a setting the agent ignores fails its case.
CASES = {
    "links": ({"SIDEEYE_LINKS": "0"}, _links, False),
    "capture-budget": ({"SIDEEYE_CAPTURE_PAUSE_MS": "0"}, _capture_budget,
                       {("0", "read in BPF")}),
    "bpf-capture": ({"SIDEEYE_BPF_CAPTURE": "0", "SIDEEYE_CAPTURE_PAUSE_MS": "0"},
                    _capture_budget, {("0", "read by Python")}),
    # The stop hook walks in the pause: without the pre-read (which checks headers only).
    "stop-hook": ({"SIDEEYE_STOP_HOOK": "0", "SIDEEYE_PREREAD": "0"}, _stop_hook_used,
                  {False}),
    "hook-budget": ({"SIDEEYE_HOOK_BUDGET_US": "0", "SIDEEYE_PREREAD": "0"},
                    _goroutines_by_hook, "every pid"),
    "preread": ({"SIDEEYE_PREREAD": "0"}, _walked_after_a_preread, False),
    # Helpers join a walk in the pause: the pre-read's check is over before they wake.
    "helper-threads": ({"SIDEEYE_COLLECT_THREADS": "1", "SIDEEYE_PREREAD": "0"},
                       _helper_threads, False),
    "together": ({"SIDEEYE_TOGETHER": "1"}, _stopped_together, (True, True)),
}


# Where the default may already show what the case does (one CPU: no helper threads).
BASELINE = {"helper-threads": {"SIDEEYE_COLLECT_THREADS": "2", "SIDEEYE_PREREAD": "0"}}


def test_every_per_snapshot_setting_has_its_case():
    covered = {name for env, _show, _want in CASES.values() for name in env}
    assert covered == {k.variable for k in settings.PER_SNAPSHOT}


def test_together_is_the_callers_choice_not_a_limit(monkeypatch):
    """SIDEEYE_TOGETHER chooses how to stop, it bounds nothing: a caller asking for it gets
    it from an agent whose own is off, without a note; one asking nothing gets the agent's."""
    monkeypatch.delenv("SIDEEYE_TOGETHER", raising=False)
    agents = settings.current()
    assert agents.together is False
    cfg, notes = settings.within_limits({"SIDEEYE_TOGETHER": True}, agents)
    assert (cfg.together, notes) == (True, [])
    cfg, notes = settings.within_limits({}, agents._replace(together=True))
    assert (cfg.together, notes) == (True, [])
    cfg, notes = settings.within_limits({"SIDEEYE_TOGETHER": False},
                                        agents._replace(together=True))
    assert (cfg.together, notes) == (False, [])


@pytest.fixture
def clean_env(monkeypatch):
    """No per-snapshot setting from the test's own environment: each case sets its own."""
    for k in settings.PER_SNAPSHOT:
        monkeypatch.delenv(k.variable, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def pids(needs_root, go_build, manyparked):
    """The peers fixture's server and client (an HTTP request parked in a handler: links
    and a capture) and a manyparked of 4,000 goroutines (past collect.HELPERS_FROM, and
    more than the stop hook walks in its budget)."""
    exe = go_build("peers")
    server = start_app(exe, "server")
    http_port, tcp_port = server.ready_line.split()[1:3]
    client = start_app(exe, "client", f"127.0.0.1:{http_port}", f"127.0.0.1:{tcp_port}")
    many = Manyparked(manyparked, 4000)
    try:
        _wait_parked(server)
        yield [server.pid, client.pid, many.pid]
    finally:
        many.stop()
        client.stop()
        server.stop()


def _wait_parked(server, n: int = 2) -> None:
    deadline = time.monotonic() + 30
    while sum(line.startswith("parked") for line in server.output) < n:
        assert time.monotonic() < deadline, f"handlers not reached: {server.output}"
        time.sleep(0.05)


def _here(pids):
    return engine.take_snapshot(pids, CAPTURE)


def _via(agent, pids, capture=CAPTURE):
    return snapshot_via_agent(pids, capture, socket_path=str(agent.socket))


def _expected(want, pids):
    return set(pids) if want == "every pid" else want


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_same_settings_give_the_same_snapshot_through_the_agent(case, agent, pids,
                                                                    monkeypatch):
    """The private agent started with this process's environment (tests/support.py's
    capture budget included): its limits are this process's own settings."""
    env, show, want = CASES[case]
    want = _expected(want, pids)
    with monkeypatch.context() as m:
        for name, value in BASELINE.get(case, {}).items():
            m.setenv(name, value)
        assert show(_here(pids)) != want, f"{case}: the default already shows {want!r}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    here, via = _here(pids), _via(agent, pids)
    for p in here.processes + via.processes:
        assert p.error is None, p.error
    assert (show(here), show(via)) == (want, want), case
    asked = settings.requested()   # each variable set, in its units: what the request carried
    assert {n: via.settings[n] for n in env} == {n: here.settings[n] for n in env} \
        == {n: asked[n] for n in env}
    assert via.settings == here.settings
    assert not [n for p in via.processes for n in p.notes if n.startswith("settings:")]


@pytest.fixture(scope="module")
def hello(needs_root, go_build):
    """A small program (no net/http: a cold agent's first snapshot of it is quick)."""
    proc = subprocess.Popen([str(go_build("hello"))], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_the_agent_keeps_a_callers_settings_within_its_own(shared_dir, hello, clean_env):
    """An agent started with a capture budget of 0 and no stop hook: a caller asking for
    more gets the agent's, with a note each; one asking for less (one collecting thread)
    gets it; one asking nothing gets the agent's, without a note."""
    limited = RunningAgent(shared_dir / "agent-limits",
                           {"SIDEEYE_CAPTURE_PAUSE_MS": "0", "SIDEEYE_STOP_HOOK": "0",
                            "SIDEEYE_PREREAD": "0"})   # the hook walks in the pause only
    try:
        clean_env.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "50")
        clean_env.setenv("SIDEEYE_STOP_HOOK", "1")
        clean_env.setenv("SIDEEYE_COLLECT_THREADS", "1")
        snap = _via(limited, [hello], None)
        assert {n: snap.settings[n] for n in ("SIDEEYE_CAPTURE_PAUSE_MS", "SIDEEYE_STOP_HOOK",
                                              "SIDEEYE_COLLECT_THREADS")} == {
            "SIDEEYE_CAPTURE_PAUSE_MS": 0, "SIDEEYE_STOP_HOOK": False,
            "SIDEEYE_COLLECT_THREADS": 1}
        [p] = snap.processes
        assert p.error is None, p.error
        assert [n for n in p.notes if n.startswith("settings:")] == [
            "settings: SIDEEYE_CAPTURE_PAUSE_MS=50 asked, the agent's limit 0 applied",
            "settings: SIDEEYE_STOP_HOOK=1 asked, the agent's limit 0 applied"]
        assert _stop_hook_used(snap) == {False}

        for name in ("SIDEEYE_CAPTURE_PAUSE_MS", "SIDEEYE_STOP_HOOK", "SIDEEYE_COLLECT_THREADS"):
            clean_env.delenv(name)
        snap = _via(limited, [hello], None)
        assert (snap.settings["SIDEEYE_CAPTURE_PAUSE_MS"], snap.settings["SIDEEYE_STOP_HOOK"]) \
            == (0, False)
        assert not [n for p in snap.processes for n in p.notes if n.startswith("settings:")]
    finally:
        limited.stop()


@pytest.mark.slow
@pytest.mark.parametrize("output", ["--json", "--text"])
def test_a_bad_setting_is_one_line_and_exit_2_through_the_agent(agent, pids, output, tmp_path):
    out = ["--json", str(tmp_path / "s.json")] if output == "--json" else ["--text"]
    env = {**agent.client_env(), "SIDEEYE_CAPTURE_PAUSE_MS": "abc"}
    before = len(agent.log_lines())
    r = sideeye("snapshot", "--pid", str(pids[0]), *out, env=env)
    assert (r.returncode, r.stderr.splitlines()) == (2, [
        "sideeye: SIDEEYE_CAPTURE_PAUSE_MS='abc' (from the environment) is not a number"])
    assert agent.log_lines()[before:] == []      # checked before the agent was asked
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_links_off_in_the_callers_environment_through_the_agent(agent, pids, tmp_path):
    """The issue's case: `SIDEEYE_LINKS=0 sideeye snapshot --pid A --pid B` through the
    agent, the document stored as the agent sent it."""
    env = {**agent.client_env(), "SIDEEYE_LINKS": "0"}
    out = tmp_path / "s.json"
    r = sideeye("snapshot", "--pid", str(pids[0]), "--pid", str(pids[1]), "--json", str(out),
                env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["links"] == [] and doc["settings"]["SIDEEYE_LINKS"] is False
    r = sideeye("snapshot", "--pid", str(pids[0]), "--pid", str(pids[1]), "--json", str(out),
                env=agent.client_env())
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["links"] != []


# --- the request's form, without an agent ----------------------------------------------

def test_the_request_carries_the_settings_the_caller_set(clean_env):
    clean_env.setenv("SIDEEYE_LINKS", "off")
    clean_env.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "2.5")
    asked = settings.requested()
    assert asked == {"SIDEEYE_LINKS": False, "SIDEEYE_CAPTURE_PAUSE_MS": 2.5}
    body = json.dumps(SnapshotRequest([TargetSpec(pid=7)], settings=asked).to_json()).encode()
    assert parse_snapshot_request(body).settings == asked


@pytest.mark.parametrize("bad, message", [
    ({"SIDEEYE_LINKS": 0}, "SIDEEYE_LINKS='0' (from the request) takes true or false"),
    ({"SIDEEYE_CAPTURE_PAUSE_MS": "5"}, "(from the request) must be a number >= 0"),
    ({"SIDEEYE_COLLECT_THREADS": 0}, "SIDEEYE_COLLECT_THREADS='0' (from the request) must be "
                                     "a number >= 1"),
    ({"SIDEEYE_MAX_PAUSE_S": 60}, "'SIDEEYE_MAX_PAUSE_S' (from the request) is not a "
                                  "per-snapshot setting"),
    (["SIDEEYE_LINKS"], "'settings' must be an object"),
])
def test_a_bad_setting_in_a_request_is_refused_in_one_line(bad, message):
    body = json.dumps({"targets": [{"pid": 7}], "settings": bad}).encode()
    with pytest.raises(HttpError) as e:
        parse_snapshot_request(body)
    assert e.value.status == 400 and message in str(e.value) and "\n" not in str(e.value)


def test_the_agent_lowers_what_is_over_its_own(clean_env):
    clean_env.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "5")
    clean_env.setenv("SIDEEYE_LINKS", "0")
    limits = settings.current()
    cfg, notes = settings.within_limits({"SIDEEYE_CAPTURE_PAUSE_MS": 20, "SIDEEYE_LINKS": True,
                                         "SIDEEYE_HOOK_BUDGET_US": 100}, limits)
    assert (cfg.capture_pause_s, cfg.links, cfg.hook_budget_ns) == (0.005, False, 100_000)
    assert cfg.stop_hook is True and cfg.collect_threads == limits.collect_threads
    assert notes == ["settings: SIDEEYE_CAPTURE_PAUSE_MS=20 asked, the agent's limit 5 applied",
                     "settings: SIDEEYE_LINKS=1 asked, the agent's limit 0 applied"]
    assert settings.within_limits({}, limits) == (limits, [])


@pytest.mark.slow
def test_the_plugins_snapshots_carry_its_processs_settings(agent, pids, monkeypatch):
    """The plugin takes its snapshots through agent.take_snapshot, which asks the agent
    whenever it answers: the settings of the pytest process's environment go with them."""
    from pytest_sideeye import agent as agent_mod
    from pytest_sideeye.plugin import taking
    for name, value in agent.client_env().items():
        if name.startswith("SIDEEYE_AGENT"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("SIDEEYE_LINKS", "0")
    assert agent_mod.route().kind == "agent"
    before = len(agent.log_lines())
    snap = taking._take_one_at_a_time(pids[:2], {})
    assert len([ln for ln in agent.log_lines()[before:] if "snapshot for uid 0" in ln]) == 1
    assert snap.links == [] and snap.settings["SIDEEYE_LINKS"] is False
    monkeypatch.delenv("SIDEEYE_LINKS")
    assert taking._take_one_at_a_time(pids[:2], {}).links != []


@pytest.mark.slow
def test_together_from_the_command_line_through_the_agent(agent, pids, tmp_path):
    """`sideeye snapshot --together` is SIDEEYE_TOGETHER=1: the agent stops both processes
    before collecting either, and the document says so."""
    out = tmp_path / "s.json"
    r = sideeye("snapshot", "--pid", str(pids[0]), "--pid", str(pids[1]), "--together",
                "--json", str(out), env=agent.client_env())
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["together"] is True and doc["settings"]["SIDEEYE_TOGETHER"] is True
    assert all("waited" in p["pause_parts_ns"] for p in doc["processes"]), doc["processes"]
