"""Goroutines on CPU, unwound from their threads' registers, against the runtime's own
SIGQUIT dump (GOTRACEBACK=all): a leaf that pushed no frame pointer (frameless) used to
lose its caller; a framed leaf, the frameless one five calls deep, and a goroutine in a
blocking read(2) are checked too. The frames SIGQUIT adds by preempting a running
goroutine (runtime.asyncPreempt*) and runtime.goexit are left out of the comparison."""
from __future__ import annotations

import time

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye import engine
from pytest_sideeye.snapshot import parse_dump

pytestmark = pytest.mark.usefixtures("needs_root")
LEAVES = ("main.frameless", "main.framed", "main.deep5", "main.blocked")
ADDED_BY_SIGQUIT = ("runtime.asyncPreempt", "runtime.asyncPreempt2", "runtime.goexit")


def stacks(goroutines) -> dict[str, list[str]]:
    """The spinners' and the blocked goroutine's functions, by their outermost frame (the
    go statement's function: one per goroutine here)."""
    out = {}
    for g in goroutines:
        functions = [f.function for f in g.frames if f.function not in ADDED_BY_SIGQUIT]
        if any(leaf in functions for leaf in LEAVES):
            out[functions[-1]] = functions
    return out


def snapshot_without_signal_handlers(pid: int):
    """A spinner caught while the runtime's preemption signal is being delivered shows
    only the signal handler (documented, marked truncated), and one caught between two
    time slices is runnable, not running (three spinners share two CPUs): take another
    then."""
    for _ in range(10):
        [proc] = engine.take_snapshot([pid]).processes
        assert proc.error is None, proc.error
        running = sum(1 for g in proc.goroutines if g.status == "running")
        if running >= 3 and not any((g.truncated or "").startswith(
                "running in a signal handler") for g in proc.goroutines):
            return proc
        time.sleep(0.05)
    pytest.fail("every snapshot caught a spinner in a signal handler")


@pytest.mark.parametrize("ldflags", ["", "-s -w"], ids=["dwarf", "stripped"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_running_leaves_match_sigquit(go_build, version, ldflags):
    """Also stripped (-s -w): the unwinding needs only the pclntab's SP deltas."""
    binary = go_build("spinners", version, ldflags=ldflags)
    with start_app(binary, env={"GOMAXPROCS": "4"}) as app:
        time.sleep(0.2)
        proc = snapshot_without_signal_handlers(app.pid)
        dump = parse_dump(app.dump_sigquit())
    ours, theirs = stacks(proc.goroutines), stacks(dump)
    assert len(theirs) == len(LEAVES), theirs
    assert ours == theirs
    assert ["main.frameless", "main.main.func1"] in ours.values()
    assert ["main.frameless", "main.deep1", "main.deep2", "main.deep3", "main.deep4",
            "main.deep5", "main.main.func3"] in ours.values()
    running = {g.id for g in proc.goroutines if g.status == "running"}
    assert len(running) >= 3
