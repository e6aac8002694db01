"""Together mode with the pre-read (issue 28 item 5), as both routes check it (the engine
in this process, tests/engine/test_preread_together.py; the agent,
tests/agent/test_preread_together_agent.py): four manyparked processes of ONE binary, so
of one BPF program and its maps, each with goroutines of its own shapes (how many, and
with -mixed goroutine i parks i % 9 descend frames deep instead of 8). All are pre-read
while they run, then stopped together and each only checked in the pause.

The processes share the program's `pre` map (the kept headers) and capq (the captured
frames the pre-read queued). Were two processes' kept headers in the same slots, the
one pre-read first would be checked against the other's: its goroutines would differ
(other shapes) and its pause would walk them all again (its `walk` says so); were its
queued frames not put back, its parked frames' `i` would not be read. Each process's
stacks are checked against its own goroutine dump, and each captured `i` against the
stack it sits in (the number of descend frames it parked under)."""
from __future__ import annotations

import contextlib

from oracle import compare, stable_goroutines, start_app

from pytest_sideeye.snapshot.godump import parse_dump

SHAPES = (("-n", "300"), ("-n", "600", "-mixed"), ("-n", "900"), ("-n", "500", "-mixed"))
CAPTURE = {"main.parkedLeaf": ["i"]}
DEPTH = 8   # manyparked's ChainDepth
# Goroutines the pause may walk again in a quiet process: the pprof server's, the runtime's.
FEW = 50


@contextlib.contextmanager
def four_of_one_binary(exe):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_app(exe, *shape)) for shape in SHAPES]


def snapshot_checked(apps, take) -> list:
    """take() between two goroutine dumps of every app; each process's stacks must match
    its own dumps' stable goroutines, and its captured values its stacks. Returns the
    snapshot's processes (in the apps' order)."""
    before = [parse_dump(app.dump_debug2()) for app in apps]
    snap = take()
    after = [parse_dump(app.dump_debug2()) for app in apps]
    assert snap.together is True
    procs = {p.pid: p for p in snap.processes}
    out = []
    for app, shape, b, a in zip(apps, SHAPES, before, after):
        proc = procs[app.pid]
        assert proc.error is None, proc.error
        stable = stable_goroutines(b, a)
        assert len(stable) >= int(shape[1]), (proc.pid, len(stable))
        diffs = compare(proc, stable)
        assert not diffs, f"pid {proc.pid} ({' '.join(shape)}):\n" + "\n".join(diffs[:20])
        check_captured(proc, int(shape[1]), "-mixed" in shape)
        out.append(proc)
    return out


def check_captured(proc, n: int, mixed: bool) -> None:
    """Every parked goroutine's captured i, one per goroutine 0..n-1, under as many
    descend frames as i tells (i % 9 + 1 with -mixed, 9 without)."""
    seen = []
    for g in proc.goroutines:
        names = [f.function for f in g.frames]
        if "main.parkedLeaf" not in names:
            continue
        [i] = g.frames[names.index("main.parkedLeaf")].variables
        assert i.available and isinstance(i.value, int), (proc.pid, g.id, i, proc.notes)
        depth = i.value % (DEPTH + 1) if mixed else DEPTH
        assert names.count("main.descend") == depth + 1, (proc.pid, g.id, i.value, names)
        seen.append(i.value)
    assert sorted(seen) == list(range(n)), (proc.pid, len(seen), proc.notes)


def check_preread(procs) -> None:
    """Each process was pre-read and its pause walked only a few goroutines again."""
    assert [p.walk for p in procs] == ["pre-read"] * len(procs), [p.walk for p in procs]
    assert max(p.rewalked for p in procs) < FEW, [p.rewalked for p in procs]
    assert all(p.collector.startswith("iterator (headers checked after a pre-read")
               for p in procs), [p.collector for p in procs]
