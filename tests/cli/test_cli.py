"""`sideeye` as a user runs it: real processes, a real container, one-line errors."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from oracle import start_app

from pytest_sideeye.snapshot.godump import parse_dump
from pytest_sideeye.snapshot.model import Snapshot

SIDEEYE = [str(Path(sys.executable).with_name("sideeye"))]
pytestmark = pytest.mark.usefixtures("needs_root")


def sideeye(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(SIDEEYE + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def parkzoo(go_build):
    with start_app(go_build("parkzoo")) as app:
        time.sleep(0.3)
        yield app


def test_snapshot_text_json_and_html(parkzoo, tmp_path):
    r = sideeye("snapshot", "--pid", parkzoo.pid, "--text", "--json", tmp_path / "s.json",
                "--html", tmp_path / "s.html")
    assert r.returncode == 0, r.stderr
    # The text is in debug=2 form: our own dump parser reads it back.
    text_goroutines = parse_dump(r.stdout)
    snap = Snapshot.load(tmp_path / "s.json")
    assert [g.id for g in text_goroutines] == [g.id for g in snap.processes[0].goroutines]
    assert any(g.blocked_in("main.parkChanSend") for g in text_goroutines)
    html = (tmp_path / "s.html").read_text()
    assert "main.parkChanSend" in html and "sideeye-snapshot" in html


@pytest.mark.parametrize("args, words", [
    (["snapshot", "--pid", "999999"], "999999"),
    (["snapshot"], "nothing to snapshot"),
    (["snapshot", "--pid", "1", "--json", "/nonexistent/dir/s.json"],
     "cannot write /nonexistent/dir/s.json: no such folder"),
    (["snapshot", "--container", "no-such-container-sideeye"], "no-such-container-sideeye"),
])
def test_bad_input_is_one_line_exit_2(args, words):
    r = sideeye(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("sideeye: ") and words in line


def test_not_a_go_program_is_one_line(tmp_path):
    with subprocess.Popen(["sleep", "60"]) as p:
        try:
            r = sideeye("snapshot", "--pid", p.pid)
        finally:
            p.kill()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def run_container(client, tag: str):
    """A container of tag, running. Owner labels: a concurrent run's sweep must not take it
    for a leftover."""
    from pytest_sideeye.services import containers
    c = client.containers.run(tag, detach=True, labels=containers.owner_labels())
    for _ in range(100):
        c.reload()
        if c.status == "running":
            break
        time.sleep(0.05)
    return c


def test_container_resolves_to_its_go_process(needs_docker, go_build, tmp_path):
    from pytest_sideeye.services import images
    client = images.docker_client()
    tag = images.go_image("clihello", Path(__file__).parents[2] / "fixtures/goapps/hello")
    c = run_container(client, tag)
    try:
        r = sideeye("snapshot", "--container", c.name, "--json", tmp_path / "c.json")
        assert r.returncode == 0, r.stderr
        snap = Snapshot.load(tmp_path / "c.json")
        (proc,) = snap.processes
        assert proc.error is None
        assert proc.container.name == c.name and proc.container.id == c.id
        assert proc.pid == c.attrs["State"]["Pid"]
        assert any(g.blocked_in("main.main") for g in proc.goroutines)
    finally:
        c.remove(force=True)


def test_container_of_a_stripped_image(needs_docker, needs_root, go_build, tmp_path):
    """An image holding a -s -w build (as release images often do) snapshots from
    --container like any other: layouts from the table, goroutine list from the code."""
    from pytest_sideeye.services import images
    client = images.docker_client()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "hello").write_bytes(go_build("hello", ldflags="-s -w").read_bytes())
    (tmp_path / "ctx" / "hello").chmod(0o755)
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "FROM scratch\nCOPY hello /hello\nLABEL pytest-sideeye=1\nENTRYPOINT [\"/hello\"]\n")
    tag = images.dockerfile_image("strippedhello", tmp_path / "ctx" / "Dockerfile")
    c = run_container(client, tag)
    try:
        r = sideeye("snapshot", "--container", c.name, "--json", tmp_path / "c.json")
        assert r.returncode == 0, r.stderr
        (proc,) = Snapshot.load(tmp_path / "c.json").processes
        assert proc.error is None and proc.container.id == c.id
        assert proc.layouts.startswith("table (Go ") and "found in the code" in proc.layouts
        assert any(g.blocked_in("main.main") for g in proc.goroutines)
    finally:
        c.remove(force=True)


def test_capture_of_a_function_no_target_has_is_refused_before_any_pause(parkzoo):
    r = sideeye("snapshot", "--pid", parkzoo.pid, "--capture", "main.noSuchFunction:x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "main.noSuchFunction" in r.stderr
