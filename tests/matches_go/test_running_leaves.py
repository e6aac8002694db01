"""Goroutines on CPU, unwound from their threads' registers, against the runtime's own
SIGQUIT dump (GOTRACEBACK=all): a leaf that pushed no frame pointer (frameless) used to
lose its caller; a framed leaf, the frameless one five calls deep, and a goroutine in a
blocking read(2) are checked too, goroutine by goroutine (id, status, created-by, every
frame's function, file, line and inlined flag). The frames SIGQUIT adds by preempting a running
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


def leaf_goroutines(goroutines) -> dict[int, object]:
    """The spinners and the blocked goroutine, by id (the same in our snapshot and the
    dump), without the frames SIGQUIT added."""
    out = {}
    for g in goroutines:
        frames = [f for f in g.frames if f.function not in ADDED_BY_SIGQUIT]
        if any(f.function in LEAVES for f in frames):
            out[g.id] = (g, frames)
    return out


def differences(ours, theirs) -> list[str]:
    """Every frame's function, file, line and inlined flag, the status and creator. Two
    exceptions, both moments apart: a spinner's innermost line (it runs on between our
    snapshot and SIGQUIT), and a spinner's status in the dump, where SIGQUIT's preemption
    may have made it runnable. Ours caught every spinner running."""
    diffs = [] if ours.keys() == theirs.keys() else [f"ids {sorted(ours)}, dump {sorted(theirs)}"]
    for gid in sorted(ours.keys() & theirs.keys()):
        (g, mine), (d, dumped) = ours[gid], theirs[gid]
        spinning = d.status != "syscall"
        if spinning and (g.status, d.status in ("running", "runnable")) != ("running", True):
            diffs.append(f"goroutine {gid}: status {g.status}, dump {d.status}")
        if not spinning and g.status != d.status:
            diffs.append(f"goroutine {gid}: status {g.status}, dump {d.status}")
        if (g.created_by and (g.created_by.function, g.created_by.line)) != \
                (d.created_by and (d.created_by.function, d.created_by.line)):
            diffs.append(f"goroutine {gid}: created by {g.created_by}, dump {d.created_by}")
        if len(mine) != len(dumped):
            diffs.append(f"goroutine {gid}: {len(mine)} frames, dump {len(dumped)}")
        for i, (a, b) in enumerate(zip(mine, dumped)):
            line_moves = spinning and i == 0
            if (a.function, a.file, a.inlined) != (b.function, b.file, b.inlined) or \
                    (not line_moves and a.line != b.line):
                diffs.append(f"goroutine {gid} frame {i}: {a.function} {a.file}:{a.line}"
                             f"{' inlined' if a.inlined else ''}, dump {b.function} "
                             f"{b.file}:{b.line}{' inlined' if b.inlined else ''}")
    return diffs


def snapshot_with_spinners_running(pid: int):
    """A spinner caught between two time slices is runnable, not running (three spinners
    share two CPUs): take another then. One caught in the runtime's preemption signal
    handler is compared like the others (its frames come from the signal frame)."""
    for _ in range(10):
        [proc] = engine.take_snapshot([pid]).processes
        assert proc.error is None, proc.error
        if sum(1 for g in proc.goroutines if g.status == "running") >= 3:
            return proc
        time.sleep(0.05)
    pytest.fail("no snapshot caught the three spinners running")


def snapshot_then_whole_dump(binary, attempts: int = 5):
    """A snapshot, then SIGQUIT's dump. On a busy machine the dump may fail to stop a
    spinner on another thread ("stack unavailable": nothing to compare): start again."""
    for _ in range(attempts):
        with start_app(binary, env={"GOMAXPROCS": "4"}) as app:
            time.sleep(0.2)
            proc = snapshot_with_spinners_running(app.pid)
            dump = parse_dump(app.dump_sigquit())
        if not any((g.truncated or "").startswith("stack unavailable") for g in dump):
            return proc, dump
    pytest.fail(f"every one of {attempts} SIGQUIT dumps left a spinner's stack unavailable")


@pytest.mark.parametrize("ldflags", ["", "-s -w"], ids=["dwarf", "stripped"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_running_leaves_match_sigquit(go_build, version, ldflags):
    """Also stripped (-s -w): the unwinding needs only the pclntab's SP deltas."""
    binary = go_build("spinners", version, ldflags=ldflags)
    proc, dump = snapshot_then_whole_dump(binary)
    ours, theirs = leaf_goroutines(proc.goroutines), leaf_goroutines(dump)
    assert len(theirs) == len(LEAVES), theirs
    assert differences(ours, theirs) == []
    functions = [[f.function for f in frames] for _g, frames in ours.values()]
    assert ["main.frameless", "main.main.func1"] in functions
    assert ["main.frameless", "main.deep1", "main.deep2", "main.deep3", "main.deep4",
            "main.deep5", "main.main.func3"] in functions
    running = {g.id for g in proc.goroutines if g.status == "running"}
    assert len(running) >= 3
