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
    assert proc.label_reads <= sum(3 + 2 * len(s) for s in sets), proc.label_reads
    if preread == "0":
        assert proc.label_reads > 0
    elif not proc.rewalked:
        # Every set a kept goroutine points to was read before the pause (prescan).
        assert proc.label_reads == 0


FLIP = {"main.flipPark": ["i"]}


def _flipper(proc) -> tuple[str, int] | None:
    """(its "flip" label, its captured i) when the flipper is parked in flipPark."""
    for g in proc.goroutines:
        names = [f.function for f in g.frames]
        if "main.flipPark" in names and g.status == "waiting":
            [i] = g.frames[names.index("main.flipPark")].variables
            assert i.available and i.error is None, i
            return g.labels.get("flip"), i.value
    return None


@pytest.mark.parametrize("version", [GO_VERSIONS[0], GO_VERSIONS[-1]])
def test_labels_read_before_the_pause_are_the_instants(go_build, needs_root, tmp_path,
                                                       version):
    """Label sets are read before the pause for the goroutines the pause keeps (their
    sets live all along); a goroutine that took a new set since is walked again and its
    set read in the pause. The flipper takes a new set {"flip": i} every 2 ms, the old
    ones collected often: in every snapshot its labels name the i captured from its frame
    in the pause."""
    app = start_app(go_build("ctxzoo", version), "-out", str(tmp_path / "l.json"), "-flip")
    seen, pre_read = 0, 0
    with app:
        # Until 10 snapshots caught it parked after a pre-read (a loaded machine catches it
        # running, or has the pre-read fall back, more often), at most 200.
        for _ in range(200):
            if pre_read >= 10:
                break
            [proc] = take_snapshot([app.pid], capture=FLIP).processes
            assert proc.error is None, proc.error
            got = _flipper(proc)
            if got is None:
                continue
            seen += 1
            pre_read += proc.walk == "pre-read"
            label, i = got
            assert label == str(i), (label, i, proc.walk, proc.rewalked)
    assert pre_read >= 10, (seen, pre_read)


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


def test_only_the_sets_of_goroutines_the_pause_kept_are_adopted():
    """A set read before the pause stands for the pause only if a goroutine the pause kept
    points to it (live all along); one no kept goroutine holds may have been freed and its
    address reused by a set made since, and one read in part is read again."""
    from pytest_sideeye.engine import labels
    before = labels.Taken(sets={1: [(10, 1, 20, 1)], 2: [(30, 1, 40, 1)], 3: []},
                          cut={3: "unreadable"},
                          strings={(10, 1): b"k", (20, 1): b"v", (30, 1): b"x", (40, 1): b"y"})
    taken = labels.Taken()
    assert labels._adopt(taken, before, kept={1, 3, 4}) == {1}
    assert taken.sets == {1: [(10, 1, 20, 1)]}
    assert taken.strings == {(10, 1): b"k", (20, 1): b"v"}
