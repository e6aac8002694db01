"""The plugin end to end: inner pytest runs (in subprocesses) whose tests use real
ledger services in Docker, snapshotted with real BPF.

The inner tests deadlock the ledger on purpose (two opposite transfers with a lock hold,
then a request that needs both accounts), so every timeout snapshot must show goroutines
blocked on a mutex in main.(*ledger).move. Timeouts are short (2-3 s) to keep the file
fast; one image is shared by all runs (built once, cached by content).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import GOAPPS, missing

from pytest_sideeye.plugin.attach import sanitise
from pytest_sideeye.snapshot.model import Snapshot

REAL_HOME = os.path.expanduser("~")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]

RUN_LABEL = "sideeye-plugin-test-run"
CHROMIUM = "/usr/bin/chromium"

CONFTEST = f"""
import os
import pytest
from pytest_sideeye import go_service

LEDGER = {str(GOAPPS / "ledger")!r}
RUN = {{{RUN_LABEL!r}: os.environ["SIDEEYE_PLUGIN_TEST_RUN"]}}  # finds this run's containers
ledger = go_service("ledger", source=LEDGER, ports=[8080], ready_http=(8080, "/healthz"),
                    env={{"LEDGER_TRANSFER_HOLD": "100ms"}}, labels=RUN)
replica = go_service("replica", source=LEDGER, ports=[8080], ready_http=(8080, "/healthz"),
                     env={{"LEDGER_PRIMARY": "http://ledger:8080"}}, labels=RUN)
sleepy = go_service("sleepy", source=LEDGER, ports=[8080], ready_http=(8080, "/healthz"),
                    args=["-warmup", "1h"], ready_timeout=1.5, labels=RUN)
"""

HELPERS = """
import json, threading, time, urllib.request


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        urllib.request.urlopen(req).read()
    except Exception:
        pass  # the deadlock ends these requests only when the container goes


def deadlock(svc):
    url = svc.url(8080, "/transfer")
    for a, b in (("alice", "bob"), ("bob", "alice")):
        threading.Thread(target=post, args=(url, {"from": a, "to": b, "amount": 1}),
                         daemon=True).start()
    time.sleep(0.6)  # both transfers now hold one account lock and wait for the other


def hang(svc):
    deadlock(svc)
    urllib.request.urlopen(svc.url(8080, "/accounts")).read()  # needs both locks: hangs
"""

HANG = """
from helpers import hang

def test_hang(ledger):
    hang(ledger)
"""


class Project:
    """A throw-away pytest project using the ledger services; runs pytest on it in a
    subprocess. (Not pytester: one run is shared by several tests of this module, and the
    inner runs need the real HOME for the caches under ~/.cache/sideeye.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = uuid.uuid4().hex
        self.write("conftest.py", CONFTEST)
        self.write("helpers.py", HELPERS)
        self.write("pytest.ini", "[pytest]\n")  # the rootdir is here, not above

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["HOME"] = REAL_HOME
        env["SIDEEYE_PLUGIN_TEST_RUN"] = self.run_id
        return env

    def command(self, *args: str) -> list[str]:
        # hypothesis's plugin costs a second of start-up per run and is not used inside.
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                "-p", "no:hypothesispytest", "--sideeye-dir=reports",
                "-W", "ignore::DeprecationWarning", *args]

    def run(self, *args: str, timeout: float = 180, prefix: tuple[str, ...] = ()
            ) -> pytest.RunResult:
        t0 = time.monotonic()
        r = subprocess.run([*prefix, *self.command(*args)], cwd=self.path, env=self.env(),
                           capture_output=True, text=True, timeout=timeout)
        print(r.stdout, r.stderr, sep="\n")  # shown when an assertion below fails
        return pytest.RunResult(r.returncode, r.stdout.splitlines(), r.stderr.splitlines(),
                                time.monotonic() - t0)


def report_json(project: Project, nodeid: str, stem: str) -> Snapshot:
    path = project.path / "reports" / sanitise(nodeid) / f"{stem}.json"
    assert path.is_file(), f"no {path}; have {sorted(p.name for p in path.parent.glob('*'))}"
    for kind in (".html", ".txt"):
        assert path.with_suffix(kind).is_file()
    return Snapshot.load(path)


def assert_deadlock_seen(snap: Snapshot, service: str = "ledger") -> None:
    procs = [p for p in snap.processes if p.service == service]
    assert procs and all(p.error is None for p in procs), [p.error for p in procs]
    stuck = list(snap.goroutines(blocked_in="main.(*ledger).move"))
    assert len(stuck) >= 2, [g.frames[:3] for g in snap.goroutines()]
    assert {g.wait_reason for g in stuck} == {"sync.Mutex.Lock"}
    assert procs[0].logs and "ledger listening" in procs[0].logs


