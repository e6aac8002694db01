"""The snapshot engine against the oracle: the target's own goroutine dump.

Real BPF, real Go processes, three Go versions. A goroutine that is parked both before and
after our snapshot (per two debug=2 dumps around it) must match exactly: id, status, wait
reason, every visible frame's function/file/line/inlined flag, and created-by.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from oracle import compare, stable_goroutines, start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import take as engine
from pytest_sideeye.snapshot.godump import parse_dump

pytestmark = pytest.mark.usefixtures("needs_root")


def snapshot_and_compare(app):
    before = parse_dump(app.dump_debug2())
    snap = engine.take_snapshot([app.pid])
    after = parse_dump(app.dump_debug2())
    proc = snap.processes[0]
    assert proc.error is None, proc.error
    stable = stable_goroutines(before, after)
    return proc, stable, compare(proc, stable)


@pytest.fixture(scope="module", params=GO_VERSIONS)
def parkzoo(request, go_build):
    binary = go_build("parkzoo", request.param)
    with start_app(binary) as app:
        time.sleep(0.3)  # let the last goroutines reach their parking spots
        yield request.param, app


def test_parked_goroutines_match_the_runtime_dump(parkzoo):
    version, app = parkzoo
    proc, stable, diffs = snapshot_and_compare(app)
    assert not diffs, "\n".join(diffs)
    # The comparison covered the parking kinds parkzoo sets up, not a trivial subset.
    reasons = {g.wait_reason or g.status for g in stable}
    for r in ("chan send", "chan receive", "select", "select (no cases)", "sync.Mutex.Lock",
              "sync.RWMutex.RLock", "sync.RWMutex.Lock", "sync.WaitGroup.Wait",
              "sync.Cond.Wait", "sleep", "IO wait", "syscall"):
        if version.startswith("1.21") and r.startswith("sync."):
            r = "semacquire" if "Cond" not in r else "sync.Cond.Wait"
        assert r in reasons, f"{r!r} not covered for Go {version}: {sorted(reasons)}"
    assert len(stable) >= 20
    assert proc.go_version == f"go{version}"


def test_the_stop_hook_walks_in_the_pause(parkzoo, monkeypatch):
    """On this kernel the goroutines are walked by the stop hook (in the target's context)
    when they are walked in the pause (no pre-read); a fallback to the iterator alone would
    still be correct but slower, so it fails here."""
    monkeypatch.setenv("SIDEEYE_PREREAD", "0")
    _version, app = parkzoo
    proc = engine.take_snapshot([app.pid]).processes[0]
    assert proc.error is None, proc.error
    assert proc.collector.startswith("stop hook"), proc.collector
    assert 0 < proc.pause_parts_ns["hook_walk"] < proc.pause_ns


@pytest.mark.parametrize("env, collector", [
    ({"SIDEEYE_STOP_HOOK": "0"}, "iterator (stop hook disabled"),
    # A hook with no time budget claims nothing: the collector's iterator pass takes over.
    ({"SIDEEYE_HOOK_BUDGET_US": "0"}, "stop hook and iterator (0 of "),
], ids=["iterator-alone", "hook-out-of-budget"])
def test_every_collection_path_matches_the_runtime_dump(parkzoo, env, collector, monkeypatch):
    monkeypatch.setenv("SIDEEYE_PREREAD", "0")   # the paths of a walk in the pause
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _version, app = parkzoo
    proc, _stable, diffs = snapshot_and_compare(app)
    assert not diffs, "\n".join(diffs)
    assert proc.collector.startswith(collector), proc.collector


@pytest.mark.parametrize("preread", ["1", "0"], ids=["pre-read", "in-the-pause"])
def test_both_walks_match_the_runtime_dump(parkzoo, preread, monkeypatch):
    """With the pre-read (issue 27) the pause checks headers and keeps the records walked
    while the target ran; without it the pause walks everything: the same dump either way."""
    monkeypatch.setenv("SIDEEYE_PREREAD", preread)
    _version, app = parkzoo
    proc, stable, diffs = snapshot_and_compare(app)
    assert not diffs, "\n".join(diffs)
    if preread == "1":
        assert proc.walk == "pre-read", proc.walk
        # parkzoo's spinners run, and its sleepers may wake: a few, never most.
        assert proc.rewalked < len(proc.goroutines) / 2, proc.rewalked
        assert {"verify", "rewalk"} <= set(proc.pause_parts_ns)
    else:
        assert proc.walk is None and proc.rewalked is None


def test_deep_recursion_is_complete(parkzoo):
    _version, app = parkzoo
    snap = engine.take_snapshot([app.pid])
    deep = [g for g in snap.goroutines() if g.blocked_in("main.parkDeep")]
    assert len(deep) == 1
    frames = [f.function for f in deep[0].frames]
    assert frames.count("main.recurseDown") == 200
    assert deep[0].truncated is None


def test_inlined_frames_are_marked(parkzoo):
    _version, app = parkzoo
    snap = engine.take_snapshot([app.pid])
    g = next(g for g in snap.goroutines() if g.blocked_in("main.parkInlined"))
    inlined = {f.function for f in g.frames if f.inlined}
    assert {"main.inlinedOuter", "main.inlinedInner"} <= inlined


def test_running_goroutines_have_stacks_from_their_threads(parkzoo):
    _version, app = parkzoo
    # Two spinners on two cores: running (stack from their thread's registers or, on the
    # system stack, from g.sched). A thread caught in the preemption signal handler has no
    # frame chain back to the goroutine's code: then the stack must say so.
    both_seen = False
    for _ in range(5):
        snap = engine.take_snapshot([app.pid])
        running = list(snap.goroutines(status="running"))
        assert running, "no goroutine seen running"
        for g in running:
            assert g.thread and os.path.exists(f"/proc/{app.pid}/task/{g.thread}")
            assert g.frames or g.truncated
            if not g.blocked_in("main.spinBusy") and any(
                    f.function == "main.spinBusy" for f in g.frames) is False:
                assert g.truncated or not g.created_by or "startAll" not in g.created_by.function
        spinners = [g for g in snap.goroutines() if g.blocked_in("main.spinBusy")]
        if len(spinners) == 2:
            both_seen = True
            break
    assert both_seen, "the spinners' own frames were never seen in 5 snapshots"


def test_pause_is_recorded_and_target_resumed(parkzoo):
    _version, app = parkzoo
    snap = engine.take_snapshot([app.pid])
    proc = snap.processes[0]
    assert 0 < proc.pause_parts_ns["stop"] <= proc.pause_ns
    assert _state(app.pid) not in "tT"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return chr(data[data.rindex(b")") + 2])


# --- bad input: one clear line, never a traceback ----------------------------------------

def test_dead_pid_is_a_clear_process_error():
    p = subprocess.Popen(["true"])
    p.wait()
    snap = engine.take_snapshot([p.pid])
    assert snap.processes[0].error
    assert "\n" not in snap.processes[0].error


def test_not_a_go_program():
    p = subprocess.Popen(["sleep", "30"])
    try:
        err = engine.take_snapshot([p.pid]).processes[0].error
        assert err and "Go" in err and "\n" not in err
    finally:
        p.kill()
        p.wait()


def test_binary_of_a_go_version_without_layouts_says_what_is_missing(go_build, tmp_path):
    """No DWARF and a Go version the layout table does not have (its build info says
    go1.99.11): one line naming the version, nothing paused."""
    from support import patched_go_version
    binary = patched_go_version(go_build("hello", "1.24.11", ldflags="-w"), "go1.24.11",
                                "go1.99.11", tmp_path / "hello-go1.99")
    with subprocess.Popen([str(binary)], stdout=subprocess.PIPE) as p:
        try:
            p.stdout.readline()
            err = engine.take_snapshot([p.pid]).processes[0].error
            assert err and "Go 1.99.11 is not in the runtime layout table" in err
            assert "\n" not in err
        finally:
            p.kill()


def test_already_stopped_process_is_left_stopped(go_build):
    binary = go_build("hello")
    with subprocess.Popen([str(binary)], stdout=subprocess.PIPE) as p:
        try:
            p.stdout.readline()
            os.kill(p.pid, signal.SIGSTOP)
            time.sleep(0.05)
            err = engine.take_snapshot([p.pid]).processes[0].error
            assert err and "already stopped" in err
            time.sleep(0.05)
            assert _state(p.pid) in "tT", "we resumed a process someone else had stopped"
        finally:
            p.kill()


@pytest.mark.parametrize("env", [
    {"SIDEEYE_STOP_HOOK": "0", "SIDEEYE_COLLECT_THREADS": "4"},
    {"SIDEEYE_HOOK_BUDGET_US": "200", "SIDEEYE_COLLECT_THREADS": "4"},
    {"SIDEEYE_COLLECT_THREADS": "1"},
], ids=["iterator-4-threads", "short-hook-4-threads", "one-thread"])
def test_threads_sharing_a_pass_match_the_runtime_dump(go_build, env, monkeypatch):
    """3,000 goroutines (47 chunks of 64) walked by the collector's threads claiming chunks
    of one pass at once, with and without the stop hook, each captured frame read once:
    every goroutine as the runtime prints it, and the helpers did take part."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    capture = {"main.parkedLeaf": ["j"]}
    with start_app(go_build("manyparked"), "-n", "3000") as app:
        time.sleep(0.3)
        helped = []
        for _ in range(3):
            before = parse_dump(app.dump_debug2())
            proc = engine.take_snapshot([app.pid], capture=capture).processes[0]
            after = parse_dump(app.dump_debug2())
            assert proc.error is None, proc.error
            stable = stable_goroutines(before, after)
            assert len(stable) >= 3000
            diffs = compare(proc, stable)
            assert not diffs, "\n".join(diffs[:20])
            leaves = [f for g in proc.goroutines for f in g.frames
                      if f.function == "main.parkedLeaf"]
            assert len(leaves) == 3000
            # Each leaf's j = &job{ID: i}, i = 0..2999: every frame read once, by someone.
            ids = [next(v.value for v in f.variables if v.name == "j").get("ID")
                   for f in leaves]
            assert sorted(ids) == list(range(3000))
            helped.append("by helper threads" in proc.collector)
    if env["SIDEEYE_COLLECT_THREADS"] == "1":
        assert not any(helped), proc.collector
    else:   # a helper woken late may find every chunk claimed, but not three times
        assert any(helped), proc.collector


def test_recursive_frames_each_get_their_own_captured_values(go_build):
    """descend(depth, i) recurses 8 times at one return address: every frame must carry
    its own `depth`, not one frame's values copied over the others."""
    with start_app(go_build("manyparked"), "-n", "3") as app:
        time.sleep(0.2)
        snap = engine.take_snapshot([app.pid], capture={"main.descend": ["depth", "i"]})
    assert snap.processes[0].error is None, snap.processes[0].error
    chains = [g for g in snap.goroutines() if g.blocked_in("main.parkedLeaf")]
    assert len(chains) == 3
    for g in chains:
        frames = [f for f in g.frames if f.function == "main.descend"]
        depths = [next(v.value for v in f.variables if v.name == "depth") for f in frames]
        # Leaf first: 0 (dead at the bottom call site, which returns parkedLeaf's value
        # directly: unavailable, so None), then 1, 2, ... 8.
        assert depths[0] in (0, None)
        assert depths[1:] == list(range(1, len(frames))), depths
        ids = {next(v.value for v in f.variables if v.name == "i") for f in frames}
        assert len(ids) == 1 and None not in ids


def test_capture_stops_at_its_pause_budget(go_build, monkeypatch):
    """Capture is Python work inside the pause: past SIDEEYE_CAPTURE_PAUSE_MS it stops,
    the target is resumed, and the snapshot says which frames were cut."""
    monkeypatch.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "0.01")
    with start_app(go_build("manyparked"), "-n", "300") as app:
        time.sleep(0.3)
        snap = engine.take_snapshot([app.pid], capture={"main.parkedLeaf": ["i", "j"]})
        assert _state(app.pid) not in "tT"
    proc = snap.processes[0]
    assert proc.error is None
    note = next(n for n in proc.notes if "pause budget" in n)
    assert "SIDEEYE_CAPTURE_PAUSE_MS" in note
    leaves = [f for _, f in snap.frames("main.parkedLeaf")]
    assert len(leaves) == 300
    # Frames not reached carry no values; none carries a wrong one: manyparked's leaf i
    # holds j = &job{ID: i, Name: names[i%4], Tags: ["batch", name]}, each i once.
    names = ["ada", "grace", "barbara", "frances"]
    seen = []
    for f in leaves:
        got = {v.name: v for v in f.variables}
        assert set(got) <= {"i", "j"}
        i, j = got.get("i"), got.get("j")
        if i is None or not i.available or i.value is None:
            continue
        if not isinstance(i.value, int):   # cut by the budget: marked as such, nothing else
            assert isinstance(i.value, dict) and "$cut" in i.value, i.value
            continue
        seen.append(i.value)
        if j is not None and j.available and isinstance(j.value, dict) and "ID" in j.value:
            assert j.value["ID"] == i.value and j.value["Name"] == names[i.value % 4]
            assert j.value["Tags"] == ["batch", names[i.value % 4]]
    assert len(seen) == len(set(seen)) and all(0 <= i < 300 for i in seen)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_every_goroutine_and_frame_matches_the_level2_dump(go_build, version):
    """Against the whole SIGQUIT dump at GOTRACEBACK=system: the runtime's own goroutines,
    runtime frames, go-statement and <autogenerated> wrappers all count, and a goroutine
    only in ours or twice in ours is a difference."""
    with start_app(go_build("parkzoo", version), env={"GOTRACEBACK": "system"}) as app:
        time.sleep(0.3)
        [proc] = engine.take_snapshot([app.pid]).processes
        oracle = parse_dump(app.dump_sigquit())
    assert proc.error is None, proc.error
    diffs = compare(proc, oracle, complete=True)
    assert not diffs, "\n".join(diffs)
    assert any(f.wrapper for g in proc.goroutines for f in g.frames)
