"""The wheel is all a user needs (issue 12): built from this checkout and installed with
--no-deps into a fresh virtualenv, its own `sideeye` command, run from a folder outside
the checkout with a fresh HOME, snapshots a real Go program (so the BPF C shipped as
pytest_sideeye/bpf/ is found and compiles) and renders the report.
"""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from oracle import start_app
from support import ROOT

from pytest_sideeye.report import snapshot_from_report
from pytest_sideeye.snapshot import Snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]


def run_in(installed, cwd: Path, *cmd, timeout: float = 300) -> subprocess.CompletedProcess:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=installed.env(home),
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_holds_every_file_of_the_package(installed):
    """Every module and data file of the checkout's package, and the BPF C, are in the
    wheel (a subpackage missing from pyproject's list would be left out silently)."""
    package = ROOT / "pytest_sideeye"
    wanted = {f"pytest_sideeye/{p.relative_to(package)}" for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    wanted |= {f"pytest_sideeye/bpf/{p.name}" for p in (ROOT / "bpf").glob("*.c")}
    have = set(zipfile.ZipFile(installed.wheel).namelist())
    assert not wanted - have, f"not in {installed.wheel.name}: {sorted(wanted - have)}"


def test_the_wheel_ships_the_package_and_its_bpf_source(installed, tmp_path):
    """The installed copy is the one imported (not the checkout's editable install), and
    its BPF source is the one inside it."""
    r = run_in(installed, tmp_path, installed.python, "-c",
               "import pytest_sideeye; from pytest_sideeye.engine.bpf import bpf_source; "
               "print(pytest_sideeye.__file__); print(bpf_source())")
    assert r.returncode == 0, r.stderr
    package, source = (Path(line) for line in r.stdout.split())
    assert package.is_relative_to(installed.venv), package
    assert source == package.parent / "bpf" / "snapshot.bpf.c"
    assert source.read_bytes() == (ROOT / "bpf" / "snapshot.bpf.c").read_bytes()


def test_installed_sideeye_snapshots_and_reports(installed, go_build, tmp_path):
    json_path, html_path = tmp_path / "snap.json", tmp_path / "snap.html"
    with start_app(go_build("manyparked"), "-n", "10") as app:
        r = run_in(installed, tmp_path, installed.sideeye, "snapshot", "--pid", app.pid,
                   "--json", json_path)
        assert app.alive()
    assert r.returncode == 0, f"rc {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert r.stderr == "", r.stderr
    doc = json.loads(json_path.read_text())
    (proc,) = doc["processes"]
    assert proc["pid"] == app.pid and proc["error"] is None
    functions = {f["function"] for g in proc["goroutines"] for f in g["frames"]}
    parked = [g for g in proc["goroutines"]
              if any(f["function"] == "main.parkedLeaf" for f in g["frames"])]
    assert len(parked) == 10, sorted(functions)

    r = run_in(installed, tmp_path, installed.sideeye, "report", json_path, "-o", html_path)
    assert r.returncode == 0, f"rc {r.returncode}:\n{r.stdout}\n{r.stderr}"
    html = html_path.read_text()
    embedded = snapshot_from_report(html)
    assert embedded.to_json() == Snapshot.from_json(doc).to_json()
    assert "main.parkedLeaf" in html


def test_installation_without_its_bpf_source_says_so_in_one_line(installed, go_build,
                                                                 tmp_path):
    """The installed package with its snapshot.bpf.c taken away (put back after): the
    installed `sideeye snapshot` prints one line saying so, exit code 2, no traceback."""
    r = run_in(installed, tmp_path, installed.python, "-c",
               "import pytest_sideeye, pathlib; "
               "print(pathlib.Path(pytest_sideeye.__file__).parent / 'bpf' / 'snapshot.bpf.c')")
    source = Path(r.stdout.strip())
    aside = source.with_suffix(".aside")
    source.rename(aside)
    try:
        with start_app(go_build("manyparked"), "-n", "10") as app:
            r = run_in(installed, tmp_path, installed.sideeye, "snapshot", "--pid", app.pid)
            assert app.alive()
    finally:
        aside.rename(source)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    assert "lacks its BPF program" in line and "reinstall" in line, line


def test_installed_fix_texts_name_no_script_the_wheel_lacks(installed, tmp_path):
    """The wheel ships no scripts/: `sideeye doctor`'s fixes said `scripts/setup.sh` to a
    pip-installed user all the same. Installed, they say the step itself (the checkout's
    set-up script, by absolute path, only from a checkout: tests/cli/test_install.py)."""
    dead = "unix:///tmp/sideeye-no-such-docker.sock"
    r = subprocess.run([str(installed.sideeye), "doctor"], cwd=tmp_path,
                       env={**installed.env(tmp_path), "DOCKER_HOST": dead,
                            "SIDEEYE_AGENT": "0"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "setup.sh" not in r.stdout + r.stderr, r.stdout
    [line] = [x for x in r.stdout.splitlines() if x.startswith("FAIL  docker ")]
    assert line.endswith(f"Docker is not answering at {dead}  "
                         "-> fix: start dockerd (systemctl start docker)"), line
    r = subprocess.run([str(installed.sideeye), "snapshot", "--container", "whatever"],
                       cwd=tmp_path, env={**installed.env(tmp_path), "DOCKER_HOST": dead,
                                          "SIDEEYE_AGENT": "0"},
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (2, f"sideeye: Docker is not answering at {dead}: "
                                           "start dockerd (systemctl start docker)\n")
    r = subprocess.run([str(installed.python), "-c",
                        "from pytest_sideeye import install; "
                        "print(install.setup_command(), install.agent_restart(7, env={}))"],
                       cwd=tmp_path, env=installed.env(tmp_path), capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == ("None stop agent pid 7 and start `sideeye agent` again "
                                "as root"), (r.stdout, r.stderr)
