"""Together mode with the pre-read, in this process (SIDEEYE_AGENT=0's route): processes
of one program pre-read into slots of their own (tests/preread_together.py says how the
test tells). The agent's route: tests/agent/test_preread_together_agent.py."""
from __future__ import annotations

import pytest
from preread_together import (
                              CAPTURE,
                              check_preread,
                              four_of_one_binary,
                              snapshot_checked,
)

from pytest_sideeye import settings
from pytest_sideeye.engine import take as engine

pytestmark = pytest.mark.usefixtures("needs_root")

SNAPSHOTS = 2


@pytest.fixture(scope="module")
def apps(go_build):
    with four_of_one_binary(go_build("manyparked")) as apps:
        yield apps


def _take(apps):
    cfg = settings.current()._replace(together=True, preread=True)
    return lambda: engine.take_snapshot([a.pid for a in apps], capture=CAPTURE, cfg=cfg)


def test_processes_of_one_program_are_pre_read_into_their_own_slots(apps):
    for _ in range(SNAPSHOTS):
        procs = snapshot_checked(apps, _take(apps))
        check_preread(procs)
        # One stop for all: every process stopped before the first was collected.
        starts = [p.monotonic_ns + p.pause_parts_ns["waited"] for p in procs]
        assert max(p.monotonic_ns for p in procs) <= min(starts)


def test_goroutines_past_the_slots_left_are_walked_in_the_pause(apps, monkeypatch):
    """With 1,000 slots for the program, the first two processes (~300 and ~600
    goroutines) take ~910 of them; the other two do not fit in what is left: they are
    walked in the pause, say so, and are still right."""
    monkeypatch.setattr(engine, "PRE_MAX", 1000)
    procs = snapshot_checked(apps, _take(apps))
    walks = [p.walk for p in procs]
    assert walks[:2] == ["pre-read", "pre-read"], walks
    for walk in walks[2:]:
        assert walk.startswith("in the pause (") and "pre-read slots" in walk \
            and "together mode" in walk, walks
