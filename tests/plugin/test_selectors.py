"""Container selectors are checked like pytest-timeout checks its settings: a bad one on
the command line, in the ini file or in SIDEEYE_CONTAINERS stops the run with one line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import Selector, parse_selectors


def test_good_selectors_parse():
    assert parse_selectors(["auto", "compose:shop/orders, label:a=b", "name:web-*",
                            "id:abc123 events", "none"], "x") == [
        Selector("auto"), Selector("compose", "shop/orders"), Selector("label", "a=b"),
        Selector("name", "web-*"), Selector("id", "abc123"), Selector("events"),
        Selector("none")]


@pytest.mark.parametrize("bad", ["bogus", "compose:", "label:novalue", "label:=x",
                                 "events:now", "compose:a/b/c", "id:"])
def test_bad_selectors_are_one_line(bad):
    with pytest.raises(SideeyeError) as e:
        parse_selectors([bad], "--sideeye-containers")
    assert str(e.value).startswith(f"--sideeye-containers: bad container selector {bad!r}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["option", "ini", "env"])
def test_a_bad_selector_stops_pytest_in_one_line(tmp_path, how):
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    ini = "[pytest]\n" + ("sideeye_containers =\n    compose:ok\n    bogus:x\n"
                          if how == "ini" else "")
    (tmp_path / "pytest.ini").write_text(ini)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    args = ["--sideeye-containers=bogus:x"] if how == "option" else []
    if how == "env":
        env["SIDEEYE_CONTAINERS"] = "compose:ok,bogus:x"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stdout + r.stderr
    where = {"option": "--sideeye-containers", "ini": "ini sideeye_containers",
             "env": "SIDEEYE_CONTAINERS"}[how]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"ERROR: {where}: bad container selector 'bogus:x': want auto, none, "
                     "events, compose:PROJECT[/SERVICE], label:KEY=VALUE, name:GLOB or id:ID"]


def test_containers_that_cannot_be_looked_up_are_a_line_in_the_report(tmp_path):
    """Docker not answering when a selector needs it: the test fails as it would, its
    report says why the containers are missing (not a traceback, not silence)."""
    from pytest_sideeye.snapshot import Snapshot
    (tmp_path / "test_x.py").write_text("def test_x():\n    assert 1 == 2\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "--sideeye-on-failure", "--sideeye-dir=reports",
                        "--sideeye-containers=label:app=shop"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    snap = Snapshot.load(tmp_path / "reports" / "test_x.py__test_x" / "call.json")
    (proc,) = snap.processes
    assert proc.service == "containers"
    assert proc.error.startswith("service containers: could not be looked up: Docker is not "
                                 f"answering at unix://{tmp_path}/no-docker.sock")
