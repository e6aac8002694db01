"""The agent's tests: a real `sideeye agent` (a subprocess, as root) on a socket of the
test's own, real users the tests create (useradd: one in the docker and sideeye groups,
one in neither), real targets (fixtures/goapps/manyparked) started as either user.

Users are made once per session and removed after it (only those this session created).
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, missing

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


def _ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)


@pytest.fixture(scope="session")
def shared_dir():
    """A folder every test user may read (the sockets, the copied targets, their homes)."""
    path = Path(tempfile.mkdtemp(prefix="sideeye-agent-tests-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def users(needs_root, shared_dir):
    """{"member": User in docker+sideeye, "outsider": User in neither}."""
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        missing("useradd/setpriv not installed")
    _ensure_group("sideeye")
    _ensure_group("docker")
    made = []
    out = {}
    for role, name, groups in (("member", MEMBER, "docker,sideeye"), ("outsider", OUTSIDER, "")):
        try:
            pwd.getpwnam(name)
        except KeyError:
            cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
            subprocess.run([*cmd, *(["--groups", groups] if groups else []), name], check=True)
            made.append(name)
        if groups:
            subprocess.run(["usermod", "-aG", groups, name], check=True)
        pw = pwd.getpwnam(name)
        home = shared_dir / f"home-{name}"
        home.mkdir(exist_ok=True)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        out[role] = User(name, pw.pw_uid, pw.pw_gid, home)
    yield out
    for name in made:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture(scope="session")
def manyparked(go_build, shared_dir) -> Path:
    """The manyparked binary where every user may run it."""
    built = go_build("manyparked")
    dest = shared_dir / "manyparked"
    shutil.copy(built, dest)
    dest.chmod(0o755)
    return dest


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


@pytest.fixture
def start_target(manyparked):
    started: list[Target] = []

    def start(n: int = 1000, user: User | None = None) -> Target:
        t = Target(manyparked, n, user)
        started.append(t)
        return t

    yield start
    for t in started:
        state = t.state() if t.proc.poll() is None else "gone"
        t.stop()
        assert state not in ("T", "t"), f"target {t.pid} left stopped"


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


@pytest.fixture(scope="module")
def agent(needs_root, shared_dir, request):
    """A warm agent shared by a module's tests."""
    a = RunningAgent(shared_dir / f"agent-{request.module.__name__.rpartition('.')[2]}")
    yield a
    a.stop()


def sideeye(*args: str, env: dict[str, str], user: User | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The sideeye command, as root or as `user`."""
    prefix = user.prefix() if user else []
    return subprocess.run([*prefix, sys.executable, "-m", "pytest_sideeye.cli.main", *args],
                          env=env, cwd="/", capture_output=True, text=True, timeout=timeout)
