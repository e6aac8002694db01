"""The link probes' stack slots read in the pre-read (engine/links/preread_slots.py): for
the goroutines the pause does not walk again, the slots come from the pre-read; a goroutine
that ran in between must never carry them.

Fixture sockflip: the flipper reads from two connections in turn through main.readVia,
parking at the same pc and sp on either, woken every 200 us, beside idle readers that each
wait on a connection of their own for good. main.readVia's `tag` (captured by the test, so
read in the pause) says which connection a goroutine waits on; its tcp link's client
address, which the link probe's fd slot leads to, must name that same connection
(tests/preread_links.py). A slot of the flipper's read before the pause names the other
connection half the time: with the header check whole, every snapshot agrees with itself;
with trackingSeq left out of it (preread_check "no-seq", a setting only the tests use) the
flipper's stale pre-read is kept, slots and all, and some snapshot must disagree, which
shows the test can fail. The agent's route: tests/agent/test_preread_links_agent.py.
"""
from __future__ import annotations

import pytest
from oracle import start_app
from preread_links import CAPTURE, IDLE, SNAPSHOTS, check_snapshots, waits_on

from pytest_sideeye import settings
from pytest_sideeye.engine import take as engine

pytestmark = pytest.mark.usefixtures("needs_root")


@pytest.fixture(scope="module")
def sockflip(go_build):
    with start_app(go_build("sockflip"), "-n", str(IDLE)) as app:
        yield app, [int(p) for p in app.ready_line.split()[1:]]


def _engine(app, check: str):
    cfg = settings.current()._replace(preread=True, preread_check=check, links=True)
    return lambda: engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg)


def test_probe_slots_from_the_preread_only_for_goroutines_that_did_not_run(sockflip):
    app, ports = sockflip
    seen, disagree, from_preread = check_snapshots(_engine(app, "header"), app.pid, ports)
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert not disagree, f"stale probe slots in {len(disagree)} of {seen}: {disagree[:5]}"
    # The idle readers' probe frames were read before the pause.
    assert min(from_preread) >= IDLE, from_preread


def test_without_tracking_seq_a_stale_probe_slot_gets_through(sockflip):
    """The same snapshots with trackingSeq left out of the check: the flipper's header is
    the same whichever connection it waits on, so its pre-read is kept, slots and all."""
    app, ports = sockflip
    seen, disagree, _ = check_snapshots(_engine(app, "no-seq"), app.pid, ports)
    assert seen >= SNAPSHOTS // 4, f"the flipper was parked in only {seen} snapshots"
    assert disagree, f"no stale probe slot in {seen} snapshots without trackingSeq"


def test_without_a_preread_every_probe_slot_is_read_in_the_pause(sockflip):
    app, ports = sockflip
    cfg = settings.current()._replace(preread=False, links=True)
    snap = engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg)
    [proc] = snap.processes
    assert proc.error is None and proc.walk is None
    assert proc.preread_probe_frames is None
    idle, _flipper = waits_on(snap, app.pid)
    assert idle == {t: ports[t] for t in range(2, IDLE + 2)}, idle


def test_together_mode_takes_the_probe_slots_from_each_process_preread(sockflip, go_build):
    """Two processes of one program stopped together: each pre-read before the stop, the
    second's queue of captured frames overwriting the first's in the program's maps until
    its pause puts it back (Collector.requeue), the slots read already left out."""
    app, ports = sockflip
    cfg = settings.current()._replace(preread=True, together=True, links=True)
    with start_app(go_build("sockflip"), "-n", str(IDLE)) as other:
        other_ports = [int(p) for p in other.ready_line.split()[1:]]
        snaps = [engine.take_snapshot([app.pid, other.pid], capture=CAPTURE, cfg=cfg)
                 for _ in range(SNAPSHOTS // 4)]
        for pid, want in ((app.pid, ports), (other.pid, other_ports)):
            seen, disagree, from_preread = check_snapshots(iter(snaps).__next__, pid, want,
                                                           len(snaps))
            assert not disagree, f"stale probe slots in {len(disagree)} of {seen}"
            assert min(from_preread) >= IDLE, from_preread
