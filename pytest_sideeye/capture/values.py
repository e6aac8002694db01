"""Decoding typed Go values from target memory, in rounds: one `ValueDecoder` pass walks
a value through a memory.Memory cache, yielding PENDING for what is not read yet.

JSON mapping (what `snapshot.Variable.value` holds):

- bool -> true/false; ints/uints -> numbers; floats -> numbers, NaN/+Inf/-Inf as the
  strings "NaN", "+Inf", "-Inf"; complex -> [real, imag].
- string -> a JSON string when the bytes are valid UTF-8 (NUL bytes included: JSON
  escapes them as \\u0000, so they round-trip exactly); otherwise
  {"$b64": <base64 of the exact bytes>, "$text": <the bytes with U+FFFD for bad ones>}.
  A string cut by the limit keeps its first bytes (never splitting a UTF-8 character).
- pointer -> the pointee's value; nil -> null. A pointer that is not followed is
  {"$ptr": "0x...", "$cut": why} with why one of "cycle" (already on the path),
  "depth" (pointer depth limit), "unreadable" (bad address), "budget" (per-process byte
  budget spent), "rounds" (no read round left).
- struct -> object of fields in declaration order (embedded fields under their type name).
  A field of a variable that is partly in registers at the PC is {"$cut": "in a register"}.
- array, slice -> list (nil slice -> null); cut to the element limit.
- map with string keys -> object, always (a key that could not be read is a "$cut:..."
  key: mapkeys.py); other keys -> list of [key, value]; nil -> null. Entry order is the
  map's internal order. Cut to the entry limit.
- interface -> its dynamic value (nil -> null); the top-level Variable.type reads
  "<static> = <dynamic>", e.g. "error = *main.myErr"; a nested interface is just its value.
- chan -> {"len", "cap", "closed", "items": buffered values oldest first}; nil -> null.
- func -> the target function's name ("main.double", "main.main.func1"); nil -> null.
- unsafe.Pointer, uintptr -> "0x..." hex strings.
- time.Time -> RFC 3339 with nanoseconds, as Go's Format(time.RFC3339Nano) prints it;
  time.Duration -> Go's Duration.String(), e.g. "1.5s".
- Keys starting with "$" never clash with Go struct fields (Go field names cannot
  contain "$"), so a report can recognise the special objects above safely.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from pytest_sideeye.binary import DebugInfo, GoType
from pytest_sideeye.capture.gostrings import go_string, trim_partial_utf8
from pytest_sideeye.capture.gotime import TimeReader, go_duration
from pytest_sideeye.capture.interfaces import InterfaceReader
from pytest_sideeye.capture.maps import MapReader
from pytest_sideeye.capture.memory import PENDING, Budget, Cut, Limits, Memory, i_, u


class ValueDecoder(InterfaceReader, MapReader, TimeReader):
    """One decoding pass over a Memory (re-run each round). Interfaces, maps and
    time.Time are read by the mixins of their own modules."""

    def __init__(self, debug: DebugInfo, mem: Memory, limits: Limits, bias: int = 0):
        self.b = debug
        self.bias = bias  # load bias of a PIE target: runtime address - link-time address
        self.mem = mem
        self.limits = limits
        self.truncated = False
        self.errors: list[str] = []
        self.pending = False
        self._path: set[tuple[int, int]] = set()

    # --- helpers --------------------------------------------------------------------
    def _cut(self, c: Cut) -> dict:
        self.truncated = True
        if c.why == "unreadable":
            self.errors.append(f"cannot read memory at {c.addr:#x}")
        return {"$ptr": f"{c.addr:#x}", "$cut": c.why}

    def read(self, addr: int, size: int, leaf: bool = False):
        r = self.mem.read(addr, size, leaf)
        if r is PENDING:
            self.pending = True
        return r

    # --- entry points ------------------------------------------------------------------
    def at(self, t: GoType, addr: int, depth: int = 0):
        """The value of type t stored at addr."""
        size = max(t.size, 0)
        raw = self.read(addr, size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        return self.value(t, raw, 0, addr, depth)

    def value(self, t: GoType, b: bytes, off: int, addr: int, depth: int = 0):
        """The value of type t whose bytes are b[off:off+t.size] (at target address addr)."""
        k = t.kind
        if k == "bool":
            return b[off] != 0
        if k == "int":
            v = i_(b, off, t.size)
            return go_duration(v) if t.name == "time.Duration" else v
        if k == "uint":
            return u(b, off, t.size)
        if k in ("uintptr", "unsafeptr"):
            return f"{u(b, off, 8):#x}"
        if k == "float":
            return _float(struct.unpack_from("<f" if t.size == 4 else "<d", b, off)[0])
        if k == "complex":
            fmt, half = ("<ff", 4) if t.size == 8 else ("<dd", 8)
            re_, im = struct.unpack_from(fmt, b, off)
            return [_float(re_), _float(im)]
        if k == "string":
            return self.string(u(b, off, 8), i_(b, off + 8, 8))
        if k == "ptr":
            return self.pointer(t, u(b, off, 8), depth)
        if k == "struct":
            if t.name == "time.Time":
                return self.time(t, b, off)
            return {f.name: self.value(f.type, b, off + f.offset, addr + f.offset, depth)
                    for f in t.fields}
        if k == "array":
            return self.array(t, b, off, addr, depth)
        if k == "slice":
            return self.slice(t, b, off, depth)
        if k == "map":
            return self.map(t, u(b, off, 8), depth)
        if k == "chan":
            return self.chan(t, u(b, off, 8), depth)
        if k in ("iface", "eface"):
            return self.interface(t, b, off, addr, depth)[1]
        if k == "func":
            return self.func(u(b, off, 8))
        return None

    # --- kinds --------------------------------------------------------------------------
    def string(self, ptr: int, n: int):
        if n == 0:
            return ""
        if n < 0 or n > 1 << 40:
            self.errors.append(f"bad string length {n}")
            self.truncated = True
            return {"$ptr": f"{ptr:#x}", "$cut": "bad length"}
        want = min(n, self.limits.string_bytes)
        raw = self.read(ptr, want, leaf=True)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        if want < n:
            self.truncated = True
            raw = trim_partial_utf8(raw)
        return go_string(raw)

    def pointer(self, t: GoType, ptr: int, depth: int):
        if ptr == 0:
            return None
        if t.elem is None or t.elem.kind == "void" or t.elem.size == 0 and t.elem.kind != "struct":
            return f"{ptr:#x}"
        key = (ptr, t.elem.offset)
        if key in self._path:  # nothing is lost: the value is already on the path
            return {"$ptr": f"{ptr:#x}", "$cut": "cycle"}
        if depth >= self.limits.pointer_depth:
            self.truncated = True
            return {"$ptr": f"{ptr:#x}", "$cut": "depth"}
        self._path.add(key)
        try:
            return self.at(t.elem, ptr, depth + 1)
        finally:
            self._path.discard(key)

    def _elements(self, elem: GoType, base: bytes, boff: int, addr: int, count: int, depth: int):
        # Decode every element even after a pending one: each pass must collect all the
        # reads it can, or a round would be spent per element.
        out = [self.value(elem, base, boff + i * elem.size, addr + i * elem.size, depth)
               for i in range(count)]
        return PENDING if any(v is PENDING for v in out) else out

    def _element_limit(self, elem: GoType) -> int:
        return max(1, self.limits.slice_bytes // max(elem.size, 1))

    def array(self, t: GoType, b: bytes, off: int, addr: int, depth: int):
        n = t.count
        keep = min(n, self._element_limit(t.elem))
        if keep < n:
            self.truncated = True
        return self._elements(t.elem, b, off, addr, keep, depth)

    def slice(self, t: GoType, b: bytes, off: int, depth: int):
        ptr, n = u(b, off, 8), i_(b, off + 8, 8)
        if ptr == 0:
            return None
        if n <= 0 or t.elem is None:
            return []
        keep = min(n, self._element_limit(t.elem))
        if keep < n:
            self.truncated = True
        raw = self.read(ptr, keep * t.elem.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        return self._elements(t.elem, raw, 0, ptr, keep, depth)

    def func(self, ptr: int):
        if ptr == 0:
            return None
        raw = self.read(ptr, 8)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        pc = u(raw, 0, 8)
        return self.b.function_at(pc - self.bias) or f"{pc:#x}"


    # --- channels ---------------------------------------------------------------------
    def chan(self, t: GoType, ptr: int, depth: int):
        if ptr == 0:
            return None
        h = t.impl
        if h is None:
            return f"{ptr:#x}"
        raw = self.read(ptr, h.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        f = {x.name: u(raw, x.offset, x.type.size) for x in h.fields if x.type.kind in
             ("uint", "int", "unsafeptr", "uintptr", "bool")}
        qcount, cap_, buf = f.get("qcount", 0), f.get("dataqsiz", 0), f.get("buf", 0)
        out = {"len": qcount, "cap": cap_, "closed": bool(f.get("closed", 0)), "items": []}
        elem = t.elem
        if qcount and cap_ and elem is not None and elem.size and buf:
            keep = min(qcount, self._element_limit(elem))
            if keep < qcount:
                self.truncated = True
            whole = self.read(buf, cap_ * elem.size) if cap_ * elem.size <= \
                4 * self.limits.slice_bytes + elem.size else None
            if whole is None:
                self.truncated = True
                return out
            if whole is PENDING:
                return PENDING
            if isinstance(whole, Cut):
                out["items"] = self._cut(whole)
                return out
            recvx = f.get("recvx", 0)
            slots = [(recvx + i) % cap_ for i in range(keep)]
            items = [self.value(elem, whole, j * elem.size, buf + j * elem.size, depth)
                     for j in slots]
            if any(v is PENDING for v in items):
                return PENDING
            out["items"] = items
        return out


def _float(f: float):
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return f


@dataclass
class Decoded:
    value: object
    truncated: bool
    errors: list[str]
    rounds: int


def read_value(debug: DebugInfo, t: GoType, addr: int, read_batch, limits: Limits | None = None,
               max_rounds: int = 8, bias: int = 0) -> Decoded:
    """Decode one value at a known address, reading in rounds through `read_batch`
    (list of (addr, size) -> {(addr, size): bytes | None}). Used for globals and tests."""
    limits = limits or Limits()
    mem = Memory(Budget(limits.total_bytes), limits.merge_gap)
    rounds = 0
    while True:
        dec = ValueDecoder(debug, mem, limits, bias)
        value = dec.at(t, addr)
        if not dec.pending:
            return Decoded(value, dec.truncated, dec.errors, rounds)
        reqs = mem.take_requests()
        if rounds >= max_rounds or not reqs:
            mem.final = True
            mem.wanted.clear()
            continue
        mem.feed(read_batch(reqs))
        rounds += 1
