"""The pre-read (issue 27, engine/collect.py): every goroutine is walked while the target
runs, and the pause only checks each one's header, walking again those that changed.

The ABA case: abapark's flipper parks again and again at the same pc and sp, through
main.viaA or main.viaB, beside 3,000 goroutines that never wake. Only g.trackingSeq tells
one of its parks from the next, so a check without it keeps a stack the flipper has left:
the stack then says viaA while the captured `tag` of main.park (read in the pause, always)
says viaB's 2, or the reverse. With the check whole, every snapshot agrees with itself;
with trackingSeq left out (preread_check "no-seq", a setting only this test uses) some
snapshot must disagree, which shows the test can fail.
"""
from __future__ import annotations

import pytest
from oracle import start_app

from pytest_sideeye import settings
from pytest_sideeye.engine import take as engine

pytestmark = pytest.mark.usefixtures("needs_root")

CAPTURE = {"main.park": ["tag"]}
SNAPSHOTS = 40
CALLER_TAG = {"main.viaA": 1, "main.viaB": 2}


@pytest.fixture(scope="module")
def abapark(go_build):
    with start_app(go_build("abapark"), "-n", "3000") as app:
        yield app


def _flipper_frames(proc):
    """(caller of main.park, its captured tag) of the flipper, when it is parked in it."""
    for g in proc.goroutines:
        names = [f.function for f in g.frames]
        if "main.park" in names and g.status == "waiting":   # running: nothing captured
            k = names.index("main.park")
            [tag] = g.frames[k].variables
            assert tag.available and tag.error is None, tag
            return names[k + 1], tag.value
    return None   # running or runnable at that instant: nothing to compare


def _snapshots(app, check: str) -> tuple[int, list, list]:
    """(snapshots in which the flipper was parked, the disagreeing ones, re-walk counts)."""
    cfg = settings.current()._replace(preread=True, preread_check=check)
    seen, disagree, rewalked = 0, [], []
    for _ in range(SNAPSHOTS):
        proc = engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg).processes[0]
        if proc.error and "did not stop within" in proc.error:
            continue   # a loaded machine: the stop itself timed out (it was resumed)
        assert proc.error is None, proc.error
        assert proc.walk == "pre-read", proc.walk
        assert len(proc.goroutines) > 3000
        rewalked.append(proc.rewalked)
        got = _flipper_frames(proc)
        if got is None:
            continue
        seen += 1
        caller, tag = got
        if CALLER_TAG.get(caller) != tag:
            disagree.append(got)
    return seen, disagree, rewalked


def test_stack_and_captured_values_agree_in_every_snapshot(abapark):
    seen, disagree, rewalked = _snapshots(abapark, "header")
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert not disagree, f"stale stacks in {len(disagree)} of {seen} snapshots: {disagree[:5]}"
    # The idle goroutines were left to the pre-read: only a few were walked again.
    assert min(rewalked) < 100, rewalked


def test_without_tracking_seq_the_check_misses_the_aba_case(abapark):
    """The same snapshots with trackingSeq left out of the check: the flipper's header is
    the same whichever caller it parked through, so a stale stack gets through."""
    seen, disagree, _ = _snapshots(abapark, "no-seq")
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert disagree, f"no stale stack in {seen} snapshots without trackingSeq"


def test_a_busy_scheduler_falls_back_to_the_walk_in_the_pause(go_build):
    """The flipper woken without pause parks thousands of times a second: more tracked runs
    (sched.timeToRun) than a wrap of trackingSeq needs, so the pause walks everything, says
    so, and the stack still agrees with the captured tag."""
    with start_app(go_build("abapark"), "-n", "300", "-every", "0s") as app:
        cfg = settings.current()._replace(preread=True)
        walks = []
        for _ in range(5):
            proc = engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg).processes[0]
            if proc.error and "did not stop within" in proc.error:
                continue
            assert proc.error is None, proc.error
            walks.append(proc.walk)
            got = _flipper_frames(proc)
            if got is not None:
                assert CALLER_TAG.get(got[0]) == got[1], got
    assert any(w.startswith("in the pause (") and "tracked runs" in w for w in walks), walks


def test_the_walk_in_the_pause_names_what_the_binary_lacks(go_build, tmp_path):
    """The snapshot's walk says which of the pre-read's needs is missing: a layout field
    (a Go release the table keeps without g.trackingSeq and sched.timeToRun), or the
    address of runtime.sched (a stripped binary whose code did not show it), not one
    sentence blaming the layouts for both."""
    from dataclasses import replace

    from support import patched_go_version

    from pytest_sideeye.binary import analyze
    stripped = analyze(go_build("inlines", "1.24.11", ldflags="-s -w"))
    assert engine.preread_missing(stripped) == ""
    blind = replace(stripped, symbols={k: v for k, v in stripped.symbols.items()
                                       if k != "runtime.sched"})
    assert engine.preread_missing(blind) == (
        "the address of runtime.sched is unknown: no symbol table, and the code did not "
        "show it")
    # Go 1.25's table layout lacks both (left out on purpose); the symbol table has sched.
    go125 = analyze(patched_go_version(go_build("inlines", "1.24.11", ldflags="-w"),
                                       "go1.24.11", "go1.25.10", tmp_path / "inlines"))
    assert engine.preread_missing(go125) == (
        f"this binary's layouts ({go125.layout.source}) lack g.trackingSeq and "
        "sched.timeToRun")
