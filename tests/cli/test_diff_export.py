"""`sideeye diff`, `sideeye export` and `snapshot --sqlite` on live processes: leaky (a
service whose /leak leaves a goroutine behind on every call) snapshotted before and after
three calls of each endpoint."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request

import pytest
from oracle import start_app
from samples import RECORDED

pytestmark = pytest.mark.usefixtures("needs_root")


def sideeye(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def leaky(go_build):
    with start_app(go_build("leaky")) as app:
        yield app


def call(app, path: str, times: int) -> None:
    for _ in range(times):
        with urllib.request.urlopen(app.url(path), timeout=10) as r:
            r.read()


def test_diff_of_live_snapshots_shows_the_leak(leaky, tmp_path):
    before, after, db = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "b.db"
    assert sideeye("snapshot", "--pid", leaky.pid, "--json", before).returncode == 0
    call(leaky, "/leak", 3)
    call(leaky, "/clean", 3)
    r = sideeye("snapshot", "--pid", leaky.pid, "--json", after, "--sqlite", db)
    assert r.returncode == 0, r.stderr
    r = sideeye("diff", before, after, "--html", tmp_path / "d.html", "--json", tmp_path / "d.json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    leaked = [line for line in lines if "main.waitForReply" in line]
    assert len(leaked) == 1 and leaked[0].startswith("  +3     appeared  main.waitForReply"), r.stdout
    assert "created by main.(*server).leak main.go:" in leaked[0]
    assert "[3 waiting: chan receive]" in leaked[0]
    assert not any("main.(*server).clean" in line for line in lines), r.stdout
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["processes"][0]["appeared"][0]["top"] == "main.waitForReply"
    page = (tmp_path / "d.html").read_text()
    assert "main.waitForReply" in page and "<script" not in page
    # The same leak, asked of the SQLite tables the snapshot wrote.
    q = sqlite3.connect(db).execute(
        "SELECT count(*) FROM goroutines WHERE created_by_function = 'main.(*server).leak' "
        "AND wait_reason = 'chan receive'").fetchone()
    assert q == (3,)


def test_export_of_a_recorded_snapshot(tmp_path):
    r = sideeye("export", RECORDED, "--sqlite", tmp_path / "x.db")
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "x.db")
    n = sqlite3.connect(tmp_path / "x.db").execute("SELECT count(*) FROM goroutines").fetchone()
    assert n == (len(json.loads(RECORDED.read_text())["processes"][0]["goroutines"]),)


@pytest.mark.parametrize("args, message", [
    (("diff", "/nonexistent/a.json", RECORDED), "cannot read /nonexistent/a.json"),
    (("export", RECORDED, "--sqlite", "/nonexistent/dir/x.db"), "cannot write"),
])
def test_bad_input_is_one_line(args, message):
    r = sideeye(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
