"""Fixtures of the capture tests."""
from __future__ import annotations

import os
import signal

import pytest
from support import GO_VERSIONS
from varzoo import Zoo, start_varzoo

from pytest_sideeye.binary import analyze


@pytest.fixture(scope="module", params=GO_VERSIONS)
def zoo(request, go_build):
    exe = str(go_build("varzoo", request.param))
    p, expected = start_varzoo(exe)
    os.kill(p.pid, signal.SIGSTOP)  # a still target, as in a snapshot
    mem = open(f"/proc/{p.pid}/mem", "rb", buffering=0)
    try:
        yield Zoo(p.pid, exe, expected, analyze(exe).debug, mem, [])
    finally:
        mem.close()
        p.kill()
        p.wait()
