"""What the agent's tests share besides fixtures (conftest.py): the test users, targets,
an agent in a subprocess, the sideeye command as a user. A module of its own (not
conftest.py) so that importing it means this file whichever conftest.py is loaded."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from support import ROOT

MEMBER, OUTSIDER = "sideeye-tester", "sideeye-outsider"

@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def prefix(self) -> list[str]:
        """A command prefix running as this user with their groups (no capabilities)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]


class Target:
    """A running manyparked, as root or as a user; killed at the end."""

    def __init__(self, binary: Path, n: int = 1000, user: User | None = None):
        prefix = user.prefix() if user else []
        self.proc = subprocess.Popen([*prefix, str(binary), "-n", str(n)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "READY", f"manyparked did not start: {line}"
        self.port = int(line[1])
        self.pid = self.proc.pid

    def state(self) -> str:
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            data = f.read()
        return chr(data[data.rindex(b")") + 2])

    def dump(self) -> str:
        import urllib.request
        url = f"http://127.0.0.1:{self.port}/debug/pprof/goroutine?debug=2"
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class RunningAgent:
    """`sideeye agent` in a subprocess as root, on its own socket, with its own log."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self.socket = folder / "agent.sock"
        self.log = folder / "agent.log"
        self.env = {**os.environ, "SIDEEYE_AGENT_SOCKET": str(self.socket), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_sideeye.cli.main", "agent", "--socket",
             str(self.socket), "--log", str(self.log)], env=self.env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not self.answers():
            assert self.proc.poll() is None, f"the agent exited: {self.proc.stderr.read()}"
            assert time.monotonic() < deadline, "the agent did not answer within 30 s"
            time.sleep(0.05)

    def answers(self) -> bool:
        from pytest_sideeye.agent import AgentUnavailable, health
        try:
            return health(str(self.socket))["pid"] == self.proc.pid
        except (AgentUnavailable, OSError):
            return False

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def client_env(self, user: User | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(SIDEEYE_AGENT="1", SIDEEYE_AGENT_SOCKET=str(self.socket))
        if user is not None:
            env.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name)
        return env

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def sideeye(*args: str, env: dict[str, str], user: User | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The sideeye command, as root or as `user`."""
    prefix = user.prefix() if user else []
    return subprocess.run([*prefix, sys.executable, "-m", "pytest_sideeye.cli.main", *args],
                          env=env, cwd="/", capture_output=True, text=True, timeout=timeout)
