"""Snapshots as SQLite tables, checked with real queries (Python's sqlite3 and the sqlite3
shell), on the recorded snapshot and on one with hostile names."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

from samples import RECORDED, hostile_snapshot, recorded_links
from support import missing

from pytest_sideeye.report import write_sqlite
from pytest_sideeye.snapshot import Frame, Goroutine, Process, Snapshot, Variable


def test_goroutines_per_wait_reason(tmp_path):
    snap = Snapshot.load(RECORDED)
    db = sqlite3.connect(write_sqlite(snap, tmp_path / "s.db"))
    got = dict(db.execute("SELECT wait_reason, count(*) FROM goroutines GROUP BY 1"))
    want: dict[str, int] = {}
    for g in snap.processes[0].goroutines:
        want[g.wait_reason] = want.get(g.wait_reason, 0) + 1
    assert got == want
    assert db.execute("SELECT count(*) FROM frames").fetchone()[0] == \
        sum(len(g.frames) for g in snap.processes[0].goroutines)


def captured_snapshot() -> Snapshot:
    def frame(i):
        return Frame("main.settle", "/src/main.go", 40, variables=[
            Variable("o", "*main.Order", {"ID": i, "Customer": {"Name": f"c{i}"}}),
            Variable("attempt", "int", i % 3),
            Variable("pid", "int", 1000 + i),            # clashes with a frame column
            Variable("gone", "int", None, available=False)])
    gs = [Goroutine(10 + i, "waiting", "chan receive", None, None,
                    [Frame("runtime.gopark", "/go/src/runtime/proc.go", 435), frame(i),
                     Frame("main.main", "/src/main.go", 9)]) for i in range(5)]
    return Snapshot([Process(42, "/app/orders", "go1.24.11", service="orders",
                             goroutines=gs)], "2026-11-28T00:00:00Z")


def test_function_table_joins_its_frames(tmp_path):
    db = sqlite3.connect(write_sqlite(captured_snapshot(), tmp_path / "c.db"))
    rows = db.execute(
        'SELECT f.goroutine, f.file, f.line, json_extract(s.o, "$.Customer.Name"), s.attempt, '
        's."pid#2", s.gone FROM "main.settle" s JOIN frames f '
        "ON f.pid = s.pid AND f.goroutine = s.goroutine AND f.depth = s.depth "
        "ORDER BY f.goroutine").fetchall()
    assert rows == [(10 + i, "/src/main.go", 40, f"c{i}", str(i % 3), str(1000 + i), None)
                    for i in range(5)]
    assert db.execute("SELECT count(*) FROM variables WHERE function = 'main.settle' "
                      "AND name = 'o'").fetchone() == (5,)


def test_the_sqlite3_shell_reads_it(tmp_path):
    shell = shutil.which("sqlite3")
    if shell is None:
        missing("the sqlite3 shell is not installed (Debian: sqlite3)")
    path = write_sqlite(captured_snapshot(), tmp_path / "c.db")
    out = subprocess.run([shell, "-json", str(path),
                          'SELECT json_extract(o, "$.ID") AS id FROM "main.settle" '
                          "WHERE attempt = '1' ORDER BY id"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert json.loads(out) == [{"id": 1}, {"id": 4}]


def test_hostile_names_stay_names(tmp_path):
    snap = hostile_snapshot()
    db = sqlite3.connect(write_sqlite(snap, tmp_path / "h.db"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "main.handle" in tables
    assert db.execute('SELECT count(*) FROM "main.handle"').fetchone() == (1,)
    assert db.execute("SELECT function FROM frames WHERE depth = 2").fetchone()[0] == \
        snap.processes[0].goroutines[0].frames[2].function


def test_links_table_joins_both_sides(tmp_path):
    """Where each waiting client's server side is, by its innermost main.* frame."""
    snap = recorded_links()
    db = sqlite3.connect(write_sqlite(snap, tmp_path / "s.db"))
    rows = db.execute("""
        SELECT l.kind, l.path, (SELECT f.function FROM frames f
                                WHERE f.pid = l.server_pid AND f.goroutine = l.server_goroutine
                                  AND f.function LIKE 'main.%' ORDER BY f.depth LIMIT 1)
        FROM links l ORDER BY l.kind, l.path""").fetchall()
    assert rows == [("http", "/park?order=42", "main.parkHandler"),
                    ("http", "/park?order=7", "main.parkHandler"),
                    ("tcp", None, "main.readForever")]
    assert db.execute("SELECT count(*) FROM links").fetchone()[0] == len(snap.links)
