"""A value the target could read is never cut because its page is not resident: the stop
hook reads without faulting pages in, so its failed reads go to the iterator (which may
fault them in) before the resume. farpage's parameters point at a large global's far end,
never touched, and at a word of a tmpfs page the process never read (shown absent from its
page tables before the snapshot): the BPF path and the Python path give the same, full
values, the tmpfs word's known value included, which a failed read (zeros) cannot fake."""
from __future__ import annotations

import json
import time

import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye import engine

pytestmark = pytest.mark.usefixtures("needs_root")
SPEC = {"main.hold": ["p", "*p"], "main.holdWord": ["*q"]}
SHARED_VALUE = 0x5EE1DEADBEEF   # farpage's sharedValue


def values(snap) -> dict[str, object]:
    return {v.name: (v.value, v.truncated, v.available) for function in SPEC
            for _g, f in snap.frames(function) for v in f.variables}


def shared_address(app, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not any(line.startswith("SHARED ") for line in app.output):
        assert time.monotonic() < deadline, app.output
        time.sleep(0.01)
    return int(next(line for line in app.output if line.startswith("SHARED ")).split()[1])


def resident(pid: int, addr: int) -> bool:
    """The page's "present" bit in /proc/PID/pagemap (bit 63 of its 8-byte entry)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(addr // 4096 * 8)
        return bool(int.from_bytes(f.read(8), "little") >> 63)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_untouched_pages_are_read_in_full(go_build, version, monkeypatch):
    with start_app(go_build("farpage", version)) as app:
        q = shared_address(app)
        # The stop hook's read of *q must fail: the BPF value can only come from the redo.
        assert not resident(app.pid, q)
        bpf = values(engine.take_snapshot([app.pid], capture=SPEC))
        monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
        python = values(engine.take_snapshot([app.pid], capture=SPEC))
    assert bpf == python
    assert bpf["*p"] == (0, False, True)
    assert bpf["*q"] == (SHARED_VALUE, False, True)
    assert "$cut" not in json.dumps(bpf)
