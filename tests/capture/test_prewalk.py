"""The context pre-walk (capture/prewalk.py): the chains of the goroutines the pause does
not walk again are read before it, and a goroutine that ran since its pre-read never gets
that data.

The ABA case: ctxflip's flipper parks again and again at the same pc and sp in main.park,
each time with a new context holding tag 1 or 2 (context.WithValue), beside 1,000
goroutines parked for good with a context each. Only g.trackingSeq tells one of its parks
from the next. main.hold's `tag` is read in the pause (as every captured variable), and
names the value the context main.park holds at that instant. With the header check whole,
the flipper is walked again whenever it ran and every snapshot's ctx[main.tagKey] equals
`tag`; with trackingSeq left out (preread_check "no-seq", a setting only the tests use) its
chain read before the pause is taken for one it left, and some snapshot must disagree,
which shows the test can fail (chains read in the pause would agree either way).

What does change in a goroutine that does not run: a cancelCtx's err, set by whoever
cancels it. ctxflip -cancels cancels waiting goroutines' contexts one by one while they
stay parked; its canceller, resting in main.rest(i), has cancelled exactly those with
index k < i: every snapshot's ctx.Err() must say so (fails with the err of the chains read
before the pause kept). So do values' pointees: every context also holds a pointer to a
struct whose N the canceller sets to i before resting.
"""
from __future__ import annotations

import os
import signal

import pytest
from oracle import start_app

from pytest_sideeye import settings
from pytest_sideeye.engine import take as engine

pytestmark = pytest.mark.usefixtures("needs_root")

CAPTURE = ["context:main.tagKey", "main.hold: tag"]
SNAPSHOTS = 30
IDLE = 1000


@pytest.fixture(scope="module")
def ctxflip(go_build):
    # A flip every 2 ms: several between a chain's pre-walk and the pause (which decodes
    # the idle contexts' values first: tens of ms), mostly too few for trackingSeq to wrap.
    with start_app(go_build("ctxflip"), "-n", str(IDLE), "-every", "2ms") as app:
        yield app


def _flipper(proc):
    """(main.hold's tag, main.park's ctx[main.tagKey]) of the flipper parked in main.park,
    or None (running or runnable at that instant: nothing captured)."""
    for g in proc.goroutines:
        names = [f.function for f in g.frames]
        if "main.park" in names and "main.hold" in names and g.status == "waiting":
            park, hold = g.frames[names.index("main.park")], g.frames[names.index("main.hold")]
            tag = {v.name: v for v in hold.variables}["tag"]
            ctx = {v.name: v for v in park.variables}["ctx[main.tagKey]"]
            assert tag.error is None and ctx.error is None, (tag, ctx)
            return tag.value, ctx.value
    return None


def _snapshots(app, check: str) -> tuple[int, list, int]:
    """(snapshots with the flipper parked, the disagreeing ones, idle contexts captured in
    the last)."""
    cfg = settings.current()._replace(preread=True, preread_check=check)
    seen, disagree, idle = 0, [], 0
    for _ in range(SNAPSHOTS):
        proc = engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg).processes[0]
        if proc.error and "did not stop within" in proc.error:
            continue   # a loaded machine: the stop itself timed out (it was resumed)
        assert proc.error is None, proc.error
        if proc.walk != "pre-read":
            # Too many runs since the pre-read on a loaded machine: all read in the pause.
            assert "tracked runs" in proc.walk, proc.walk
            continue
        idle = sum(1 for g in proc.goroutines for f in g.frames if f.function == "main.idler"
                   for v in f.variables if v.name == "ctx[main.tagKey]" and not v.error)
        got = _flipper(proc)
        if got is None:
            continue
        seen += 1
        if got[0] != got[1]:
            disagree.append(got)
    return seen, disagree, idle


def test_a_goroutine_that_ran_never_gets_a_chain_read_before_the_pause(ctxflip):
    seen, disagree, idle = _snapshots(ctxflip, "header")
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert not disagree, f"stale contexts in {len(disagree)} of {seen} snapshots: {disagree[:5]}"
    assert idle == IDLE


