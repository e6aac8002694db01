"""pprof labels (engine/labels.py): each goroutine's labels, read in the pause, equal to
what fixture ctxzoo's goroutines saw through their own contexts (pprof.ForLabels), on Go
1.21 (labels in a map), 1.24 and 1.27 (a sorted slice); goroutines without labels have
none. The text form prints them as Go 1.27's own traceback does (compared with its SIGQUIT
dump), the HTML report escapes hostile text in them, the SQLite file has a row per label,
and the report's embedded document keeps them."""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import sqlite3

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import take_snapshot
from pytest_sideeye.engine.vmread import read_scatter
from pytest_sideeye.report import render_html, snapshot_from_report
from pytest_sideeye.report.sqlite import write_sqlite
from pytest_sideeye.snapshot import Goroutine, labels_text, parse_dump, render_text

HOSTILE = "</td><script>alert('x')</script>&amp;\"\n\ttab"


def start_ctxzoo(exe, out, env=None):
    app = start_app(exe, "-out", str(out), env=env)
    return app, json.loads(out.read_text())


@pytest.fixture(scope="module", params=GO_VERSIONS)
def labeled(request, go_build, needs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "labels.json"
    app, expected = start_ctxzoo(go_build("ctxzoo", request.param), out)
    with app:
        yield request.param, app, expected, take_snapshot([app.pid])


def test_every_goroutines_labels_are_what_it_saw(labeled):
    _version, _app, expected, snap = labeled
    [proc] = snap.processes
    assert proc.error is None and not [n for n in proc.notes if "labels" in n], proc.notes
    got = {str(g.id): g.labels for g in proc.goroutines if g.labels}
    assert got == expected["labels"]
    # The nested Do's inner set overrides one key; the child inherits its creator's set.
    assert {"step": "2", "tenant": "globex", "zone": "eu"} in got.values()
    assert sum(ls == {"parent": "yes"} for ls in got.values()) == 2
    by_id = {g.id: g for g in proc.goroutines}
    for gid in expected["unlabeled"]:
        assert by_id[gid].labels == {}
    assert "labels" in proc.pause_parts_ns


@pytest.mark.parametrize("preread", ["1", "0"])
def test_labels_are_read_per_set_never_per_goroutine(labeled, monkeypatch, preread):
    """The BPF walk carries each goroutine's g.labels in its record: the pause reads only
    the distinct sets (at most 3 ranges each: the map's or slice's header, its buckets or
    pairs) and their heap strings (2 a label at most), however many goroutines there are,
    with the pre-read (its kept records' pointers) and without it."""
    monkeypatch.setenv("SIDEEYE_PREREAD", preread)
    _version, app, expected, _snap = labeled
    [proc] = take_snapshot([app.pid]).processes
    assert (proc.walk == "pre-read") == (preread == "1"), proc.walk
    assert {str(g.id): g.labels for g in proc.goroutines if g.labels} == expected["labels"]
    sets = {tuple(ls.items()) for ls in expected["labels"].values()}
    assert 0 < proc.label_reads <= sum(3 + 2 * len(s) for s in sets), proc.label_reads


@pytest.mark.parametrize("preread", ["1", "0"])
def test_a_program_without_labels_costs_no_label_read(go_build, needs_root, monkeypatch,
                                                       preread):
    """manyparked links runtime/pprof (net/http/pprof) and labels none of its 1,000
    goroutines: nothing is read for labels in the pause (it was a word per goroutine)."""
    monkeypatch.setenv("SIDEEYE_PREREAD", preread)
    with start_app(go_build("manyparked", "1.24.11"), "-n", "1000") as app:
        [proc] = take_snapshot([app.pid]).processes
    assert proc.error is None and len(proc.goroutines) > 1000
    assert not any(g.labels for g in proc.goroutines)
    assert "labels" in proc.pause_parts_ns and proc.label_reads == 0


def test_labels_in_the_text_the_report_and_sqlite(labeled, tmp_path):
    _version, _app, expected, snap = labeled
    [proc] = snap.processes
    hostile = next(g for g in proc.goroutines if g.labels.get("hostile") == HOSTILE)
    text = render_text(snap)
    assert f"goroutine {hostile.id} [chan receive] {labels_text(hostile.labels)}:" in text
    assert '"\\u00fcn\\u00efcode \\u043a\\u043b\\u044e\\u0447"' in labels_text(hostile.labels)

    html = render_html(snap)
    assert "<script>alert" not in html
    assert "&lt;/td&gt;&lt;script&gt;alert" in html
    back = snapshot_from_report(html)
    assert {g.id: g.labels for g in back.processes[0].goroutines} == \
        {g.id: g.labels for g in proc.goroutines}

    db = sqlite3.connect(write_sqlite(snap, tmp_path / "s.db"))
    rows = db.execute("SELECT goroutine, key, value FROM labels WHERE pid = ?",
                      (proc.pid,)).fetchall()
    assert {(str(g), k, v) for g, k, v in rows} == \
        {(gid, k, v) for gid, ls in expected["labels"].items() for k, v in ls.items()}


def test_the_text_matches_go_1_27s_own_traceback(go_build, needs_root, tmp_path):
    """Go 1.27 prints labels in its tracebacks (for a module of go >= 1.27, or with this
    GODEBUG): the header of every labeled goroutine must match."""
    app, expected = start_ctxzoo(go_build("ctxzoo", "1.27.3"), tmp_path / "labels.json",
                                 env={"GODEBUG": "tracebacklabels=1"})
    with app:
        snap = take_snapshot([app.pid])
        dump = parse_dump(app.dump_sigquit())
    ours = {g.id: g.labels for g in snap.processes[0].goroutines}
    theirs = {g.id: _dump_labels(g) for g in dump}
    assert len(expected["labels"]) == 5
    for gid in map(int, expected["labels"]):
        assert labels_text(ours[gid]) == theirs[gid]


def _dump_labels(g: Goroutine) -> str:
    from pytest_sideeye.snapshot.godump import dump_info
    return dump_info(g).labels


# --- the reader of process memory (vmread) ------------------------------------------------

def test_scattered_reads_merge_and_survive_holes():
    """Reads close together are one span; a span crossing an unmapped page is read again
    range by range, so only the unreadable range is bad."""
    m = mmap.mmap(-1, 3 * 4096)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m[:] = bytes(i % 251 for i in range(3 * 4096))
    assert ctypes.CDLL(None).munmap(ctypes.c_void_p(base + 4096), 4096) == 0
    reqs = [(base + 4000, 8), (base + 4096 + 100, 8), (base + 8192 + 8, 8), (base + 4010, 3),
            (8, 4)]
    buf, offs, bad = read_scatter(os.getpid(), reqs)
    assert bad == {1, 4}
    got = [buf[offs[i]:offs[i + 1]] for i in range(len(reqs))]
    assert got[0] == bytes(i % 251 for i in range(4000, 4008))
    assert got[2] == bytes(i % 251 for i in range(8200, 8208))
    assert got[3] == bytes(i % 251 for i in range(4010, 4013))
    assert got[1] == bytes(8) and got[4] == bytes(4)


def test_scattered_reads_of_a_gone_process_are_all_bad():
    buf, offs, bad = read_scatter(2 ** 22 + 12345, [(4096, 8), (8192, 8)])
    assert bad == {0, 1}


def test_a_failure_reading_labels_is_a_note_not_a_lost_snapshot(labeled, monkeypatch):
    """A bug or a surprise in the labels' memory must not cost the snapshot its stacks."""
    from pytest_sideeye.engine import labels

    def broken(*_a, **_k):
        raise ValueError("surprise")
    monkeypatch.setattr(labels.LabelReader, "_read", broken)
    _version, app, _expected, _snap = labeled
    [proc] = take_snapshot([app.pid]).processes
    assert proc.error is None and proc.goroutines
    assert "labels: not read: ValueError: surprise" in proc.notes
