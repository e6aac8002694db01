"""The agent against bad clients, each with a real agent and a real target: malformed
JSON, a 1 GB body, half a request then silence, 50 concurrent requests, a client killed
mid-snapshot, and the agent itself SIGKILLed mid-pause (the guardian resumes the target).
Whatever happens, the agent keeps answering and no target is left stopped.

The agent here reads captured frames by the Python path with a long capture budget, so a
snapshot asking for capture keeps its target paused long enough to be interrupted."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from agent_support import RunningAgent

from pytest_sideeye.agent import MAX_BODY_BYTES, QUEUE_SIZE, REQUEST_TIMEOUT_S, health

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]

SLOW_PAUSE = {"SIDEEYE_BPF_CAPTURE": "0", "SIDEEYE_CAPTURE_PAUSE_MS": "2000",
              "SIDEEYE_MAX_PAUSE_S": "30"}
CAPTURE = {"main.parkedLeaf": ["i", "name", "j", "started"]}


@pytest.fixture(scope="module")
def slow_agent(needs_root, shared_dir):
    a = RunningAgent(shared_dir / "agent-bad-clients", SLOW_PAUSE)
    yield a
    a.stop()


def raw_request(sock_path, data: bytes, *, timeout: float = 30.0) -> tuple[int, dict]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(sock_path))
    try:
        s.sendall(data)
        return read_answer(s)
    finally:
        s.close()


def read_answer(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(body: bytes) -> bytes:
    return (b"POST /v1/snapshot HTTP/1.1\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


def snapshot_body(pid: int, capture=None) -> bytes:
    return json.dumps({"targets": [{"pid": pid}], "capture": capture}).encode()


def assert_serving(agent: RunningAgent, pid: int) -> None:
    status, doc = raw_request(agent.socket, post(snapshot_body(pid)))
    assert status == 200, doc
    assert doc["processes"][0]["error"] is None


def wait_for_state(pid: int, wanted: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        if chr(data[data.rindex(b")") + 2]) in wanted:
            return True
        time.sleep(0.0005)
    return False


def test_malformed_json_is_one_line(slow_agent, start_target):
    target = start_target()
    for body, says in ((b"{not json", "malformed JSON"), (b"[1, 2]", "must be a JSON object"),
                       (b'{"targets": [{"pid": "1"}]}', "is not a positive integer"),
                       (b'{"targets": []}', "non-empty list"),
                       (b'{"targets": [{"pid": 1}], "capture": 7}', "'capture' must be"),
                       (b'{"targets": [{"pid": 1}], "code": 7}', "'code' must be")):
        status, doc = raw_request(slow_agent.socket, post(body))
        assert status == 400 and says in doc["error"] and "\n" not in doc["error"], doc
    status, doc = raw_request(slow_agent.socket, b"GARBAGE\r\n\r\n")
    assert status == 400 and doc["error"] == "malformed HTTP request line"
    assert_serving(slow_agent, target.pid)


def test_a_1_gb_body_is_refused_before_it_is_read(slow_agent, start_target):
    target = start_target()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(slow_agent.socket))
    t0 = time.monotonic()
    s.sendall(b"POST /v1/snapshot HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n")
    sent = 0
    chunk = b"x" * (1 << 20)
    # Send the gigabyte as an HTTP client does, watching for an early answer.
    while sent < 1 << 30:
        readable, writable, _ = select.select([s], [s], [], 10)
        if readable or not writable:
            break
        try:
            sent += s.send(chunk)
        except OSError:
            break   # the agent stopped reading: it will not take a gigabyte
    status, doc = read_answer(s)
    s.close()
    assert status == 413, doc
    assert doc["error"] == (f"request body of 1073741824 bytes is over the limit of "
                            f"{MAX_BODY_BYTES} bytes")
    assert sent < 1 << 30 and time.monotonic() - t0 < 10
    assert_serving(slow_agent, target.pid)


def test_half_a_request_then_silence_blocks_nobody(slow_agent, start_target):
    target = start_target()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(slow_agent.socket))
    t0 = time.monotonic()
    s.sendall(b"POST /v1/snapshot HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"targ")
    assert_serving(slow_agent, target.pid)    # others are served meanwhile
    assert time.monotonic() - t0 < REQUEST_TIMEOUT_S
    status, doc = read_answer(s)
    s.close()
    assert status == 408 and doc["error"] == f"request not complete within {REQUEST_TIMEOUT_S:g} s"
    assert REQUEST_TIMEOUT_S - 0.5 < time.monotonic() - t0 < REQUEST_TIMEOUT_S + 5


def test_50_concurrent_requests_are_served_or_told_busy(slow_agent, start_target):
    target = start_target()
    results: list = [None] * 50
    capture_every = 5   # some slow (capturing) snapshots keep the queue full

    def one(i: int) -> None:
        cap = CAPTURE if i % capture_every == 0 else None
        try:
            results[i] = raw_request(slow_agent.socket, post(snapshot_body(target.pid, cap)),
                                     timeout=120)
        except Exception as e:  # noqa: BLE001 - recorded, asserted below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert time.monotonic() - t0 < 180
    assert all(isinstance(r, tuple) for r in results), results
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= QUEUE_SIZE
    busy = [doc for status, doc in results if status == 503]
    assert busy, "50 at once should overflow a queue of 8"
    assert all(doc["error"].startswith("agent busy: ") for doc in busy)
    for status, doc in results:
        if status == 200:
            assert doc["processes"][0]["error"] is None
    assert target.state() not in "Tt"
    assert_serving(slow_agent, target.pid)


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read())
s.recv(1)
"""


