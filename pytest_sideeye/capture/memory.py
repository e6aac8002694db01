"""The target's memory as one capture has read it, in rounds.

The target's memory is only readable in batches (the engine reads every pending
(address, size) of every frame in one BPF pass). So decoding is a pure function of a
`Memory` cache: each pass walks the value from the cache; whatever is missing is recorded
as a request and the pass yields `PENDING` for it; after the engine feeds the bytes the
pass runs again and gets further (one pointer level per round). The final pass turns
anything still missing into a cut value. Reads of the same (address, size) are shared
by every value of a job (dedup on address and type comes from the cache).

`Limits` caps what one capture reads, `Budget` what one process may still read; a read
that will not be made is a `Cut` saying why.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass
class Limits:
    """Caps on what one capture reads; anything cut sets Variable.truncated."""
    string_bytes: int = 512
    slice_bytes: int = 512        # at least one element is always read
    map_bytes: int = 2048         # of key+value bytes; at least one entry
    pointer_depth: int = 4
    total_bytes: int = 1 << 20    # per process (share one Budget between its jobs)
    merge_gap: int = 256          # requests closer than this are read as one


class Budget:
    """Bytes still allowed to be read for one process."""

    def __init__(self, total: int):
        self.left = total

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()


@dataclass
class Cut:
    """Memory that will not be read: `why` says why (unreadable, budget, rounds, ...)."""
    addr: int
    why: str


# Synthetic addresses for composite (DW_OP_piece) variables assembled locally; this
# range is kernel space, so it never collides with a real user address.
SYNTHETIC_BASE = 0xFFFF_F000_0000_0000


class Memory:
    """What has been read from the target: disjoint sorted chunks, unreadable ranges,
    and the requests of the current pass."""

    def __init__(self, budget: Budget, merge_gap: int = 256, constant=None):
        self.budget = budget
        # The target's read-only data read from its file (binary.ReadOnlyData): string
        # literals there never change, and their pages may not be resident. Consulted
        # before anything read failed: it is what the process would have given.
        self.constant = constant
        # Leaf reads (string bytes: nothing more is read from them) of constant data wait
        # for the final pass, after the resume: the file is read outside the pause. Counted
        # per pass (FrameJob resets it) so a job knows it waits for nothing else.
        self.deferred = 0
        self.merge_gap = merge_gap
        self._starts: list[int] = []
        self._data: list[bytes] = []
        self._bad: list[tuple[int, int, str]] = []
        self._holes: list[tuple[int, int, str]] = []   # unavailable parts of synthetic data
        self._solo: set[tuple[int, int]] = set()       # parts of a failed merged read
        self.wanted: set[tuple[int, int]] = set()
        self.final = False
        self.final_why = "rounds"    # what a read missing at the end is marked as
        self._issued: dict[tuple[int, int], list[tuple[int, int]]] = {}
        # Read-only memory shared by several frames (what the BPF capture read for the
        # whole process), consulted after this frame's own.
        self.shared: "Memory | None" = None

    # --- lookups -------------------------------------------------------------------
    def read(self, addr: int, size: int, leaf: bool = False) -> bytes | _Pending | Cut:
        if size <= 0:
            return b""
        if addr == 0 or addr < 4096:
            return Cut(addr, "unreadable")
        got = self._lookup(addr, size)
        if got is None and self.shared is not None:
            got = self.shared._lookup(addr, size)
        if got is None and self.constant is not None:
            if leaf and not self.final and self.constant.covers(addr, size):
                self.deferred += 1
                return PENDING
            got = self.constant.read(addr, size)
        if got is not None:
            for lo, hi, why in self._holes:
                if addr < hi and lo < addr + size:
                    return Cut(addr, why)
            return got
        bad = self._bad + (self.shared._bad if self.shared is not None else [])
        for lo, hi, why in bad:
            if lo <= addr < hi or (addr <= lo < addr + size):
                return Cut(addr, why)
        if self.final:
            return Cut(addr, self.final_why)
        self.wanted.add((addr, size))
        return PENDING

    def _lookup(self, addr: int, size: int) -> bytes | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        start, data = self._starts[i], self._data[i]
        if addr + size <= start + len(data):
            return data[addr - start:addr - start + size]
        return None

    # --- feeding ----------------------------------------------------------------------
    def add(self, addr: int, data: bytes) -> None:
        """Insert bytes, merging with overlapping or adjacent chunks."""
        end = addr + len(data)
        i = bisect.bisect_left(self._starts, addr)
        if i > 0 and self._starts[i - 1] + len(self._data[i - 1]) >= addr:
            i -= 1
        j = i
        buf_start, buf = addr, bytearray(data)
        while j < len(self._starts) and self._starts[j] <= end:
            s, d = self._starts[j], self._data[j]
            new_start = min(buf_start, s)
            new_end = max(buf_start + len(buf), s + len(d))
            merged = bytearray(new_end - new_start)
            merged[s - new_start:s - new_start + len(d)] = d
            merged[buf_start - new_start:buf_start - new_start + len(buf)] = buf
            buf_start, buf = new_start, merged
            j += 1
        self._starts[i:j] = [buf_start]
        self._data[i:j] = [bytes(buf)]

    def add_synthetic(self, addr: int, data: bytes, holes: list[tuple[int, int, str]]) -> None:
        self.add(addr, data)
        self._holes.extend(holes)

    def mark_bad(self, addr: int, size: int, why: str) -> None:
        self._bad.append((addr, addr + size, why))

    def take_requests(self) -> list[tuple[int, int]]:
        """The current pass's wanted reads, merged when close, within the budget."""
        wanted = sorted(self.wanted)
        self.wanted = set()
        merged: list[tuple[int, int, list[tuple[int, int]]]] = []
        for a, s in wanted:
            if self._lookup(a, s) is not None:
                continue
            if merged and (a, s) not in self._solo and merged[-1][2][-1] not in self._solo \
                    and a <= merged[-1][0] + merged[-1][1] + self.merge_gap:
                ma, ms, parts = merged[-1]
                merged[-1] = (ma, max(ms, a + s - ma), parts + [(a, s)])
            else:
                merged.append((a, s, [(a, s)]))
        out = []
        for a, s, parts in merged:
            if not self.budget.take(s):
                self.mark_bad(a, s, "budget")
                continue
            self._issued[(a, s)] = parts
            out.append((a, s))
        return out

    def feed(self, results: dict[tuple[int, int], bytes | None]) -> None:
        for (a, s), data in results.items():
            parts = self._issued.pop((a, s), [(a, s)])
            if data is not None and len(data) >= s:
                self.add(a, bytes(data[:s]))
            elif len(parts) > 1:
                # One bad part spoils a merged read: ask for the parts one by one.
                self._solo.update(parts)
                self.budget.left += s
            else:
                self.mark_bad(a, s, "unreadable")


def u(b: bytes, off: int, size: int) -> int:
    return int.from_bytes(b[off:off + size], "little")


def i_(b: bytes, off: int, size: int) -> int:
    return int.from_bytes(b[off:off + size], "little", signed=True)

