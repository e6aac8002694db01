"""Wait durations against the target's own clock: waittimes parks 8 goroutines after
reading CLOCK_MONOTONIC, forces a GC (which records their waitsince) and reads the clock
again. Each parked goroutine's wait_since_ns must lie between the two readings, the
snapshot's clock reference after both, and the report must show the duration they give."""
from __future__ import annotations

import subprocess

import pytest
from support import GO_VERSIONS

from pytest_sideeye import engine
from pytest_sideeye.report import view
from pytest_sideeye.snapshot import buckets

pytestmark = pytest.mark.usefixtures("needs_root")


@pytest.fixture(params=[(v, f) for v in GO_VERSIONS for f in ("", "-s -w")],
                ids=lambda p: f"{p[0]}-{'stripped' if p[1] else 'dwarf'}")
def waittimes(request, go_build):
    """Also stripped (-s -w): g.waitsince's offset then comes from the layout table."""
    version, ldflags = request.param
    p = subprocess.Popen([str(go_build("waittimes", version, ldflags=ldflags))],
                         stdout=subprocess.PIPE, text=True)
    try:
        lines = [p.stdout.readline().split() for _ in range(3)]
        assert [w[0] for w in lines] == ["PARKED", "GCDONE", "READY"], lines
        yield p.pid, int(lines[0][1]), int(lines[1][1])
    finally:
        p.kill()
        p.wait()


def test_wait_since_lies_between_the_targets_own_clock_readings(waittimes):
    pid, parked_after, gc_done = waittimes
    [proc] = engine.take_snapshot([pid]).processes
    assert proc.error is None, proc.error
    waiting = [g for g in proc.goroutines
               if any(f.function == "main.waitForever" for f in g.frames)]
    assert len(waiting) == 8
    for g in waiting:
        assert g.wait_reason == "chan receive"
        assert parked_after <= g.wait_since_ns <= gc_done, (parked_after, g.wait_since_ns, gc_done)
    assert proc.monotonic_ns > gc_done
    # The report's "blocked >= ..." for their bucket is the pause's clock minus waitsince.
    [bucket] = [b for b in buckets.bucketize(proc.goroutines)
                if any(f.function == "main.waitForever" for f in b.frames)]
    longest = proc.monotonic_ns - min(g.wait_since_ns for g in waiting)
    shortest = proc.monotonic_ns - max(g.wait_since_ns for g in waiting)
    text = view.wait_view(bucket, proc.monotonic_ns)
    assert view.fmt_duration(longest) in text and view.fmt_duration(shortest) in text
    assert longest >= proc.monotonic_ns - gc_done