def assert_clean_output(result: pytest.RunResult) -> None:
    everything = result.stdout.str() + result.stderr.str()
    assert "Traceback (most recent call last)" not in everything
    assert "INTERNALERROR" not in everything


def no_containers_left(project: Project) -> None:
    """Every container the inner run started is gone once it returned."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter",
                          f"label={RUN_LABEL}={project.run_id}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


@pytest.fixture
def project(tmp_path: Path, ledger_image: str) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="module", autouse=True)
def ledger_image():
    """Build the image once in this process: inner runs find it by content digest."""
    from pytest_sideeye.services.images import go_image
    return go_image("ledger", GOAPPS / "ledger")


# Each inner run is a new process that pays the engine's one-time set-up (BPF compile,
# several seconds on a busy machine): the checks are grouped into few runs.

def test_pytest_timeout_snapshot_comes_before_it_fires(project):
    project.write("test_pt.py", HANG)
    result = project.run("--timeout=4", "--sideeye-on-timeout")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>4.0s) from pytest-timeout*",
                                 "*- sideeye -*",
                                 "report: reports/test_pt.py__test_hang/timeout.html",
                                 "*sideeye reports*",
                                 "reports/test_pt.py__test_hang/timeout.html*"])
    snap = report_json(project, "test_pt.py::test_hang", "timeout")
    assert snap.test["outcome"] == "timeout" and snap.test["phase"] == "call"
    assert "pytest-timeout" in snap.test["message"]
    assert_deadlock_seen(snap)
    assert_clean_output(result)
    no_containers_left(project)


def test_pytest_timeout_thread_method_gets_its_report_before_the_exit(project):
    """pytest-timeout's thread method ends the process with os._exit (no teardown, no
    junit): the report must be complete on disk before that, and its path printed."""
    project.write("test_th.py", HANG)
    try:
        result = project.run("--timeout=4", "--timeout-method=thread", "--sideeye-on-timeout")
    finally:  # os._exit skipped the finalizers: remove this run's containers here
        ids = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label={RUN_LABEL}={project.run_id}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "sideeye: snapshot before pytest-timeout fires: reports/test_th.py__test_hang/timeout.html",
        "*+ Timeout +*"])
    snap = report_json(project, "test_th.py::test_hang", "timeout")
    assert_deadlock_seen(snap)


def test_without_privileges_tests_fail_as_they_would_and_say_why(project):
    """pytest without capabilities (root's uid, every capability dropped: no BPF, no
    ptrace): same outcomes, one line saying why there are no goroutines, the logs kept."""
    project.write("test_np.py", """
from helpers import deadlock, hang

def test_fails(ledger):
    deadlock(ledger)
    assert 1 == 2

def test_hang(ledger):
    hang(ledger)

def test_fixture(ledger, sideeye_snapshot):
    sideeye_snapshot()
""")
    why = "snapshots need root, or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_KILL"
    result = project.run("-p", "no:timeout", "--sideeye-on-failure", "--sideeye-on-timeout",
                         "--sideeye-timeout=4",
                         prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all"))
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines_random([
        f"no snapshot: {why}*",
        f"*Failed: Timeout (>4 s) — sideeye snapshot: reports/test_np.py__test_hang/timeout.html"
        f" (no goroutines: {why}*",
        f"*sideeye_snapshot: {why}*"])
    snap = report_json(project, "test_np.py::test_fails", "call")
    assert snap.processes[0].error.startswith(why)
    assert "ledger listening" in snap.processes[0].logs
    assert_clean_output(result)
    no_containers_left(project)


SUITE = """
import subprocess
import pytest
from helpers import deadlock, hang

# Tests that are not about the timeout get room for slow container starts.
relaxed = pytest.mark.sideeye(timeout=60)

def test_ini(ledger):
    hang(ledger)

@pytest.mark.sideeye(timeout=4)
def test_marker(ledger):
    hang(ledger)

@relaxed
def test_fails(ledger):
    deadlock(ledger)
    assert 1 == 2, "the ledger is stuck"

