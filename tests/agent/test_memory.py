"""The agent lives for weeks (issue 24): what it keeps about the binaries it has seen stays
within its byte budget (SIDEEYE_MEMO_MB), least recently used binaries dropped first, and
its health answer says what it keeps; a large snapshot's memory is given back once sent."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from agent_support import RunningAgent, Target

from pytest_sideeye.agent import health, snapshot_bytes
from pytest_sideeye.binary import analyze

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]

CAPTURE = {"main.parkedLeaf": ["i", "name", "j"]}
MB = 2**20


def snapshot(agent: RunningAgent, target: Target) -> dict:
    _body, processes = snapshot_bytes([target.pid], CAPTURE, socket_path=str(agent.socket))
    assert processes[0]["error"] is None, processes
    return health(str(agent.socket))["memo"]


def test_the_agent_keeps_binaries_within_its_budget_least_recently_used_first(
        shared_dir, go_build):
    # Three binaries that differ by their build id only (the -X names no variable).
    binaries = [go_build("manyparked", ldflags=f"-X main.build={i}") for i in range(3)]
    a, b, c = (analyze(p, need_layout=False).build_id for p in binaries)
    assert len({a, b, c}) == 3
    targets = [Target(p, n=100) for p in binaries]
    try:
        # What one binary weighs, as the agent measures it.
        first = RunningAgent(shared_dir / "agent-memo-1")
        try:
            one = snapshot(first, targets[0])
        finally:
            first.stop()
        assert one["kept"] == [a] and one["binaries"] == 1 and one["evicted"] == 0
        assert one["bytes"] > 1 * MB, one        # its analysis, DWARF and plan, measured

        # A budget for two of them: the third drops the least recently used.
        budget = f"{2.5 * one['bytes'] / MB:.3f}"
        agent = RunningAgent(shared_dir / "agent-memo-2", env={"SIDEEYE_MEMO_MB": budget})
        try:
            snapshot(agent, targets[0])
            snapshot(agent, targets[1])
            kept = snapshot(agent, targets[0])            # a is used again: b is older
            assert kept["kept"] == [b, a] and kept["evicted"] == 0
            kept = snapshot(agent, targets[2])
            assert kept["kept"] == [a, c] and kept["evicted"] == 1, kept
            assert kept["bytes"] <= kept["budget_bytes"] == int(float(budget) * MB), kept
            weighed = kept["weights"]
            kept = snapshot(agent, targets[1])            # b again: analysed again
            assert kept["kept"] == [c, b] and kept["evicted"] == 2, kept
            assert kept["bytes"] <= kept["budget_bytes"], kept
            # ... weighed as the first time, without tracing: each tracing window leaks
            # (memo.py), and the agent grew ~200 KB at every re-analysis.
            assert kept["weights"] == weighed, kept
        finally:
            agent.stop()
    finally:
        for t in targets:
            t.stop()


def test_processes_of_one_binary_share_what_the_agent_keeps(shared_dir, manyparked):
    """Each process is its own /proc/PID/exe: the analysis, probes and tables of the same
    file are kept once, however often its program is restarted."""
    agent = RunningAgent(shared_dir / "agent-memo-restarts")
    try:
        kept = []
        for _ in range(4):
            target = Target(manyparked, n=100)
            try:
                kept.append(snapshot(agent, target))
            finally:
                target.stop()
        first, last = kept[0], kept[-1]
        assert last["binaries"] == 1 and last["entries"] == first["entries"], kept
        assert last["bytes"] < first["bytes"] + 2 * MB, kept
    finally:
        agent.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_large_snapshot_s_memory_is_given_back_once_sent(shared_dir, manyparked):
    """30,000 goroutines: an answer of ~70 MB of JSON, made from several times that in
    objects. Once it is sent the agent is back near its size before (generous margin:
    half the answer's size), where it used to keep the answer until the next request."""
    agent = RunningAgent(shared_dir / "agent-memo-large")
    small, large = Target(manyparked, n=1000), Target(manyparked, n=30_000)
    try:
        for _ in range(3):
            snapshot(agent, small)
        before = rss_mb(agent.proc.pid)
        body, processes = snapshot_bytes([large.pid], CAPTURE, socket_path=str(agent.socket),
                                         timeout=300)
        assert processes[0]["error"] is None and len(body) > 32 * MB, len(body)
        # The agent gives the memory back once the answer is sent, while this client
        # already reads it: wait for that (a minute at most, on a loaded machine).
        limit = before + len(body) / MB / 2
        deadline = time.monotonic() + 60
        while (after := rss_mb(agent.proc.pid)) >= limit and time.monotonic() < deadline:
            time.sleep(0.5)
        assert after < limit, (before, after, len(body) / MB)
    finally:
        agent.stop()
        small.stop()
        large.stop()
