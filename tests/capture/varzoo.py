"""The capture tests' shared target: varzoo (fixtures/goapps/varzoo), stopped, read through
/proc/PID/mem (a test-only reader: the product reads through BPF). The `zoo` fixture (one
per Go version in CI) is in this folder's conftest.py."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from pytest_sideeye.binary import DebugInfo, GoType
from pytest_sideeye.capture import values
from pytest_sideeye.capture.memory import Limits

BIG = Limits(string_bytes=1 << 16, slice_bytes=1 << 16, map_bytes=1 << 20, pointer_depth=16)


@dataclass
class Zoo:
    pid: int
    exe: str
    expected: dict
    debug: DebugInfo
    mem: object
    reads: list

    def read_batch(self, reqs):
        """One 'round': read each (addr, size) from /proc/PID/mem; None when unreadable."""
        self.reads.append(list(reqs))
        out = {}
        for a, s in reqs:
            try:
                self.mem.seek(a)
                data = self.mem.read(s)
                out[(a, s)] = data if len(data) == s else None
            except (OSError, ValueError, OverflowError):
                out[(a, s)] = None
        return out

    @property
    def zoo_addr(self) -> int:
        return int(self.expected["addrs"]["zoo"], 16)

    def field_addr(self, name: str) -> tuple[GoType, int]:
        zt = self.debug.type_by_name("main.Zoo")
        f = zt.field(name)
        return f.type, self.zoo_addr + f.offset

    def decode(self, name: str, limits: Limits = BIG, max_rounds: int = 16):
        t, addr = self.field_addr(name)
        return values.read_value(self.debug, t, addr, self.read_batch, limits, max_rounds)


def start_varzoo(exe: str) -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([exe], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("VALUES "), line
        ready = p.stdout.readline()
        assert ready.startswith("READY "), ready
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p, json.loads(line[len("VALUES "):])
