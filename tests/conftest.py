"""Shared test fixtures.

Tests that need root, BPF or Docker use the `needs_root` / `needs_docker` fixtures: on a
developer machine without them they skip; under CI (the CI variable set) a missing
capability is a failure, never a skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import GOAPPS, missing


def _root_bpf_problem() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "no BTF at /sys/kernel/btf/vmlinux"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (python3-bpfcc)"
    return None


@pytest.fixture(scope="session")
def needs_root():
    problem = _root_bpf_problem()
    if problem:
        missing(problem)


def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "docker client not installed"
    r = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                       capture_output=True, text=True, timeout=20)
    return None if r.returncode == 0 else "Docker daemon not answering"


@pytest.fixture(scope="session")
def needs_docker():
    problem = _docker_problem()
    if problem:
        missing(problem)


@pytest.fixture(scope="session")
def go_build():
    """go_build(app, version=...) -> Path of a binary built from fixtures/goapps/<app>."""
    from pytest_sideeye.services import toolchains

    def _build(app: str, version: str = toolchains.default_version(), **kw) -> Path:
        if version not in toolchains.installed_versions():
            missing(f"Go {version} toolchain not installed")
        return toolchains.build(GOAPPS / app, version, **kw)

    return _build
