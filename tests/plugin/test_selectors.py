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
