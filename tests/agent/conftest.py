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
import subprocess
import tempfile
from pathlib import Path

import pytest
from agent_support import MEMBER, OUTSIDER, RunningAgent, Target, User
from support import missing


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


@pytest.fixture(scope="module")
def agent(needs_root, shared_dir, request):
    """A warm agent shared by a module's tests."""
    a = RunningAgent(shared_dir / f"agent-{request.module.__name__.rpartition('.')[2]}")
    yield a
    a.stop()


