"""A bad capture spec or link, or an unknown container, says the same line through the
agent as without one: the engine's own words, not prefixed `sideeye agent:` (the README's
commands must agree either way; refusals, which only the agent makes, keep the prefix)."""
from __future__ import annotations

import os
import uuid

import pytest
from agent_support import sideeye

pytestmark = [pytest.mark.usefixtures("needs_root")]


@pytest.mark.parametrize("args", [
    ("--capture", "no-colon-here"),
    ("--capture", "main.parkedLeaf:i["),
    ("--capture", "type:main.noSuchType"),
    ("--capture", "main.noSuchFunction:i"),
    ("--capture", "context:main.noSuchKey"),
    ("--link", "garbage"),
], ids=["bad-spec", "bad-expression", "unknown-type", "unknown-function",
        "unknown-context-key-type", "bad-link"])
def test_capture_errors_read_the_same_through_the_agent(agent, start_target, args):
    target = start_target(n=10)
    _same_line(agent, "snapshot", "--pid", str(target.pid), *args)
    assert target.state() not in "Tt"


def _same_line(agent, *cmd: str) -> None:
    through = sideeye(*cmd, env=agent.client_env())
    alone = sideeye(*cmd, env={**{k: v for k, v in os.environ.items()
                                 if not k.startswith("PYTEST_")}, "SIDEEYE_AGENT": "0"})
    assert (through.returncode, alone.returncode) == (2, 2), (through.stderr, alone.stderr)
    assert len(alone.stderr.splitlines()) == 1, alone.stderr
    assert through.stderr == alone.stderr


def test_an_unknown_container_reads_the_same_through_the_agent(needs_docker, agent):
    _same_line(agent, "snapshot", "--container", f"sideeye-no-such-{uuid.uuid4().hex[:8]}")
