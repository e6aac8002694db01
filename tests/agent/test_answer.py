"""The agent's snapshot answer: the document, and a summary header naming each process's
pid and error, so that `sideeye snapshot --json` stores the document without parsing it
and still reports each process that failed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agent_support import sideeye

from pytest_sideeye.agent import snapshot_bytes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_summary_header_agrees_with_the_document(agent, start_target):
    target, dead = start_target(n=50), _dead_pid()
    body, processes = snapshot_bytes([target.pid, dead], socket_path=str(agent.socket))
    doc = json.loads(body)
    assert processes == [{"pid": p["pid"], "error": p["error"]} for p in doc["processes"]]
    assert [p["pid"] for p in processes] == [target.pid, dead]
    assert processes[0]["error"] is None and processes[1]["error"]


def test_cli_json_stores_the_answer_and_names_each_failure(agent, start_target, tmp_path):
    target, dead = start_target(n=50), _dead_pid()
    out = tmp_path / "s.json"
    r = sideeye("snapshot", "--pid", str(target.pid), "--pid", str(dead), "--json", str(out),
                env=agent.client_env())
    assert r.returncode == 0, r.stderr      # one of the two was taken
    doc = json.loads(out.read_text())
    error = doc["processes"][1]["error"]
    assert r.stderr.splitlines() == [f"sideeye: pid {dead}: {error}"]
    assert len(doc["processes"][0]["goroutines"]) > 50
    only_dead = sideeye("snapshot", "--pid", str(dead), "--json", str(out),
                        env=agent.client_env())
    assert only_dead.returncode == 2 and only_dead.stderr.startswith(f"sideeye: pid {dead}: ")
