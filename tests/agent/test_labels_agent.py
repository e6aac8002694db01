"""pprof labels and context rules through the agent: the agent's engine reads them as the
test process's does, and they survive its answer (the document's goroutines carry them)."""
from __future__ import annotations

import json

import pytest
from oracle import start_app

from pytest_sideeye.agent import snapshot_via_agent

pytestmark = [pytest.mark.usefixtures("needs_root")]


def test_labels_through_the_agent(agent, go_build, tmp_path):
    out = tmp_path / "labels.json"
    with start_app(go_build("ctxzoo", "1.24.11"), "-out", str(out)) as app:
        expected = json.loads(out.read_text())
        snap = snapshot_via_agent([app.pid], socket_path=str(agent.socket))
    [proc] = snap.processes
    assert proc.error is None
    assert {str(g.id): g.labels for g in proc.goroutines if g.labels} == expected["labels"]


def test_context_rules_through_the_agent(agent, go_build, tmp_path):
    out = tmp_path / "seen.json"
    with start_app(go_build("ctxzoo", "1.27.3"), "-out", str(out)) as app:
        expected = json.loads(out.read_text())["contexts"]
        snap = snapshot_via_agent([app.pid], capture=["context:main.userKey"],
                                  socket_path=str(agent.socket))
    by_id = {g.id: g for g in snap.processes[0].goroutines}
    for gid, want in expected.items():
        frame = next(f for f in by_id[int(gid)].frames if f.function == want["function"])
        got = {v.name: v.value for v in frame.variables}
        assert got.get("ctx[main.userKey]") == want["values"].get("main.userKey")
        assert got["ctx.Err()"] == want["err"]
