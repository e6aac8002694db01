"""`sideeye doctor` as an ordinary member of the sideeye group, as the README's user runs
it: with an agent every in-process check is "not needed here" (the stop hook's too: what
the agent's pauses are like is the agent's), and nothing but the table reaches the
terminal (bcc printed "could not open bpf map: seen, error: Operation not permitted"
twice under it, from the trial loads)."""
from __future__ import annotations

import pytest
from agent_support import sideeye
from support import ROOT

pytestmark = [pytest.mark.usefixtures("needs_root")]


def _lines(r) -> dict[str, str]:
    return {line.split()[1]: line for line in r.stdout.splitlines()[:-1]}


def test_doctor_as_a_member_with_the_agent(agent, users):
    member = users["member"]
    r = sideeye("doctor", "privileges", "engine", "stop-hook", "agent",
                env=agent.client_env(member), user=member)
    assert r.stderr == "", r.stderr
    assert r.returncode == 0, r.stdout
    lines = _lines(r)
    assert lines["stop-hook"].startswith("ok    stop-hook   not needed here ("), lines
    assert "twice as long" not in lines["stop-hook"]
    assert lines["engine"].startswith("ok    engine      not needed here ("), lines


def test_doctor_as_a_member_without_an_agent(agent, users):
    member = users["member"]
    r = sideeye("doctor", "engine", "stop-hook", "agent",
                env={**agent.client_env(member), "SIDEEYE_AGENT": "0"}, user=member)
    assert r.stderr == "", r.stderr
    assert r.returncode == 1, r.stdout
    lines = _lines(r)
    # bcc's own reason, which it printed to the terminal, is in the line instead.
    assert lines["engine"].startswith("FAIL  engine ") and "Operation not permitted" in \
        lines["engine"], lines["engine"]
    unit = lines["agent"].split("the systemd unit ", 1)[1].split(")", 1)[0]
    assert (ROOT / unit).is_file(), lines["agent"]