def test_without_tracking_seq_a_chain_read_before_the_pause_gets_through(ctxflip):
    """The same snapshots with trackingSeq left out of the check: the flipper's header is
    the same whichever round it parked in, so its chain read before the pause is kept."""
    seen, disagree, _ = _snapshots(ctxflip, "no-seq")
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert disagree, f"no stale context in {seen} snapshots without trackingSeq"


CANCELS = 1000
CANCEL_EVERY = "4ms"
CANCEL_SNAPSHOTS = 12


def _cancel_state(proc):
    """(i of the canceller resting in main.rest, the waiters whose ctx.Err() disagrees)
    or None when it is not resting there."""
    i, wrong, waiters = None, [], 0
    for g in proc.goroutines:
        for f in g.frames:
            got = {v.name: v for v in f.variables}
            if f.function == "main.rest" and g.status == "waiting":
                i = got["i"].value
            elif f.function == "main.waitCancel":
                waiters += 1
                k, err = got["ctx[main.idxKey]"], got["ctx.Err()"]
                prog = got["ctx[main.progKey]"]
                assert k.error is None and err.error is None and prog.error is None, (k, err)
                wrong.append((k.value, err.value, prog.value))
    assert waiters == CANCELS, waiters
    if i is None:
        return None
    return i, [(k, e, p) for k, e, p in wrong
               if (e == "context canceled") != (k < i) or p != {"N": i}]


def test_a_cancel_after_the_pre_walk_is_seen(go_build):
    capture = ["context:main.idxKey", "context:main.progKey", "main.rest: i"]
    with start_app(go_build("ctxflip"), "-n", "0", "-cancels", str(CANCELS),
                   "-cancelevery", CANCEL_EVERY) as app:
        cfg = settings.current()._replace(preread=True)
        engine.take_snapshot([app.pid], capture=capture, cfg=cfg)   # the plan, made once
        os.kill(app.pid, signal.SIGUSR1)                          # the cancels begin
        seen, disagree, last = 0, [], 0
        for _ in range(CANCEL_SNAPSHOTS):
            proc = engine.take_snapshot([app.pid], capture=capture, cfg=cfg).processes[0]
            if proc.error and "did not stop within" in proc.error:
                continue
            assert proc.error is None, proc.error
            got = _cancel_state(proc)
            if got is None or proc.walk != "pre-read":
                continue
            i, wrong = got
            if i >= CANCELS - 1:
                break   # all but the last cancelled: nothing more to see
            seen += 1
            last = i
            if wrong:
                disagree.append((i, wrong[:3]))
    assert seen >= CANCEL_SNAPSHOTS // 3 and last > 0, (seen, last)
    assert not disagree, f"stale errors in {len(disagree)} of {seen} snapshots: {disagree[:3]}"


def test_a_failing_pre_walk_leaves_the_chains_to_the_pause(go_build, monkeypatch, tmp_path):
    """A bug in the pre-walk (here made to raise) must not lose the snapshot: a note says
    so and the pause reads every chain, as without a pre-read."""
    def broken(*_args, **_kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.capture_mod, "PreWalk", broken)
    with start_app(go_build("ctxzoo"), "-out", str(tmp_path / "seen.json")) as app:
        cfg = settings.current()._replace(preread=True)
        proc = engine.take_snapshot([app.pid], capture=["context:main.userKey"],
                                    cfg=cfg).processes[0]
    assert proc.error is None and proc.walk == "pre-read", (proc.error, proc.walk)
    assert "capture: the context pre-walk failed (RuntimeError: boom): every chain was " \
        "read in the pause" in proc.notes, proc.notes
    layered = [v.value for g in proc.goroutines for f in g.frames
               if f.function == "main.waitLayered" for v in f.variables
               if v.name == "ctx[main.userKey]"]
    assert layered == ["bob"]
