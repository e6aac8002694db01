"""Warming: asked to warm a target, the agent loads its layout's programs before any
snapshot, and the snapshot that follows loads nothing more; without an agent the plugin's
warm-up loads them in its own process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agent_support import RunningAgent

from pytest_sideeye.agent import health

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]


def test_the_agent_warms_a_targets_layout_before_its_snapshot(shared_dir, start_target):
    fresh = RunningAgent(shared_dir / "agent-warm")
    target = start_target()
    try:
        assert health(str(fresh.socket))["layouts_loaded"] == 0
        env = fresh.client_env()
        code = ("import sys; from pytest_sideeye.agent import warm; warm([int(sys.argv[1])])")
        subprocess.run([sys.executable, "-c", code, str(target.pid)], env=env, check=True,
                       timeout=120)
        assert health(str(fresh.socket))["layouts_loaded"] == 1
        assert any(line.split("Z ", 1)[1].startswith("sideeye-agent: warmed for uid 0 ")
                   for line in fresh.log_lines()), fresh.log_lines()
        r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", "snapshot",
                            "--pid", str(target.pid), "--json", "/dev/stdout"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["processes"][0]["error"] is None
        assert health(str(fresh.socket))["layouts_loaded"] == 1
    finally:
        fresh.stop()


def test_without_an_agent_warm_loads_the_programs_here(start_target):
    target = start_target()
    code = ("import sys; from pytest_sideeye import agent, engine\n"
            "assert agent.route().kind == 'engine'\n"
            "assert engine.loaded_layouts() == 0\n"
            "agent.warm([int(sys.argv[1])])\n"
            "print(engine.loaded_layouts())")
    r = subprocess.run([sys.executable, "-c", code, str(target.pid)], capture_output=True,
                       text=True, timeout=120, env={**__import__("os").environ,
                                                    "SIDEEYE_AGENT": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
