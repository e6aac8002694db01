"""A snapshot's skew (issue 28.3): how far apart its processes were stopped, in the JSON
(skew_ns, together), through the HTML report's embedded document, and in the text and
HTML headers ("3 processes within 0.4 ms")."""
from __future__ import annotations

import json

from pytest_sideeye.report.embed import snapshot_from_report
from pytest_sideeye.report.html import render_html
from pytest_sideeye.snapshot import Process, Snapshot, render_text, skew_text


def three_processes(skew_ns: int | None = 412_000) -> Snapshot:
    procs = [Process(pid=10 + i, monotonic_ns=1_000_000 + i * 206_000) for i in range(3)]
    return Snapshot(processes=procs, taken_at="2026-12-06T06:00:00Z", skew_ns=skew_ns)


def test_skew_round_trips_through_json():
    snap = three_processes()
    doc = json.loads(snap.dumps())
    assert doc["skew_ns"] == 412_000 and doc["together"] is False
    back = Snapshot.from_json(doc)
    assert (back.skew_ns, back.together) == (412_000, False)
    assert json.loads(back.dumps()) == doc


def test_documents_without_skew_still_load():
    doc = json.loads(three_processes(skew_ns=None).dumps())
    assert "skew_ns" not in doc
    del doc["together"]
    back = Snapshot.from_json(doc)
    assert back.skew_ns is None and back.together is False


def test_text_header_says_how_far_apart():
    text = render_text(three_processes())
    assert text.splitlines()[0] == "# 3 processes within 0.4 ms (stopped one after the other)"


def test_one_process_has_no_skew_line():
    snap = Snapshot(processes=[Process(pid=1, monotonic_ns=5)], skew_ns=0)
    assert skew_text(snap) is None
    assert "within" not in render_text(snap)


def test_html_header_and_embedded_document_keep_the_skew():
    html = render_html(three_processes())
    assert "3 processes within 0.4 ms" in html
    back = snapshot_from_report(html)
    assert (back.skew_ns, back.together) == (412_000, False)
