"""An agent answers with the code it started with. It states that code (a digest of the
package's files) in its health document, a snapshot asked by a caller running other code
says so in a note, and the set-up restarts an agent that is not current (it would
otherwise serve an earlier clone's or version's code for weeks)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT

from pytest_sideeye.agent import client, health, snapshot_via_agent
from pytest_sideeye.agent.identity import code_id, code_id_of

OTHER_CODE = "taken by a sideeye agent running other pytest-sideeye code"


def _copy_of_the_code(dest, change: str | None = None):
    """The package and its C under `dest`, with `change` appended to one module."""
    shutil.copytree(ROOT / "pytest_sideeye", dest / "pytest_sideeye",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "bpf", dest / "bpf")
    if change is not None:
        with open(dest / "pytest_sideeye" / "errors.py", "a") as f:
            f.write(change)
    return dest


def test_the_code_id_is_the_files_content_wherever_installed(tmp_path):
    same = _copy_of_the_code(tmp_path / "same")
    other = _copy_of_the_code(tmp_path / "other", change="# one more comment\n")
    assert code_id_of(same / "pytest_sideeye", same / "bpf") == code_id()
    assert code_id_of(other / "pytest_sideeye", other / "bpf") != code_id()
    (same / "bpf" / "snapshot.bpf.c").write_text("// other C\n")
    assert code_id_of(same / "pytest_sideeye", same / "bpf") != code_id()


def test_a_caller_running_other_code_is_told_in_a_note(agent, start_target, monkeypatch):
    assert health(str(agent.socket))["code"] == code_id()
    target = start_target(50)
    same = snapshot_via_agent([target.pid], socket_path=str(agent.socket))
    assert not any(OTHER_CODE in n for p in same.processes for n in p.notes)
    monkeypatch.setattr(client, "code_id", lambda: "0123456789abcdef")
    other = snapshot_via_agent([target.pid], socket_path=str(agent.socket))
    [proc] = other.processes
    assert proc.error is None and proc.goroutines
    [note] = [n for n in proc.notes if OTHER_CODE in n]
    assert f"agent {code_id()}" in note and "caller 0123456789abcdef" in note


@pytest.mark.slow
def test_setup_restarts_an_agent_running_other_code(needs_root, needs_docker, shared_dir,
                                                    tmp_path):
    """An agent started from a changed copy of the package is replaced by this checkout's."""
    copy = _copy_of_the_code(tmp_path / "older", change="# an older release\n")
    folder = shared_dir / "identity-agent"
    folder.mkdir()
    sock = folder / "agent.sock"
    older = subprocess.Popen([sys.executable, "-m", "pytest_sideeye.cli.main", "agent",
                              "--socket", str(sock), "--log", str(folder / "older.log")],
                             cwd=copy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(copy)})
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() or _pid(sock) != older.pid:
            assert older.poll() is None and time.monotonic() < deadline, "no older agent"
            time.sleep(0.1)
        assert health(str(sock))["code"] != code_id()
        done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True,
                              text=True, timeout=600,
                              env={**os.environ, "SIDEEYE_AGENT_SOCKET": str(sock)})
        assert done.returncode == 0, done.stderr
        assert f"restarting the sideeye agent (pid {older.pid})" in done.stderr
        assert older.wait(timeout=10) is not None
        doc = health(str(sock))
        assert doc["code"] == code_id() and doc["pid"] != older.pid
    finally:
        if older.poll() is None:
            older.kill()
        pid = _pid(sock)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


def _pid(sock) -> int | None:
    try:
        return health(str(sock))["pid"]
    except Exception:  # noqa: BLE001 - nothing answers (yet, or any more)
        return None
