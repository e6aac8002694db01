"""Plugin pieces that need neither Docker nor BPF: capture specs, file names, bounded
runs, report files from a recorded snapshot, and the timers on tests without services."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pytest_sideeye import capture
from pytest_sideeye.errors import CaptureSpecError, InternalError, SideeyeError
from pytest_sideeye.plugin import attach, on_timeout, specs, taking
from pytest_sideeye.snapshot.model import Snapshot

pytest_plugins = ["pytester"]

DATA = Path(__file__).parents[1] / "data" / "snapshots"


def test_capture_lines_parse_and_merge():
    spec = specs.parse_capture_lines([
        "main.(*ledger).move: t.Amount, t.From",
        "  # a comment",
        "",
        "main.(*ledger).move: t.From, to.balance",
        "main.main: addr",
    ])
    assert spec == {"main.(*ledger).move": ["t.Amount", "t.From", "to.balance"],
                    "main.main": ["addr"]}


@pytest.mark.parametrize("line", ["main.move", "main.move:", ": a, b", "main.move: ,"])
def test_capture_line_without_variables_is_a_usage_error(line):
    with pytest.raises(pytest.UsageError, match="want 'pkg.Func: var, var'"):
        specs.parse_capture_lines([line])


def test_capture_lines_take_context_rules():
    """README: `context:main.userKey` is a capture spec in every form, the ini option's
    lines included (they were refused: "want 'pkg.Func: var, var'")."""
    spec = specs.parse_capture_lines(["context:main.userKey", "main.f: x",
                                      "context: main.userKey", "context:pkg/x.traceKey"])
    assert spec == {"context:main.userKey": [], "main.f": ["x"], "context:pkg/x.traceKey": []}
    assert capture.parse_specs(spec).contexts == ("main.userKey", "pkg/x.traceKey")


@pytest.mark.parametrize("line", ["context:", "context:main.a, main.b"])
def test_bad_context_line_is_a_usage_error(line):
    with pytest.raises(pytest.UsageError, match="expected context:KEYTYPE"):
        specs.parse_capture_lines([line])


def test_capture_lines_are_checked_as_the_engine_parses_them():
    """An ini line the engine would refuse (a bad expression) is a usage error before any
    test runs, not a failed snapshot later (or never, in a run without one)."""
    with pytest.raises(pytest.UsageError, match="sideeye_capture line 'main.f: o\\[': "
                                                "bad capture expression"):
        specs.parse_capture_lines(["main.f: o["])


def test_marker_capture_may_be_written_specs_as_the_cli_takes_them():
    """@pytest.mark.sideeye(capture=[...]) as the engine and CLI take them (a list failed
    the test's snapshot: "'list' object has no attribute 'items'")."""
    spec = specs.merge_capture({"main.f": ["a"]}, ["main.f: b, a", "type:main.T: ID",
                                                  "context:main.k"])
    assert spec == {"main.f": ["a", "b"], "type:main.T": ["ID"], "context:main.k": []}
    assert specs.merge_capture({}, "main.g: x") == {"main.g": ["x"]}
    with pytest.raises(CaptureSpecError, match="capture spec 'main.f: o\\[': bad capture"):
        specs.merge_capture({}, ["main.f: o["])
    with pytest.raises(CaptureSpecError, match="capture spec 3: want text"):
        specs.merge_capture({}, [3])


def test_split_exprs_keeps_commas_inside_brackets_and_quotes():
    assert capture.split_exprs(' a, m["x,y"], s[1:2], f.g ,') == \
        ["a", 'm["x,y"]', "s[1:2]", "f.g"]
    assert capture.split_exprs("m['a,b'].c, d") == ["m['a,b'].c", "d"]


def test_merge_capture_takes_text_or_lists_and_keeps_first_order():
    spec = specs.merge_capture({"f": ["a"]}, {"f": "b, a", "g": ["x"]})
    assert spec == {"f": ["a", "b"], "g": ["x"]}
    with pytest.raises(CaptureSpecError):
        specs.merge_capture({}, {"f": [1, 2]})


def test_sanitise_is_safe_unique_and_bounded():
    plain = attach.sanitise("tests/test_a.py::test_x")
    assert plain == "tests_test_a.py__test_x"
    odd_a = attach.sanitise("t.py::test[a/b c]")
    odd_b = attach.sanitise("t.py::test[a b/c]")
    assert odd_a != odd_b
    assert all(ch.isalnum() or ch in "._-" for ch in odd_a)
    long = attach.sanitise("t.py::test[" + "x" * 500 + "]")
    assert len(long) <= 130


def test_timeout_message_names_the_report(tmp_path):
    written = attach.Written("t.py::test", "call", tmp_path / "r" / "timeout.html",
                             tmp_path / "r" / "timeout.json", None, [])
    msg = on_timeout.timeout_message(3.0, written, tmp_path)
    assert msg == "Timeout (>3 s) — sideeye snapshot: r/timeout.html"
    assert on_timeout.timeout_message(2.5, None, tmp_path) == "Timeout (>2.5 s)"


def test_run_bounded_returns_raises_and_gives_up():
    assert taking.run_bounded(lambda: 42, 5, "x") == 42
    with pytest.raises(ZeroDivisionError):
        taking.run_bounded(lambda: 1 / 0, 5, "x")
    stop = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(SideeyeError, match="snapshot did not finish within 0.2 s"):
        taking.run_bounded(lambda: stop.wait(10), 0.2, "snapshot")
    assert time.monotonic() - t0 < 5
    stop.set()


def test_an_engine_bug_in_a_plugin_snapshot_is_the_agents_line(tmp_path, monkeypatch):
    """The plugin's own route says what the agent answers for its bug (bugs.py): one line,
    the traceback in a file; it said `snapshot failed: ...` with no traceback kept."""
    monkeypatch.setenv("SIDEEYE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("pytest_sideeye.agent.missing_privileges", lambda: [])
    monkeypatch.setattr(taking, "build_targets", lambda services: (["a target"], []))

    def bug(*args, **kwargs):
        raise KeyError("an engine bug")
    monkeypatch.setattr(taking, "_take_one_at_a_time", bug)
    monkeypatch.setattr(taking, "_add_logs", lambda snap, services, budget_s: None)
    snap, problem = taking.take([], {}, 5)
    assert problem.startswith("internal error: KeyError: 'an engine bug' (a bug: the "
                              "traceback is in "), problem
    [written] = (tmp_path / "cache" / "bugs").iterdir()
    assert problem.endswith(f"{written})") and "in bug" in written.read_text()
    with pytest.raises(InternalError, match="^internal error: KeyError"):
        taking.take([], {}, 5, raise_errors=True)


def test_write_files_from_a_recorded_snapshot(tmp_path):
    snap = Snapshot.load(DATA / "go1.24-worker-hang.json")
    snap.test = {"nodeid": "t.py::test_hang[x]", "phase": "call", "outcome": "timeout",
                 "message": "Timeout (>3 s)"}
    written = attach.write_files(snap, tmp_path, "t.py::test_hang[x]", "timeout")
    assert written.problems == []
    assert written.main == written.html and written.html.parent.parent == tmp_path
    assert Snapshot.load(written.json).test["nodeid"] == "t.py::test_hang[x]"
    text = written.txt.read_text()
    assert text.startswith("# test t.py::test_hang[x] (call, timeout): Timeout (>3 s)\n")
    assert "goroutine " in text
    assert "t.py::test_hang[x]" in written.html.read_text()
    assert written.to_data()["path"] == str(written.html)


# --- timers on tests that use no service: fast, and no Docker needed ---

# Short sleeps in a loop: the thread method raises at the next Python instruction, so it
# cannot cut one long C call short (the signal method can).
HANGS = """
import time, pytest

def test_hangs():
    for _ in range(300):
        time.sleep(0.1)

@pytest.mark.sideeye(timeout=0.5)
def test_marker_hangs():
    for _ in range(300):
        time.sleep(0.1)

def test_quick():
    pass

@pytest.mark.sideeye(timeout=0)
def test_marker_disables():
    time.sleep(1.5)
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_own_timeout_fails_hanging_tests_without_services(pytester, method):
    pytester.makepyfile(test_h=HANGS)
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:timeout", "--sideeye-timeout=1",
                                           f"--sideeye-timeout-method={method}",
                                           "--sideeye-on-timeout")
    assert time.monotonic() - t0 < 20
    result.assert_outcomes(failed=2, passed=2)
    out = result.stdout.str()
    assert "Failed: Timeout (>1 s)" in out
    assert "Failed: Timeout (>0.5 s)" in out
    assert "sideeye snapshot:" not in out  # nothing to snapshot: no service
    assert "Traceback (most recent call last)" not in out + result.stderr.str()


AT_A_BREAKPOINT = """
import bdb, sys, time

def test_held_by_a_debugger():
    # What pdb does at a breakpoint, without the prompt: trace this frame with a Bdb.
    debugger = bdb.Bdb()
    debugger.reset()
    sys.settrace(debugger.trace_dispatch)
    sys._getframe().f_trace = debugger.trace_dispatch
    try:
        time.sleep(2)
    finally:
        sys.settrace(None)

def test_not_held():
    time.sleep(2)
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_own_timeout_is_not_enforced_under_a_debugger(pytester, method):
    pytester.makepyfile(test_d=AT_A_BREAKPOINT)
    result = pytester.runpytest_subprocess("-p", "no:timeout", "--sideeye-timeout=0.5",
                                           f"--sideeye-timeout-method={method}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_held_by_a_debugger: --sideeye-timeout (0.5 s) not enforced: a debugger is active*",
        "*FAILED test_d.py::test_not_held - Failed: Timeout (>0.5 s)*"])


def test_ini_timeout_and_bad_ini_value(pytester):
    pytester.makeini("[pytest]\nsideeye_timeout = 0.5\n")
    pytester.makepyfile(test_h="import time\ndef test_h():\n    time.sleep(30)\n")
    result = pytester.runpytest_subprocess("-p", "no:timeout")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Failed: Timeout (>0.5 s)*"])

    pytester.makeini("[pytest]\nsideeye_timeout = soon\n")
    result = pytester.runpytest_subprocess("-p", "no:timeout")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sideeye_timeout = 'soon': want a number of seconds*"])


def test_bad_capture_ini_is_one_line(pytester):
    pytester.makeini("[pytest]\nsideeye_capture =\n    main.move\n")
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr.str()
    result.stderr.fnmatch_lines(["*sideeye_capture line 'main.move'*"])


def test_fixture_without_services_fails_in_one_line(pytester):
    pytester.makepyfile(test_f="def test_f(sideeye_snapshot):\n    sideeye_snapshot()\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*sideeye_snapshot: this test uses no go_service*"])