def test_a_client_killed_mid_snapshot_changes_nothing_for_the_target(slow_agent, start_target):
    target = start_target()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(slow_agent.socket)],
                              stdin=subprocess.PIPE)
    client.stdin.write(post(snapshot_body(target.pid, CAPTURE)))
    client.stdin.close()
    assert wait_for_state(target.pid, "Tt", 20), "the snapshot never paused the target"
    client.kill()
    client.wait()
    assert wait_for_state(target.pid, "SR", 10), "the target stayed stopped"
    deadline = time.monotonic() + 10
    while not any(f"{target.pid} goroutines=" in line for line in slow_agent.log_lines()):
        assert time.monotonic() < deadline, slow_agent.log_lines()
        time.sleep(0.05)
    assert_serving(slow_agent, target.pid)
    assert target.state() not in "Tt"


def test_the_agent_sigkilled_mid_pause_leaves_nothing_stopped(shared_dir, start_target):
    """Only the guardian can resume the target here: the agent is dead and the capture's
    pause budget (2 s) and the hard deadline (30 s) are far away."""
    victim = RunningAgent(shared_dir / "agent-victim", SLOW_PAUSE)
    target = start_target()
    try:
        assert_serving(victim, target.pid)   # warm: the pause below is the capture's
        guardians = _guardians_of(victim.proc.pid)
        assert guardians, "the agent's guardian is not running"
        outcome: list = []
        client = threading.Thread(target=lambda: outcome.append(_outcome(
            raw_request, victim.socket, post(snapshot_body(target.pid, CAPTURE)))), daemon=True)
        client.start()
        assert wait_for_state(target.pid, "Tt", 20), "the snapshot never paused the target"
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.proc.wait()
        assert wait_for_state(target.pid, "SR", 1.5), "the target stayed stopped"
        assert time.monotonic() - killed < 1.5
        time.sleep(0.5)
        assert target.state() not in "Tt"
        client.join(10)
        assert outcome and isinstance(outcome[0], Exception), outcome  # no answer, no hang
        # The guardian exits once it has resumed what it held.
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{g}") and _is_guardian(g) for g in guardians):
            assert time.monotonic() < deadline, "the guardian outlived its job"
            time.sleep(0.05)
    finally:
        victim.stop()
    assert not victim.socket.exists() or not _answers(victim)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the dead agent's client sees an error: returned
        return e


def _answers(agent: RunningAgent) -> bool:
    try:
        health(str(agent.socket))
        return True
    except Exception:  # noqa: BLE001 - a dead agent's stale socket
        return False


def _is_guardian(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"engine/guardian.py" in f.read()
    except OSError:
        return False


def _guardians_of(parent: int) -> set[int]:
    """Pids of the resume guardians started by process `parent`."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_guardian(int(entry)):
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
                if int(data[data.rindex(b")") + 2:].split()[1]) == parent:
                    found.add(int(entry))
            except (OSError, ValueError):
                pass
    return found
