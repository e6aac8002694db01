"""A snapshot's skew (issue 28.3): how far apart its processes were stopped, in the JSON
(skew_ns, together), through the HTML report's embedded document, and in the text and
HTML headers ("3 processes within 0.4 ms")."""
from __future__ import annotations

import json

from pytest_sideeye.report.embed import snapshot_from_report
from pytest_sideeye.report.html import render_html
from pytest_sideeye.snapshot import (
    Endpoint,
    Goroutine,
    Link,
    Process,
    Snapshot,
    apart_text,
    render_text,
    skew_text,
)
from pytest_sideeye.snapshot.model import LINK_APART_NS


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


# --- issue 28.3: a link whose two sides were collected far apart says so -----------------

def linked_pair(gap_ns: int, together: bool = False) -> Snapshot:
    """A client in `gateway` waiting on a handler in `orders`, stopped gap_ns apart."""
    procs = [Process(pid=21, service="gateway", monotonic_ns=5_000_000_000,
                     goroutines=[Goroutine(7, "waiting", "IO wait")]),
             Process(pid=22, service="orders", monotonic_ns=5_000_000_000 + gap_ns,
                     goroutines=[Goroutine(31, "waiting", "sync.Mutex.Lock")])]
    link = Link("http", Endpoint(21, 7), Endpoint(22, 31), method="POST", path="/place")
    return Snapshot(processes=procs, links=[link], skew_ns=gap_ns, together=together)


def test_a_link_across_processes_stopped_far_apart_gets_its_gap():
    snap = linked_pair(12_300_000)
    assert snap.sides_apart_ns(snap.links[0]) == 12_300_000
    assert apart_text(snap, snap.links[0]) == "sides collected 12.3 ms apart"


def test_close_together_same_process_unknown_or_together_links_get_no_gap():
    assert linked_pair(LINK_APART_NS).sides_apart_ns(linked_pair(0).links[0]) is None
    assert linked_pair(50_000_000, together=True).sides_apart_ns(
        linked_pair(0).links[0]) is None
    snap = linked_pair(50_000_000)
    same = Link("tcp", Endpoint(21, 7), Endpoint(21, 8))
    outside = Link("http", Endpoint(21, 7), None, server_addr="10.0.0.9:80")
    assert snap.sides_apart_ns(same) is None and snap.sides_apart_ns(outside) is None
    snap.processes[1].monotonic_ns = None
    assert snap.sides_apart_ns(snap.links[0]) is None


def test_text_links_list_says_the_sides_were_collected_apart():
    lines = [ln for ln in render_text(linked_pair(12_300_000)).splitlines()
             if ln.startswith("#   http")]
    assert len(lines) == 1 and lines[0].endswith("[sides collected 12.3 ms apart]"), lines
    assert "apart" not in render_text(linked_pair(400_000))


def test_html_link_says_the_sides_were_collected_apart():
    html = render_html(linked_pair(12_300_000))
    # once in the Links table, once on each goroutine's link line (client and server)
    assert html.count('<span class="apart">sides collected 12.3 ms apart</span>') == 3
    assert 'class="apart"' not in render_html(linked_pair(400_000))