def test_sigalrm_handler_and_timer_are_restored_after_each_test(pytester):
    pytester.makepyfile(test_s="""
import signal, pytest
def mine(*a): pass
signal.signal(signal.SIGALRM, mine)

def test_one():
    assert signal.getsignal(signal.SIGALRM) is not mine   # ours is armed

@pytest.mark.sideeye(timeout=0)
def test_two():
    assert signal.getsignal(signal.SIGALRM) is mine
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
""")
    result = pytester.runpytest_subprocess("-p", "no:timeout", "--sideeye-timeout=5")
    result.assert_outcomes(passed=2)


TOGETHER_SEEN = """
import os
def test_sees():
    print("SIDEEYE_TOGETHER=" + repr(os.environ.get("SIDEEYE_TOGETHER")))
"""


@pytest.mark.parametrize("how", ["option", "ini", "neither"])
def test_together_option_and_ini_set_the_setting_for_the_run(pytester, monkeypatch, how):
    """--sideeye-together and ini sideeye_together choose together mode as SIDEEYE_TOGETHER=1
    does: in the run's environment, where the engine reads it and whence it goes to the
    agent with every snapshot request (settings.requested)."""
    monkeypatch.delenv("SIDEEYE_TOGETHER", raising=False)
    if how == "ini":
        pytester.makeini("[pytest]\nsideeye_together = true\n")
    pytester.makepyfile(test_t=TOGETHER_SEEN)
    args = ["--sideeye-together"] if how == "option" else []
    result = pytester.runpytest_inprocess("-p", "no:timeout", "-s", *args)
    result.assert_outcomes(passed=1)
    want = "None" if how == "neither" else "'1'"
    result.stdout.fnmatch_lines([f"*SIDEEYE_TOGETHER={want}*"])
    assert "SIDEEYE_TOGETHER" not in os.environ   # the run's, restored after it
