"""Together mode with the pre-read through the agent: the caller's SIDEEYE_TOGETHER travels
with its request, and the agent pre-reads the four processes of one program into slots of
their own before its one stop (tests/preread_together.py; this process's own route:
tests/engine/test_preread_together.py)."""
from __future__ import annotations

import pytest
from preread_together import (
                              CAPTURE,
                              check_preread,
                              four_of_one_binary,
                              snapshot_checked,
)

from pytest_sideeye.agent import snapshot_via_agent

pytestmark = pytest.mark.usefixtures("needs_root")


def test_the_agent_pre_reads_processes_of_one_program_into_their_own_slots(
        agent, go_build, monkeypatch):
    monkeypatch.setenv("SIDEEYE_TOGETHER", "1")
    monkeypatch.setenv("SIDEEYE_PREREAD", "1")
    with four_of_one_binary(go_build("manyparked")) as apps:
        pids = [a.pid for a in apps]
        snapshot_via_agent(pids, CAPTURE, socket_path=str(agent.socket))   # warm the agent
        procs = snapshot_checked(apps, lambda: snapshot_via_agent(
            pids, CAPTURE, socket_path=str(agent.socket)))
    check_preread(procs)
