"""`sideeye doctor` on this machine: every requirement met; a dead Docker socket and
dropped capabilities turn into FAIL lines with their fix and exit code 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import patched_go_version

from pytest_sideeye import install
from pytest_sideeye.cli import doctor
from pytest_sideeye.engine import privileges

DEAD = "unix:///tmp/sideeye-no-such-docker.sock"
DEAD_LINE = (f"FAIL  docker  Docker is not answering at {DEAD}  "
             f"-> fix: {install.start_docker()}")


def run_doctor(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
    return subprocess.run([*prefix, sys.executable, "-m", "pytest_sideeye.cli.doctor", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_every_requirement_is_met_here(needs_root, needs_docker, capsys):
    checks = doctor.run_checks()
    assert [c.name for c in checks] == list(doctor.CHECKS)
    assert [c for c in checks if not c.ok] == []
    # The stop hook is optional (its line stays "ok" without it), but this kernel has it.
    hook = next(c for c in checks if c.name == "stop-hook")
    assert hook.detail.startswith("a raw tracepoint on sched_switch ran"), hook.detail
    assert doctor.main_doctor([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(doctor.CHECKS) + 1
    assert all(l.startswith("ok    ") for l in lines[:-1])
    assert lines[-1] == f"all {len(doctor.CHECKS)} requirements met"


def test_dead_docker_socket_fails_the_docker_line(needs_docker):
    r = run_doctor("docker", "go", env={"DOCKER_HOST": DEAD})
    assert r.returncode == 1, r.stdout + r.stderr
    docker, go, summary = r.stdout.splitlines()
    assert docker == DEAD_LINE
    assert go.startswith("ok    go ") and summary == "1 of 2 requirements missing"
    assert r.stderr == ""


def test_dead_docker_socket_fails_the_full_run(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", DEAD)
    assert doctor.main_doctor([]) == 1
    out = capsys.readouterr().out
    docker_line = next(l for l in out.splitlines() if " docker " in l)
    assert docker_line.split() == DEAD_LINE.split()


def test_dropped_capabilities_fail_with_their_fix(needs_root):
    drop = ("setpriv", "--bounding-set", "-bpf,-perfmon,-sys_admin,-sys_ptrace")
    r = run_doctor("privileges", "bpf", prefix=drop)
    assert r.returncode == 1, r.stdout + r.stderr
    privileges, bpf, summary = r.stdout.splitlines()
    assert privileges.startswith("FAIL  privileges  root without CAP_BPF, CAP_PERFMON, "
                                 "CAP_SYS_PTRACE  -> fix: run as root")
    assert bpf.startswith("FAIL  bpf         bpf(BPF_MAP_CREATE) failed: "
                          "Operation not permitted  -> fix: ")
    assert summary == "2 of 2 requirements missing"


def test_the_engine_and_doctor_agree_on_privileges(needs_root):
    """One check (engine.privileges) for the engine, the plugin and doctor: root without
    the capabilities is refused by the engine in one line naming what it lacks."""
    drop = ("setpriv", "--bounding-set", "-bpf,-perfmon,-sys_admin,-sys_ptrace")
    r = subprocess.run([*drop, sys.executable, "-m", "pytest_sideeye.cli.main", "snapshot",
                        "--pid", str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "sideeye: snapshots need root, or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_KILL; "
        "this process (root) lacks CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE: run it as root "
        "(sudo), or grant those (setcap, or docker run --cap-add); or ask a sideeye agent "
        "(not asked: SIDEEYE_AGENT=0)"]


@pytest.mark.parametrize("caps, lacking", [
    ({"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_KILL"}, []),
    ({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_KILL"}, []),       # SYS_ADMIN stands in for BPF
    ({"CAP_BPF", "CAP_SYS_PTRACE", "CAP_KILL"}, ["CAP_PERFMON"]),
    (set(), ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_KILL"]),
])
def test_missing_capabilities(caps, lacking):
    assert privileges.missing_caps(caps) == lacking


def test_json_output(needs_docker, capsys):
    assert doctor.main_doctor(["--json", "docker", "kernel"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["ok"]) for c in parsed] == [("docker", True), ("kernel", True)]
    assert set(parsed[0]) == {"name", "ok", "detail", "fix"}


def test_unknown_check_is_a_user_error(capsys):
    assert doctor.main_doctor(["warp-drive"]) == 2
    assert "unknown doctor check 'warp-drive'" in capsys.readouterr().err


@pytest.mark.parametrize("release, version", [
    ("6.18.44-fc-v657", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("6.4.0", (6, 4)), ("5.15.0", (5, 15)),
    ("6.10", (6, 10)), ("7", (7, 0)),
])
def test_kernel_release_parsing(release, version):
    assert doctor._kernel_version(release) == version
    assert (version >= doctor.MIN_KERNEL) == (version >= (6, 4))


def test_old_kernel_fails_with_fix():
    with pytest.raises(doctor._Failed) as e:
        doctor.check_kernel("6.1.0-28-amd64")
    assert e.value.detail.startswith("Linux 6.1.0-28-amd64 is older than 6.4")
    assert e.value.fix.startswith("run on a kernel >= 6.4")
    assert doctor.check_kernel("6.4.16-amd64") == "Linux 6.4.16-amd64"


def test_binary_says_where_its_layouts_come_from(go_build):
    out = {}
    for name, flags in (("dwarf", ""), ("no-dwarf", "-w"), ("stripped", "-s -w")):
        binary = go_build("hello", "1.24.11", ldflags=flags)
        r = run_doctor("--binary", str(binary))
        assert r.returncode == 0, r.stdout + r.stderr
        [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("ok    binary")]
        out[name] = line
    assert "layouts from its own DWARF" in out["dwarf"] and "need DWARF" not in out["dwarf"]
    assert "layouts from table (Go 1.24.11)" in out["no-dwarf"]
    assert "captured variables need DWARF" in out["no-dwarf"]
    assert "goroutine list found in the code" in out["stripped"]
    assert "goroutine list" not in out["no-dwarf"]


def test_binary_of_a_patch_release_the_table_lacks(go_build, tmp_path):
    """A -s -w build claiming Go 1.24.12: its layout is one of the table's two Go 1.24
    layouts, which a snapshot picks in the live process."""
    binary = go_build("hello", "1.24.11", ldflags="-s -w")
    alien = patched_go_version(binary, "go1.24.11", "go1.24.12", tmp_path / "hello")
    r = run_doctor("--binary", str(alien))
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("ok    binary")]
    assert "go1.24.12; layouts from the table, one of 2" in line
    assert "picks by checking them in the live process" in line
