"""What the tests share besides fixtures (those are in conftest.py): where things are, the
Go versions CI checks, and `missing()`, which skips locally but fails under CI.

A module of its own, not conftest.py, so that `from support import ...` means this file
whichever folder's conftest.py is loaded too.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_sideeye.binary.elf import BUILDINFO_MAGIC

ROOT = Path(__file__).resolve().parent.parent
GOAPPS = ROOT / "fixtures" / "goapps"
DATA = ROOT / "tests" / "data"
IN_CI = bool(os.environ.get("CI"))
# What a test starts (a user's pytest run above all) sees a user's plain terminal: 80
# columns, no CI variable. pytest cuts its short summary to the width, except under CI, so a
# test that reads a cut line fails here on every machine, not just in someone's terminal.
for _ci_variable in ("CI", "BUILD_NUMBER"):
    os.environ.pop(_ci_variable, None)
os.environ["COLUMNS"] = "80"
# Correctness tests of variable capture must not depend on how loaded the machine is: give
# capture a generous pause budget (the product default is 10 ms; its own test lowers it).
# (under half the guardian's 2 s hard limit on any pause, which settings enforces).
os.environ.setdefault("SIDEEYE_CAPTURE_PAUSE_MS", "900")
# The suite checks the engine in the test process, whatever agent this machine runs (the
# agent's own tests start theirs, on their own socket, and turn this back on for it).
os.environ.setdefault("SIDEEYE_AGENT", "0")
# The suite's process sees some forty binaries (fixtures x Go versions x stripped builds),
# in an order that would make the default memo budget (192 MB, for a daemon living weeks)
# re-read most of them; the memory tests set their own budgets.
os.environ.setdefault("SIDEEYE_MEMO_MB", "4096")
# The Go versions the engine is checked against in CI (installed by scripts/setup.sh).
GO_VERSIONS = ("1.21.13", "1.24.11", "1.27.3")
# Where Debian's golang-google-grpc-dev (installed by scripts/setup.sh) puts grpc-go and its
# dependencies: fixture grpcpeers builds against it with GO111MODULE=off.
GRPC_GOPATH = "/usr/share/gocode"


def missing(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"required capability missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)



def patched_go_version(binary: Path, old_version: str, new_version: str, out: Path) -> Path:
    """A copy of `binary` whose build info claims `new_version` (same length): what another
    toolchain would have written, for lack of one here. Only that string changes; the
    program still runs."""
    data = bytearray(Path(binary).read_bytes())
    start = data.find(BUILDINFO_MAGIC)
    at = data.find(old_version.encode(), start, start + 64)
    assert start >= 0 and at > 0 and len(old_version) == len(new_version)
    data[at:at + len(old_version)] = new_version.encode()
    out.write_bytes(bytes(data))
    out.chmod(0o755)
    return out
