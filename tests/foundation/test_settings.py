"""Every SIDEEYE_* setting read in one place and validated: a bad value is one line naming
the variable and where it came from, never a traceback deep in the engine."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_sideeye import settings
from pytest_sideeye.errors import SideeyeError


@pytest.mark.parametrize("name, value, message", [
    ("SIDEEYE_HOOK_BUDGET_US", "abc", "SIDEEYE_HOOK_BUDGET_US='abc' (from the environment) "
                                      "is not a number"),
    ("SIDEEYE_CAPTURE_PAUSE_MS", "-1", "must be a number >= 0"),
    ("SIDEEYE_CAPTURE_PAUSE_MS", "nan", "must be a number >= 0"),
    ("SIDEEYE_STOP_HOOK", "maybe", "SIDEEYE_STOP_HOOK='maybe' (from the environment) takes 1 or 0"),
    ("SIDEEYE_CAPTURE_PAUSE_MS", "1500", "must stay under half of SIDEEYE_MAX_PAUSE_S (2 s)"),
])
def test_bad_values_are_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SideeyeError) as e:
        settings.current()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_defaults_and_switches(monkeypatch):
    for name in ("SIDEEYE_CAPTURE_PAUSE_MS", "SIDEEYE_HOOK_BUDGET_US", "SIDEEYE_STOP_HOOK",
                 "SIDEEYE_BPF_CAPTURE", "SIDEEYE_MAX_PAUSE_S", "SIDEEYE_LINKS",
                 "SIDEEYE_COLLECT_THREADS", "SIDEEYE_PREREAD", "SIDEEYE_PREREAD_MAX_MS"):
        monkeypatch.delenv(name, raising=False)
    assert settings.current() == settings.EngineSettings(
        capture_pause_s=0.01, hook_budget_ns=900_000, stop_hook=True, bpf_capture=True,
        links=True, collect_threads=len(os.sched_getaffinity(0)))
    monkeypatch.setenv("SIDEEYE_STOP_HOOK", "off")
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
    monkeypatch.setenv("SIDEEYE_LINKS", "0")
    got = settings.current()
    assert (got.stop_hook, got.bpf_capture, got.links) == (False, False, False)
    monkeypatch.setenv("SIDEEYE_COLLECT_THREADS", "2")
    assert settings.current().collect_threads == 2


def test_caches_follow_their_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("SIDEEYE_CACHE", str(tmp_path))
    monkeypatch.delenv("SIDEEYE_DWARF_CACHE", raising=False)
    assert settings.cache_dir("dwarf") == tmp_path / "dwarf"
    monkeypatch.setenv("SIDEEYE_DWARF_CACHE", str(tmp_path / "elsewhere"))
    assert settings.cache_dir("dwarf") == tmp_path / "elsewhere"


def test_the_cli_says_it_in_one_line(needs_root):
    env = dict(os.environ, SIDEEYE_HOOK_BUDGET_US="lots")
    r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", "snapshot", "--pid",
                        str(os.getpid())], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "sideeye: SIDEEYE_HOOK_BUDGET_US='lots' (from the environment) is not a number"]


@pytest.mark.parametrize("docker_host, url", [
    (None, None),
    ("unix:///var/run/docker.sock", None),
    ("tcp://127.0.0.1:2375", None),
    ("tcp://localhost:2375", None),
    ("tcp://[::1]:2376", None),
    ("tcp://10.1.2.3:2376", "https://10.1.2.3:7443"),
    ("ssh://ci@build-7.example.com", "https://build-7.example.com:7443"),
    ("tcp://[fd00::5]:2376", "https://[fd00::5]:7443"),
])
def test_the_remote_agent_follows_docker_host(monkeypatch, docker_host, url):
    """Containers on another machine (DOCKER_HOST) can only be read by the agent there."""
    monkeypatch.delenv("SIDEEYE_AGENT_URL", raising=False)
    monkeypatch.delenv("SIDEEYE_AGENT_PORT", raising=False)
    if docker_host is None:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    else:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    assert settings.agent_url() == url
    monkeypatch.setenv("SIDEEYE_AGENT_URL", "https://agent.example:9000")
    assert settings.agent_url() == "https://agent.example:9000"   # an explicit URL wins


def test_remote_docker_without_the_agent_is_refused_in_one_line(monkeypatch):
    from pytest_sideeye.agent import route
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.1.2.3:2376")
    monkeypatch.setenv("SIDEEYE_AGENT", "0")
    r = route()
    assert r.kind is None and "10.1.2.3 (DOCKER_HOST)" in r.detail and "\n" not in r.detail
    monkeypatch.setenv("SIDEEYE_AGENT", "1")
    monkeypatch.setenv("SIDEEYE_AGENT_PORT", "7000")
    assert route() == type(r)("agent", "the sideeye agent at https://10.1.2.3:7000")
