"""An unexpected exception (a bug, not bad input) reads the same with and without the
agent: one line, `sideeye: internal error: TYPE: MESSAGE (a bug: the traceback is in
PATH)`, exit code 70, the traceback in that file (the agent's own, for the agent's bug).
Without the agent it was a full Python traceback; through it, `snapshot failed: ...`.

The bug is put in by the test, as no real one is known: a sitecustomize.py on PYTHONPATH
makes the engine's collection raise, in the CLI and in a private agent alike; the target is
never paused (the fault is raised before any pause)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from agent_support import RunningAgent, sideeye

pytestmark = [pytest.mark.usefixtures("needs_root")]

FAULT = '''
import pytest_sideeye.engine.take as take

def _bug(*args, **kwargs):
    raise RuntimeError("an engine bug put in by the test")

take._snapshot_together = _bug
'''
LINE = re.compile(r"sideeye: internal error: RuntimeError: an engine bug put in by the test "
                  r"\(a bug: the traceback is in (/\S+\.txt)\)")


@pytest.fixture
def buggy(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAULT)
    return {"PYTHONPATH": str(site)}


def _one_line(r) -> Path:
    assert r.returncode == 70, (r.returncode, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    m = LINE.fullmatch(r.stderr.strip())
    assert m, r.stderr
    path = Path(m.group(1))
    text = path.read_text()
    assert text.startswith("Traceback") and "in _bug" in text, text
    path.unlink()
    return path


def test_an_engine_bug_reads_the_same_with_and_without_the_agent(buggy, tmp_path,
                                                                start_target):
    target = start_target(n=10)
    cmd = ("snapshot", "--pid", str(target.pid), "--text")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    alone = sideeye(*cmd, env={**base, **buggy, "SIDEEYE_AGENT": "0"})
    agent = RunningAgent(tmp_path / "agent", env=buggy)
    try:
        through = sideeye(*cmd, env=agent.client_env())
        json_only = sideeye("snapshot", "--pid", str(target.pid), "--json",
                            str(tmp_path / "s.json"), env=agent.client_env())
    finally:
        agent.stop()
    paths = [_one_line(r) for r in (alone, through, json_only)]
    # The same line but for the file each process wrote.
    assert (alone.stderr.replace(str(paths[0]), "P") == through.stderr.replace(str(paths[1]), "P")
            == json_only.stderr.replace(str(paths[2]), "P"))
    assert any("internal error: RuntimeError" in line for line in agent.log_lines())
    assert target.state() not in "Tt"
