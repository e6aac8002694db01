"""The fixture `typerules` says READY only once every goroutine it started has reached
its park: a snapshot taken at READY sees each of the -n goroutines in main.many, its
*main.Order in the frame. It printed READY right after the `go` statements: on one CPU
(GOMAXPROCS=1) none of them had run yet (their only frame main.main.gowrap1), which is
what a loaded machine did to benchmarks/capture_rules_bench.py (508 of 1,000 values)."""
from __future__ import annotations

import pytest
from oracle import start_app

from pytest_sideeye import engine

pytestmark = pytest.mark.usefixtures("needs_root")


def test_every_goroutine_is_parked_in_main_many_at_ready(go_build):
    exe = go_build("typerules")
    seen = []
    for _ in range(20):   # before the fix: about one start in five was short
        with start_app(exe, "-n", "300", env={"GOMAXPROCS": "1"}) as app:
            p = engine.take_snapshot([app.pid], capture=["main.many: o.ID"]).processes[0]
        seen.append(sum(1 for g in p.goroutines for f in g.frames
                        if f.function == "main.many"
                        and any(v.name == "o.ID" and v.available for v in f.variables)))
    assert seen == [300] * 20