@relaxed
def test_fixture_captures(ledger, sideeye_snapshot):
    deadlock(ledger)
    snap = sideeye_snapshot(capture={"main.(*ledger).move": ["from.id", "to.id"],
                                     "main.nosuch": ["x"]})
    frames = [f for _, f in snap.frames("main.(*ledger).move")]
    assert len(frames) == 2
    pairs = sorted(tuple(v.value for v in f.variables) for f in frames)
    assert pairs == [("alice", "bob"), ("bob", "alice")], [f.variables for f in frames]
    assert snap.processes[0].notes == [
        "capture: no function main.nosuch in any target"]

@relaxed
def test_two_services(ledger, replica):
    deadlock(ledger)
    assert False, "both services in the report"

@relaxed
def test_never_ready(sleepy):
    pass

@relaxed
def test_gone(ledger):
    subprocess.run(["docker", "rm", "-f", ledger.container.id], check=True,
                   capture_output=True)
    assert False, "the container went away"

@relaxed
@pytest.mark.sideeye(capture={"main.(*ledger).move": ["t..Amount"]})
def test_refused(ledger):
    assert False, "snapshot refused"
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, ledger_image: str):
    """One inner run of SUITE, without pytest-timeout: ini timeout, marker timeout,
    failures, the fixture, several services, a service never ready, a container gone, a
    snapshot the engine refuses; junit XML and pytest-html on."""
    p = Project(tmp_path_factory.mktemp("suite"))
    p.write("pytest.ini", "[pytest]\nsideeye_timeout = 5\nsideeye_on_timeout = true\n"
                          "junit_logging = system-out\n")
    p.write("test_s.py", SUITE)
    result = p.run("-p", "no:timeout", "--sideeye-on-failure", "--junitxml=junit.xml",
                 "--html=html/r.html")
    no_containers_left(p)
    return p, result


def test_suite_outcomes_and_clean_output(suite):
    _, result = suite
    result.assert_outcomes(failed=6, passed=1, errors=1)
    assert_clean_output(result)


def test_ini_and_marker_timeouts(suite):
    p, result = suite
    result.stdout.fnmatch_lines_random([
        "*Failed: Timeout (>5 s) — sideeye snapshot: reports/test_s.py__test_ini/timeout.html",
        "*Failed: Timeout (>4 s) — sideeye snapshot: reports/test_s.py__test_marker/timeout.html"])
    for name in ("test_ini", "test_marker"):
        snap = report_json(p, f"test_s.py::{name}", "timeout")
        assert snap.test["outcome"] == "timeout"
        assert_deadlock_seen(snap)


def test_failure_snapshot_with_logs(suite):
    p, result = suite
    snap = report_json(p, "test_s.py::test_fails", "call")
    assert snap.test["outcome"] == "failed" and "the ledger is stuck" in snap.test["message"]
    assert_deadlock_seen(snap)
    result.stdout.fnmatch_lines(["*- sideeye -*",
                                 "report: reports/test_s.py__test_fails/call.html",
                                 "*- sideeye: ledger logs -*",
                                 "*ledger listening on*"])


def test_fixture_snapshot_with_captured_variables(suite):
    p, result = suite
    snap = report_json(p, "test_s.py::test_fixture_captures", "snapshot-1")
    assert snap.test["outcome"] == "snapshot"
    # The variable assertions run inside the inner test: it must have passed.
    case = next(c for c in ET.parse(p.path / "junit.xml").iter("testcase")
                if c.get("name") == "test_fixture_captures")
    assert case.find("failure") is None and case.find("error") is None, ET.tostring(case)
    frames = [f for _, f in snap.frames("main.(*ledger).move")]
    assert sorted(v.value for f in frames for v in f.variables if v.name == "from.id") == \
        ["alice", "bob"]
    assert not (p.path / "reports" / "test_s.py__test_fixture_captures" / "call.json").exists()
    result.stdout.fnmatch_lines(["reports/test_s.py__test_fixture_captures/snapshot-1.html*"])


def test_several_services_in_one_snapshot(suite):
    p, _ = suite
    snap = report_json(p, "test_s.py::test_two_services", "call")
    assert {q.service for q in snap.processes} == {"ledger", "replica"}
    assert all(q.goroutines and q.error is None for q in snap.processes)
    assert_deadlock_seen(snap)


def test_service_never_ready(suite):
    p, result = suite
    snap = report_json(p, "test_s.py::test_never_ready", "setup")
    assert snap.test["phase"] == "setup" and "not ready" in snap.test["message"]
    assert [q.service for q in snap.processes] == ["sleepy"]
    assert any(g.blocked_in("net/http.(*Server).Serve") for g in snap.goroutines())
    result.stdout.fnmatch_lines(["*ERROR at setup of test_never_ready*",
                                 "*service 'sleepy' not ready after 1.5s*"])


