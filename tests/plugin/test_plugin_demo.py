"""`python -m pytest_sideeye.cli.demo`: the example shop suite in real containers, its deadlock
caught by the timeout, the report found and judged."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from pytest_sideeye.snapshot import skew_text
from pytest_sideeye.snapshot.model import Snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]


def test_demo_catches_the_deadlock_and_points_at_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.demo", "--dir", str(tmp_path),
                        "--timeout", "8"], capture_output=True, text=True, env=env,
                       timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    assert "demo: as expected, test_cancel_during_rush hung" in r.stdout
    assert "2 passed" in r.stdout and "1 failed" in r.stdout
    report = tmp_path / "test_shop.py__test_cancel_during_rush" / "timeout.html"
    assert f"Open the report:  {report}" in r.stdout
    snap = Snapshot.load(report.with_suffix(".json"))
    assert {p.service for p in snap.processes} == {"gateway", "orders", "ledger"}
    assert all(p.error is None and p.goroutines for p in snap.processes)
    place = [f for _, f in snap.frames("main.(*service).place")]
    cancel = [f for _, f in snap.frames("main.(*service).cancel")]
    assert len(place) == 1 and len(cancel) == 1
    assert {v.name: v.value for v in cancel[0].variables}["o.Customer"] == "ada"
    assert {v.name: v.value for v in place[0].variables}["o.Customer"] == "grace"
    # The gateway is stuck too, waiting for orders: the whole chain is in one report, and
    # linked: each gateway handler's request to the orders handler it waits on.
    assert any(g.blocked_in("main.(*gateway).relay") for g in snap.goroutines())
    pids = {p.service: p.pid for p in snap.processes}
    ends = {}
    for c in snap.chains():
        (gpid, ggid), (opid, ogid) = c.goroutines[0], c.goroutines[-1]
        assert (gpid, opid, len(c.goroutines)) == (pids["gateway"], pids["orders"], 2)
        assert snap.goroutine(gpid, ggid).blocked_in("main.(*gateway).relay")
        ends[c.links[0].path] = [f.function for f in snap.goroutine(opid, ogid).frames]
    assert "main.(*service).cancel" in ends["/orders/cancel/1"]
    assert "main.(*service).place" in ends["/orders"]
    assert "wait chains across the services" in r.stdout
    assert "[sync.Mutex.Lock] in main.(*service).cancel" in r.stdout
    # The test process's own requests reach the gateway from outside the snapshot.
    outside = [ln for ln in snap.links if ln.client is None]
    assert sorted(ln.path for ln in outside) == ["/api/orders", "/api/orders/cancel/1"]
    # The snapshot reports its skew (issue 28.3): how far apart the three were stopped,
    # in the JSON and in the text and HTML headers.
    stops = [p.monotonic_ns for p in snap.processes]
    assert snap.skew_ns == max(stops) - min(stops)
    header = skew_text(snap)
    assert re.fullmatch(r"3 processes within \d+(\.\d)? ms \(stopped (together|one after "
                        r"the other)\)", header or ""), header
    text = report.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
    assert f"# {header}" in text
    assert f'<td class="skew">{header}</td>' in report.read_text(encoding="utf-8")
    # The time from the timeout to the written report, for benchmarks/report_bench.py.
    [case] = [c for c in ET.parse(tmp_path / "demo-junit.xml").iter("testcase")
              if c.get("name") == "test_cancel_during_rush"]
    took = [q.get("value") for q in case.iter("property") if q.get("name") == "sideeye.report_s"]
    assert len(took) == 1 and float(took[0]) > 0, took


def test_demo_says_so_when_the_run_went_wrong(tmp_path):
    """The wrong tests failed and no report was written: not ok, and each reason named."""
    from pytest_sideeye.cli import demo

    outcome = demo.Outcome(passed=["test_place_order"], failed=["test_cancel_order"])
    ok, notes = demo.judge(outcome, tmp_path / "missing" / "timeout.html")
    assert not ok
    assert "expected test_cancel_during_rush to fail on the timeout; it did not" in notes
    assert "unexpected failures: test_cancel_order" in notes
    assert notes[-1].startswith("no report at ")
