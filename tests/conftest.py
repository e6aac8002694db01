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

ROOT = Path(__file__).resolve().parent.parent
GOAPPS = ROOT / "fixtures" / "goapps"
IN_CI = bool(os.environ.get("CI"))
# Correctness tests of variable capture must not depend on how loaded the machine is: give
# capture a generous pause budget (the product default is 10 ms; its own test lowers it).
os.environ.setdefault("SIDEEYE_CAPTURE_PAUSE_MS", "3000")
# The Go versions the engine is checked against in CI (installed by scripts/setup.sh).
GO_VERSIONS = ("1.21.13", "1.24.11", "1.27.3")


def missing(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"required capability missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


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

    def _build(app: str, version: str = toolchains.DEFAULT_GO, **kw) -> Path:
        if version not in toolchains.installed_versions():
            missing(f"Go {version} toolchain not installed")
        return toolchains.build(GOAPPS / app, version, **kw)

    return _build
