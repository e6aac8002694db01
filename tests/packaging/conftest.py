"""Fixtures of the packaging tests: the wheel built from this checkout, installed into a
virtualenv of its own (one build and one install per module)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT

# What the build reads (pyproject.toml names the rest): the checkout is copied without
# .git, virtualenvs and earlier builds, so a stale build/ or egg-info cannot leak into the
# wheel and the build leaves nothing in the checkout.
_NOT_BUILD_INPUT = shutil.ignore_patterns(".git", ".venv", ".tox", "build", "*.egg-info",
                                          "__pycache__", ".pytest_cache", "sideeye-reports",
                                          "bin")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def sideeye(self) -> Path:
        return self.venv / "bin" / "sideeye"

    def env(self, home: Path) -> dict[str, str]:
        """A clean environment: no PYTHONPATH or SIDEEYE_* of the test run (which point at
        the checkout), a fresh HOME (a cold disk cache), no pinned programs to reuse, and
        no agent (it runs the checkout's code): the installed package does it all."""
        import os
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "SIDEEYE_")) and k != "VIRTUAL_ENV"}
        env.update(HOME=str(home), PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                   SIDEEYE_AGENT="0", SIDEEYE_BPF_PINS="0")
        return env


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n" \
                              f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """`pip wheel` of the checkout, installed with --no-deps into a fresh virtualenv.

    The virtualenv sees the system site-packages (bcc comes from Debian's python3-bpfcc)
    and, through a .pth line, the test run's site-packages for the other dependencies
    (pyelftools, jinja2, docker: --no-deps installs none). A plain path line in a .pth
    file adds the folder without running the .pth files in it, so the checkout's editable
    install there is not activated: the wheel's copy is the one imported (checked)."""
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_BUILD_INPUT)
    dist = top / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", dist, source], cwd=top)
    wheels = list(dist.glob("pytest_sideeye-*.whl"))
    assert len(wheels) == 1, f"pip wheel made {wheels}"

    venv = top / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = Path(_run([venv / "bin" / "python", "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=top).stdout.strip())
    (site / "sideeye-test-dependencies.pth").write_text(f"{purelib}\n")
    inst = Installed(wheels[0], venv)
    home = top / "home"
    home.mkdir()
    _run([inst.python, "-m", "pip", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheels[0]], cwd=top, env=inst.env(home))
    return inst
