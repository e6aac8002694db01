"""The set-up starts the agent as it starts dockerd: once, and a second run leaves the
running agent alone; the shipped systemd unit runs a command line `sideeye agent` takes."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import pytest
from support import ROOT

from pytest_sideeye.agent import health
from pytest_sideeye.cli.main import build_parser

UNIT = ROOT / "scripts" / "systemd" / "sideeye-agent.service"


def _setup(socket_path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "SIDEEYE_AGENT_SOCKET": str(socket_path)})


@pytest.mark.slow
def test_setup_starts_the_agent_once(needs_root, needs_docker, shared_dir):
    folder = shared_dir / "setup-agent"
    folder.mkdir()
    sock = folder / "agent.sock"
    first = _setup(sock)
    assert first.returncode == 0, first.stderr
    pid = health(str(sock))["pid"]
    try:
        assert f"starting the sideeye agent on {sock}" in first.stderr
        t0 = time.monotonic()
        second = _setup(sock)
        assert second.returncode == 0, second.stderr
        assert "starting the sideeye agent" not in second.stderr
        assert time.monotonic() - t0 < 5
        assert health(str(sock))["pid"] == pid
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sock.exists()   # a stopped agent removes its socket


def test_the_systemd_unit_runs_sideeye_agent():
    text = UNIT.read_text()
    lines = dict(line.split("=", 1) for line in text.splitlines()
                 if "=" in line and not line.startswith("#"))
    argv = shlex.split(lines["ExecStart"])
    assert argv[0].endswith("/sideeye") and argv[1] == "agent"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "agent" and args.socket == "/run/sideeye/agent.sock"
    assert lines["RuntimeDirectory"] == "sideeye"
    # Stopping the agent must not kill its resume guardian (it resumes a paused target).
    assert lines["KillMode"] == "process"
