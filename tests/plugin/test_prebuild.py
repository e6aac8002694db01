"""Images built before the first test: the README's demo passes on its first run from an
empty build cache (a cold `go build` used to fail its 10 s timeout inside a test), and a
service whose source does not compile errors each test needing it with the compiler's
message, built once."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET

import pytest
from support import GOAPPS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]


def clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["HOME"] = str(tmp_path / "home")                       # no ~/.cache/sideeye
    env["SIDEEYE_BUILD_CACHE"] = str(tmp_path / "cache" / "builds")   # and a cold GOCACHE
    return env


def test_demo_passes_on_its_first_run_from_an_empty_build_cache(tmp_path):
    for repo in ("sideeye/gateway", "sideeye/orders"):   # only the demo builds these
        ids = subprocess.run(["docker", "images", repo, "-q"], capture_output=True,
                             text=True, check=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True, check=True)
    r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.demo", "--dir",
                        str(tmp_path / "reports")], capture_output=True, text=True,
                       env=clean_env(tmp_path), timeout=600)
    print(r.stdout[-6000:], r.stderr[-3000:])
    assert r.returncode == 0
    built = [line for line in r.stdout.splitlines() if line.startswith("sideeye: building ")]
    assert [line.split()[2] for line in built] == ["ledger", "orders", "gateway"], built
    assert all(" ... done in " in line for line in built)
    assert "2 passed" in r.stdout and "1 failed" in r.stdout


def test_a_service_that_does_not_compile_errors_its_tests_with_the_compiler_message(tmp_path):
    src = tmp_path / "broken"
    src.mkdir()
    (src / "main.go").write_text("package main\n\nfunc main() {\n\tnotDeclared()\n}\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        from pytest_sideeye import go_service
        broken = go_service("broken", source="broken", ports=[8080],
                            labels={{"sideeye-prebuild-test": "{uuid.uuid4().hex}"}})
        ledger = go_service("ledger", source={str(GOAPPS / "ledger")!r}, ports=[8080],
                            ready_http=(8080, "/healthz"))
    """))
    (tmp_path / "test_b.py").write_text(textwrap.dedent("""
        def test_one(broken):
            pass

        def test_two(broken):
            pass

        def test_fine(ledger):
            pass
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                        "-p", "no:hypothesispytest", "--junitxml=junit.xml"], cwd=tmp_path,
                       capture_output=True, text=True, env=clean_env(tmp_path), timeout=600)
    print(r.stdout[-6000:], r.stderr[-3000:])
    lines = r.stdout.splitlines()
    failed = [line for line in lines if line.startswith("sideeye: building broken")]
    assert len(failed) == 1 and " ... FAILED: go build of " in failed[0]
    assert "undefined: notDeclared" in failed[0]
    # Each test's error from junit XML, whole: pytest's short summary is cut to the
    # terminal's width (an 80-column terminal lost the compiler's message).
    outcomes = junit_outcomes(tmp_path / "junit.xml")
    for test in ("test_one", "test_two"):
        kind, message = outcomes[test]
        assert kind == "error" and "undefined: notDeclared" in message, (test, kind, message)
    assert outcomes["test_fine"] == ("passed", "")


def junit_outcomes(path) -> dict[str, tuple[str, str]]:
    """{test name: (passed|failure|error|skipped, its message and text)} from junit XML."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        problems = [c for c in case if c.tag in ("failure", "error", "skipped")]
        kind, text = "passed", ""
        if problems:
            kind = problems[0].tag
            text = (problems[0].get("message") or "") + "\n" + (problems[0].text or "")
        outcomes[case.get("name")] = (kind, text)
    return outcomes
