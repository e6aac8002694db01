"""A goroutine whose thread is caught inside the Go signal handler (SIGPROF here, SIGURG
from the scheduler's preemption likewise) shows its own frames, unwound from the
registers the kernel saved in the signal frame, and they match the runtime's own SIGQUIT
dump (GOTRACEBACK=all) of the same goroutine.

fixtures/goapps/profspin profiles its spinners at the highest rate the runtime takes, so
their threads often have a signal pending when the snapshot stops the process: the kernel
sets up the handler's frame for a thread's own pending signal (SIGPROF from its per-thread
timer, SIGURG sent to it) before it takes the process-wide SIGSTOP, and the thread stops at
the handler's first instruction. Which threads are in the handler is told from their own
registers (their frames hold runtime.sigtramp), whatever the snapshot makes of it."""
from __future__ import annotations

import time

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine import Target
from pytest_sideeye.engine.bpf import source_constants
from pytest_sideeye.engine.decode import RecordDecoder
from pytest_sideeye.engine.process import load_bias
from pytest_sideeye.engine.take import snapshot_process
from pytest_sideeye.snapshot import parse_dump

pytestmark = pytest.mark.usefixtures("needs_root")
HANDLER = {"runtime.sigtramp", "runtime.sigreturn__sigaction"}
# The frames SIGQUIT adds by preempting a running goroutine, and where stacks end.
ADDED_BY_SIGQUIT = ("runtime.asyncPreempt", "runtime.asyncPreempt2", "runtime.goexit")
SPINNERS = (["main.spinLeaf", "main.spinA"],
            ["main.spinLeaf"] + ["main.down"] * 21 + ["main.spinB"])
OUTERMOST = tuple(stack[-1] for stack in SPINNERS)
WANTED = 4              # goroutines caught in the handler, over the snapshots of one run
MAX_SNAPSHOTS = 300     # about one snapshot in three catches one here; 300 misses: a failure


def caught_in_handler(proc, raw, decoder: RecordDecoder) -> list:
    """The running goroutines of one snapshot whose thread ran the Go signal handler."""
    threads = decoder.threads(raw)
    out = []
    for g in proc.goroutines:
        th = threads.get(g.thread) if g.status == "running" else None
        if th is None:
            continue
        frames, _cut = decoder.symbolize(th[3], first_is_call_site=False)
        if HANDLER & {f.function for f in frames}:
            out.append(g)
    return out


def spinner_stacks(dump_text: str) -> dict[str, list[tuple[str, str, int]]]:
    """The spinners' stacks in a SIGQUIT dump, by their outermost function. A spinner the
    dump could not stop in time is printed without frames ("stack unavailable")."""
    out = {}
    for g in parse_dump(dump_text):
        frames = own_frames(g.frames)
        if frames and frames[-1][0] in OUTERMOST:
            out[frames[-1][0]] = frames
    return out


def sigquit_oracle(binary, first_dump: str) -> dict[str, list[tuple[str, str, int]]]:
    """Both spinners' stacks: from the snapshotted run's own dump, or else from fresh runs
    of the same binary (the stacks are the same in every run: only call sites and the
    leaf's function are compared)."""
    stacks = spinner_stacks(first_dump)
    for _ in range(5):
        if len(stacks) == len(OUTERMOST):
            break
        with start_app(binary, env={"GOMAXPROCS": "4"}) as app:
            time.sleep(0.2)
            stacks = {**spinner_stacks(app.dump_sigquit()), **stacks}
    return stacks


def own_frames(frames) -> list[tuple[str, str, int]]:
    """(function, file, line) without the frames SIGQUIT adds; the leaf's line is left out
    (a spinning leaf is at another line of its loop at each look)."""
    kept = [(f.function, f.file, f.line) for f in frames if f.function not in ADDED_BY_SIGQUIT]
    return [(kept[0][0], kept[0][1], 0)] + kept[1:] if kept else []


@pytest.mark.parametrize("ldflags", ["", "-s -w"], ids=["dwarf", "stripped"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_goroutine_in_signal_handler_shows_its_own_frames(go_build, monkeypatch, version,
                                                          ldflags):
    monkeypatch.setenv("SIDEEYE_LINKS", "0")   # stacks only: no link probes to plan
    binary = go_build("profspin", version, ldflags=ldflags)
    info = analyze(binary)
    with start_app(binary, env={"GOMAXPROCS": "4"}) as app:
        time.sleep(0.2)
        decoder = RecordDecoder(info, load_bias(app.pid, info), source_constants())
        caught, snapshots = [], 0
        while len(caught) < WANTED and snapshots < MAX_SNAPSHOTS:
            snapshots += 1
            records: list = []
            proc = snapshot_process(Target(app.pid), records_out=records)
            assert proc.error is None, proc.error
            caught += caught_in_handler(proc, records[0], decoder)
        first_dump = app.dump_sigquit()
    assert caught, f"no snapshot of {snapshots} caught a thread in the signal handler"
    oracle = sigquit_oracle(binary, first_dump)
    assert sorted(oracle) == sorted(OUTERMOST), oracle
    for g in caught:
        functions = [f.function for f in g.frames if f.function not in ADDED_BY_SIGQUIT]
        assert g.truncated is None, (g.id, g.truncated, functions)
        assert functions in SPINNERS, (g.id, functions)
        assert own_frames(g.frames) == oracle[functions[-1]], g.id
