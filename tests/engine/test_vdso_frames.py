"""A goroutine caught in a vDSO call (time.Now's clock_gettime): Go runs it on the g0
stack without saving g.sched, so its frames are found only by following the thread's
frame-pointer chain from the g0 stack back into the goroutine's own (walk_thread in
bpf/snapshot.bpf.c, RecordDecoder._into_stack). Fixture clockspin reads the clock in a
loop: most snapshots catch it there. Before, those came out as one frame and "frame
pointer chain broken", or none and "running in a signal handler"; once in 25,000 churn
snapshots, goroutine 1 (in main.spawnFor's time.Now) did."""
from __future__ import annotations

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import Target, take_snapshot

TRIES = 40


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_a_goroutine_in_the_vdso_shows_its_own_frames(go_build, needs_root, version):
    in_vdso = 0
    with start_app(go_build("clockspin", version)) as app:
        for _ in range(TRIES):
            (proc,) = take_snapshot([Target(app.pid)]).processes
            # The one goroutine `go clockSpin()` in main.main started.
            (g,) = [g for g in proc.goroutines
                    if g.created_by and g.created_by.function == "main.main"]
            names = [f.function for f in g.frames]
            assert g.truncated is None and names[-1] == "main.clockSpin", (g.status, g.truncated,
                                                                            names)
            in_vdso += names[0] == "time.now" and g.status == "running"
            if in_vdso >= 3:
                break
    assert in_vdso >= 3, f"caught in time.now {in_vdso} times in {TRIES} snapshots"