def test_gone_container_and_refused_snapshot_are_one_line(suite):
    """A container removed under the test, and a snapshot the engine refuses as a whole
    (a capture expression it rejects: no root or no BPF take the same path): the tests
    fail as they would, the report says why."""
    p, result = suite
    gone = report_json(p, "test_s.py::test_gone", "call")
    assert [q.service for q in gone.processes] == ["ledger"]
    assert gone.processes[0].error.startswith("service ledger: ")
    refused = report_json(p, "test_s.py::test_refused", "call")
    assert "bad capture expression 't..Amount'" in refused.processes[0].error
    assert "ledger listening" in refused.processes[0].logs
    result.stdout.fnmatch_lines(["report: reports/test_s.py__test_refused/call.html",
                                 "no snapshot: bad capture expression 't..Amount'*"])


def test_junit_properties_and_attachment_lines(suite):
    p, _ = suite
    cases = {c.get("name"): c for c in ET.parse(p.path / "junit.xml").iter("testcase")}
    expected = {"test_ini": "timeout", "test_marker": "timeout", "test_fails": "call",
                "test_fixture_captures": "snapshot-1", "test_never_ready": "setup"}
    for name, stem in expected.items():
        path = f"reports/test_s.py__{name}/{stem}.html"
        props = [(q.get("name"), q.get("value")) for q in cases[name].iter("property")]
        assert ("sideeye.report", path) in props, (name, props)
        out = "".join(e.text or "" for e in cases[name].iter("system-out"))
        assert f"[[ATTACHMENT|{path}]]" in out, (name, out)


def test_pytest_html_links_the_reports(suite):
    p, _ = suite
    html = (p.path / "html" / "r.html").read_text()
    for rel in ("../reports/test_s.py__test_marker/timeout.html",
                "../reports/test_s.py__test_fails/call.html"):
        assert rel in html
        assert (p.path / "html" / rel).is_file()


def test_pytest_html_link_opens_the_report_in_chromium(suite):
    """pytest-html builds its rows with JavaScript: follow the link as a reader would."""
    p, _ = suite
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("python playwright is not installed")
    if not Path(CHROMIUM).exists():
        missing(f"Chromium is not installed at {CHROMIUM}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto((p.path / "html" / "r.html").as_uri(), wait_until="load")
            row = page.locator("tbody.results-table-row", has_text="test_s.py::test_marker")
            link = row.locator("a", has_text="sideeye timeout")
            href = link.evaluate("a => a.href")
            page.goto(href, wait_until="load")
            assert page.url.endswith("/reports/test_s.py__test_marker/timeout.html")
            assert "test_s.py::test_marker" in page.content()
        finally:
            browser.close()


def test_ctrl_c_mid_test_leaves_no_container(project):
    marker = project.path / "started"
    project.write("test_c.py", f"""
import time
def test_waits(ledger):
    open({str(marker)!r}, "w").write(ledger.container.id)
    time.sleep(60)
""")
    proc = subprocess.Popen(project.command("--sideeye-on-failure", "--sideeye-on-timeout",
                                            "--sideeye-timeout=30", "-p", "no:timeout"),
                            cwd=project.path, env=project.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
        container = marker.read_text()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in out
    assert "Traceback (most recent call last)" not in out
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"id={container}"],
                          capture_output=True, text=True, check=True).stdout
    assert left.strip() == "", out


def test_xdist_two_workers_and_the_timeout_option(project):
    """--sideeye-timeout on the command line, under pytest-xdist: the controller's summary
    lists what the workers wrote."""
    project.write("test_x.py", """
from helpers import deadlock, hang

def test_hang(ledger):
    hang(ledger)

def test_fail(ledger):
    deadlock(ledger)
    assert 0
""")
    result = project.run("-n", "2", "-p", "no:timeout", "--sideeye-timeout=4",
                 "--sideeye-on-timeout", "--sideeye-on-failure")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random([
        "*Failed: Timeout (>4 s) — sideeye snapshot: reports/test_x.py__test_hang/timeout.html",
        "reports/test_x.py__test_hang/timeout.html  (test_x.py::test_hang, call)",
        "reports/test_x.py__test_fail/call.html  (test_x.py::test_fail, call)"])
    assert_deadlock_seen(report_json(project, "test_x.py::test_hang", "timeout"))
    assert_deadlock_seen(report_json(project, "test_x.py::test_fail", "call"))
    assert_clean_output(result)
    no_containers_left(project)
