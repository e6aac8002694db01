"""Type rules through the agent (issue 29.1): a request's capture spec is parsed by the
agent's engine as by the test process's, and the rule's marks survive its answer."""
from __future__ import annotations

import pytest
from oracle import start_app

from pytest_sideeye.agent import snapshot_via_agent
from pytest_sideeye.errors import CaptureSpecError

pytestmark = [pytest.mark.usefixtures("needs_root")]


def test_type_rules_through_the_agent(agent, go_build):
    with start_app(go_build("typerules", "1.24.11")) as app:
        snap = snapshot_via_agent([app.pid], capture={"type:main.Order": ["ID"]},
                                  socket_path=str(agent.socket))
        with pytest.raises(CaptureSpecError, match="unknown type 'main.Nope'"):
            snapshot_via_agent([app.pid], capture=["type:main.Nope"],
                               socket_path=str(agent.socket))
    [proc] = snap.processes
    assert proc.error is None
    found = {(f.function, v.of, v.value) for g in proc.goroutines for f in g.frames
             for v in f.variables if v.rule == "main.Order"}
    assert {("main.byPointer", "o", 101), ("main.byValue", "o", 102),
            ("main.start.func1", "local", 103)} <= found
