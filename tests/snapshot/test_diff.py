"""Snapshot diffs on recorded snapshots (the live one is in tests/cli/test_diff_export.py)."""
from __future__ import annotations

import copy

from samples import RECORDED

from pytest_sideeye.snapshot import Snapshot, render_diff_text


def recorded() -> Snapshot:
    return Snapshot.load(RECORDED)


def with_changes():
    """The recorded snapshot, then the same process with two goroutines more (copies of the
    last one), one fewer (the fourth) and one whose wait reason moved (the third)."""
    before = recorded()
    after = copy.deepcopy(before)
    gs = after.processes[0].goroutines
    for new_id in (9001, 9002):
        g = copy.deepcopy(gs[-1])
        g.id = new_id
        gs.append(g)
    gone = gs.pop(3)
    gs[2].wait_reason = "sleep"
    return before, after, gone


def test_nothing_changed():
    d = recorded().diff(recorded())
    assert d.empty
    assert render_diff_text(d).splitlines()[1] == "  no change"


def test_appeared_vanished_and_changed_by_id():
    before, after, gone = with_changes()
    d = after.diff(before)
    [p] = d.processes
    assert (p.count_before, p.count_after) == (17, 18)
    [grew] = p.appeared
    assert grew.count == 2 and sorted(grew.ids) == [9001, 9002]
    assert grew.key.stack == tuple(f.function for f in before.processes[0].goroutines[-1].frames)
    [shrank] = p.vanished
    assert shrank.ids == [gone.id]
    [moved] = p.changed
    assert moved.id == before.processes[0].goroutines[2].id
    assert moved.before.startswith(f"waiting: {before.processes[0].goroutines[2].wait_reason}")
    assert moved.after.startswith("waiting: sleep")


def test_counts_come_first_and_name_the_creation_site():
    before, after, _gone = with_changes()
    lines = render_diff_text(after.diff(before)).splitlines()
    assert lines[0] == "orders (pid 4242): 17 -> 18 goroutines"
    assert lines[1].startswith("  +2     appeared  ")
    assert "created by net/http.(*Transport).dialConn transport.go:" in lines[1]
    assert lines[2].startswith("  -1     vanished  ")


def test_a_restarted_process_is_compared_by_groups():
    """Another pid: ids mean nothing across processes, so groups that grew or shrank are
    what appeared or vanished."""
    before, after, _gone = with_changes()
    after.processes[0].pid = 5151
    for g in after.processes[0].goroutines:   # every id different: no common id at all
        g.id += 100_000
    [p] = after.diff(before).processes
    assert p.restarted and p.changed == []
    assert [g.count for g in p.appeared] == [2]
    assert [g.count for g in p.vanished] == [1]


def test_processes_matched_by_service_then_missing_ones_listed():
    before, after, _gone = with_changes()
    after.processes[0].service = before.processes[0].service = "orders"
    extra = copy.deepcopy(after.processes[0])
    extra.service, extra.pid = "ledger", 77
    after.processes.append(extra)
    names = [p.name for p in after.diff(before).processes]
    assert names == ["orders", "ledger"]
    ledger = after.diff(before).processes[1]
    assert ledger.pid_before is None and ledger.count_after == len(extra.goroutines)
    assert sum(g.count for g in ledger.appeared) == len(extra.goroutines)


def test_json_form():
    before, after, _gone = with_changes()
    doc = after.diff(before).to_json()
    assert doc["format"] == "sideeye.diff/v1"
    assert doc["processes"][0]["appeared"][0]["count"] == 2


def test_a_process_named_by_its_executable_says_its_pid_once():
    """`sideeye diff` of two CLI snapshots of a plain process printed
    "peers (pid 13888) (pid 13888): 13 -> 13 goroutines" (its name, the matching key, holds
    the pid already); the HTML page's heading the same."""
    from pytest_sideeye.report.diff import render_diff_html
    snap = recorded()
    snap.processes[0].service, snap.processes[0].container = None, None
    snap.processes[0].exe = "/app/peers"
    d = snap.diff(copy.deepcopy(snap))
    assert render_diff_text(d).splitlines()[0] == \
        f"peers (pid {snap.processes[0].pid}): 17 -> 17 goroutines"
    page = render_diff_html(d, "a.json", "b.json")
    assert page.count(f"(pid {snap.processes[0].pid}") == 1
