"""Leak checks (--sideeye-leaks, the sideeye_leaks marker) on a real service: leaky, whose
/leak leaves a goroutine waiting forever and whose /clean does not. Run as a user would:
pytest in a subprocess on a throw-away project, the service in Docker."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from support import GOAPPS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]

CONFTEST = f"""
import pytest
from pytest_sideeye import go_service

leaky = go_service("leaky", source={str(GOAPPS / "leaky")!r}, ports=[8080], scope="module",
                   args=["-addr", "0.0.0.0:8080"], ready_http=(8080, "/healthz"),
                   labels={{"sideeye-leak-test": "{uuid.uuid4().hex}"}})
"""

TESTS = """
import http.client, time
import pytest, requests

SESSION = requests.Session()          # a keep-alive pool, as test suites use

def get(svc, path):
    r = SESSION.get(svc.url(8080, path), timeout=10)
    assert r.status_code == 200

def test_leaks(leaky):
    get(leaky, "/leak")
    get(leaky, "/leak")

@pytest.mark.parametrize("n", range(50))
def test_clean(leaky, n):
    get(leaky, "/clean")

def test_plain_keepalive_connection(leaky):
    c = http.client.HTTPConnection("127.0.0.1", leaky.host_port(8080), timeout=10)
    c.request("GET", "/clean"); c.getresponse().read()
    c.request("GET", "/clean"); c.getresponse().read()
    test_plain_keepalive_connection.keep = c   # still open when the check runs

@pytest.mark.sideeye_leaks(ignore_created_by=["main.(*server).leak"])
def test_ignored_by_creator(leaky):
    get(leaky, "/leak")

@pytest.mark.sideeye_leaks(ignore_top_function=["main.waitForReply"])
def test_ignored_by_function(leaky):
    get(leaky, "/leak")

@pytest.mark.sideeye_leaks(False)
def test_check_turned_off(leaky):
    get(leaky, "/leak")

# Negative controls: an ignore list that names something else excuses nothing.
@pytest.mark.sideeye_leaks(ignore_created_by=["main.waitForReply"])
def test_ignore_naming_the_function_as_creator(leaky):
    get(leaky, "/leak")

@pytest.mark.sideeye_leaks(ignore_top_function=["main.waitFor"])
def test_ignore_naming_a_prefix_of_the_function(leaky):
    get(leaky, "/leak")
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_l.py").write_text(textwrap.dedent(TESTS))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "-p", "no:hypothesispytest", "-p", "no:randomly", "--sideeye-dir=reports",
                        "-rA", "--junitxml=junit.xml", *args],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(r.stdout[-20000:], r.stderr[-5000:], sep="\n")
    return r


def junit_failures(path: Path) -> dict[str, str]:
    """Each failed test's whole failure text, by test name (the terminal's is cut)."""
    import xml.etree.ElementTree as ET
    return {case.get("name"): failure.get("message", "") + (failure.text or "")
            for case in ET.parse(path).iter("testcase") for failure in case.iter("failure")}


def test_leaks_fail_and_clean_endpoints_pass_50_times(tmp_path):
    """Also --sideeye-sqlite, which writes each snapshot's tables beside its JSON."""
    r = run(tmp_path, "--sideeye-leaks", "--sideeye-sqlite")
    out = r.stdout
    assert "FAILED test_l.py::test_leaks" in out
    assert "2 goroutines leaked by this test" in out
    assert "leaky: 2 x main.waitForReply created by main.(*server).leak main.go:" in out
    assert "[2 waiting: chan receive]" in out
    # keep-alive clients in the test process are not leaks; neither are ignored ones
    for n in range(50):
        assert f"PASSED test_l.py::test_clean[{n}]" in out
    for name in ("test_plain_keepalive_connection", "test_ignored_by_creator",
                 "test_ignored_by_function", "test_check_turned_off"):
        assert f"PASSED test_l.py::{name}" in out
    failures = junit_failures(tmp_path / "junit.xml")
    for name in ("test_ignore_naming_the_function_as_creator",
                 "test_ignore_naming_a_prefix_of_the_function"):
        assert "1 goroutine leaked by this test" in failures.get(name, "(passed)"), name
    assert r.returncode == 1
    folder = tmp_path / "reports" / "test_l.py__test_leaks"
    page = (folder / "leaks-diff.html").read_text()
    assert "main.waitForReply" in page and "main.(*server).leak" in page
    after = json.loads((folder / "leaks.json").read_text())
    assert sum("main.waitForReply" in [f["function"] for f in g["frames"]]
               for g in after["processes"][0]["goroutines"]) >= 2
    # --sideeye-sqlite: the same snapshot as tables beside the JSON
    db = sqlite3.connect(folder / "leaks.db")
    assert db.execute("SELECT count(*) FROM goroutines WHERE created_by_function = "
                      "'main.(*server).leak'").fetchone()[0] >= 2
    # the report is attached like the others: junit property and the terminal summary
    assert "leaks-diff.html" in (tmp_path / "junit.xml").read_text()


def test_ini_turns_it_on_for_the_suite(tmp_path):
    r = run(tmp_path, "-o", "sideeye_leaks=true", "-k", "test_leaks or test_clean and 1]")
    assert "FAILED test_l.py::test_leaks" in r.stdout
    assert "PASSED test_l.py::test_clean[1]" in r.stdout
