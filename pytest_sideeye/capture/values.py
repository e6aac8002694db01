"""Decoding typed Go values from target memory, in rounds.

The target's memory is only readable in batches (the engine reads every pending
(address, size) of every frame in one BPF pass). So decoding is a pure function of a
`Memory` cache: each pass walks the value from the cache; whatever is missing is recorded
as a request and the pass yields `PENDING` for it; after the engine feeds the bytes the
pass runs again and gets further (one pointer level per round). The final pass turns
anything still missing into a cut value. Reads of the same (address, size) are shared
by every value of a job (dedup on address and type comes from the cache).

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

import base64
import bisect
import datetime as _dt
import math
import re
import struct
from dataclasses import dataclass

from pytest_sideeye.binary import DebugInfo, GoType
from pytest_sideeye.capture.mapkeys import string_keyed


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


class ValueDecoder:
    """One decoding pass over a Memory (re-run each round)."""

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
            raw = _trim_partial_utf8(raw)
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

    # --- interfaces ----------------------------------------------------------------------
    def dynamic_type(self, t: GoType, b: bytes, off: int):
        """(dynamic GoType | None | PENDING | Cut, data word) of an interface value."""
        word0, data = u(b, off, 8), u(b, off + 8, 8)
        if word0 == 0:
            return None, data
        rtype = word0
        if t.kind == "iface":
            raw = self.read(word0 + 8, 8)   # itab.Type / itab._type: second word
            if raw is PENDING or isinstance(raw, Cut):
                return raw, data
            rtype = u(raw, 0, 8)
        dyn = self.b.type_by_runtime_addr(rtype - self.bias)
        if dyn is None:
            return Cut(rtype, "unknown dynamic type"), data
        return dyn, data

    def interface(self, t: GoType, b: bytes, off: int, addr: int, depth: int):
        """(dynamic type name or None, value)."""
        dyn, data = self.dynamic_type(t, b, off)
        if dyn is None:
            return None, None
        if dyn is PENDING:
            return None, PENDING
        if isinstance(dyn, Cut):
            self.errors.append(f"unknown dynamic type at {dyn.addr:#x}")
            self.truncated = True
            return None, {"$ptr": f"{data:#x}", "$cut": dyn.why}
        if is_direct_iface(dyn):
            return dyn.name, self.value(dyn, b, off + 8, addr + 8, depth)
        return dyn.name, self.at(dyn, data, depth)

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

    # --- maps -------------------------------------------------------------------------
    def map(self, t: GoType, ptr: int, depth: int):
        if ptr == 0:
            return None
        entries = self.map_entries(t, ptr)
        if entries is PENDING:
            return PENDING
        if isinstance(entries, dict):
            return entries
        pairs = [(self.value(kt, kb, koff, kaddr, depth), self.value(vt, vb, voff, vaddr, depth))
                 for kt, kb, koff, kaddr, vt, vb, voff, vaddr in entries]
        if any(k is PENDING or v is PENDING for k, v in pairs):
            return PENDING
        if t.key is not None and t.key.kind == "string":
            return string_keyed(pairs)
        return [[k, v] for k, v in pairs]

    def map_entries(self, t: GoType, ptr: int, limit: int | None = None):
        """Entries as (ktype, kbytes, koff, kaddr, vtype, vbytes, voff, vaddr); PENDING;
        or a cut dict. At most `limit` entries (default: the map limit)."""
        h = t.impl
        if h is None:
            return {"$ptr": f"{ptr:#x}", "$cut": "unknown map layout"}
        raw = self.read(ptr, h.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        if h.field("buckets") is not None:
            return self._classic_entries(h, raw, limit)
        if h.field("dirPtr") is not None:
            return self._swiss_entries(h, raw, limit)
        return {"$ptr": f"{ptr:#x}", "$cut": "unknown map layout"}

    def _entry_limit(self, kt: GoType, vt: GoType) -> int:
        return max(1, self.limits.map_bytes // max(kt.size + vt.size, 1))

    def _blocks(self, addr: int, size: int):
        """A map's buckets or groups read at once: bytes, PENDING, or None when cut (the
        cut is recorded)."""
        blob = self.read(addr, size)
        if isinstance(blob, Cut):
            self._cut(blob)
            return None
        return blob

    def _classic_entries(self, h: GoType, raw: bytes, limit: int | None):
        """Go <= 1.23: hmap with 2^B buckets of 8 slots, overflow chains, maybe growing."""
        count = u(raw, h.field("count").offset, 8)
        B = u(raw, h.field("B").offset, 1)
        flags = u(raw, h.field("flags").offset, 1)
        bucket_t = h.field("buckets").type.elem
        buckets = u(raw, h.field("buckets").offset, 8)
        old = u(raw, h.field("oldbuckets").offset, 8)
        keys_f, vals_f = bucket_t.field("keys"), bucket_t.field("values") or bucket_t.field("elems")
        kt, vt = keys_f.type.elem, vals_f.type.elem
        limit = limit or self._entry_limit(kt, vt)
        out: list = []
        groups = [(buckets, 1 << B)]
        if old:
            same_size = flags & 8
            groups.append((old, (1 << B) if same_size else max(1, 1 << max(B - 1, 0))))
        pending = False
        for base, n in groups:
            # Enough buckets for the entry limit at average load, in one read.
            n_read = min(n, max(1, (limit * 2 + 7) // 8))
            if n_read < n:
                self.truncated = True
            blob = self._blocks(base, n_read * bucket_t.size)
            if blob is None or blob is PENDING:
                pending = pending or blob is PENDING
                continue
            for i in range(n_read):
                r = self._bucket_chain(bucket_t, blob, i * bucket_t.size, base + i * bucket_t.size,
                                       kt, vt, keys_f, vals_f, out, limit)
                pending = pending or r
                if len(out) >= limit:
                    break
        if pending:
            return PENDING
        if len(out) < count:
            self.truncated = True
        return out[:limit]

    def _bucket_chain(self, bt, blob, off, addr, kt, vt, keys_f, vals_f, out, limit) -> bool:
        """Collect a bucket's live entries and follow its overflow chain; True if pending."""
        for _hop in range(64):
            for j in range(8):
                top = blob[off + j]
                if top >= 5:  # minTopHash: below are empty / evacuated markers
                    out.append((kt, blob, off + keys_f.offset + j * kt.size,
                                addr + keys_f.offset + j * kt.size,
                                vt, blob, off + vals_f.offset + j * vt.size,
                                addr + vals_f.offset + j * vt.size))
            ovf = u(blob, off + bt.field("overflow").offset, 8)
            if not ovf or len(out) >= limit:
                return False
            nxt = self.read(ovf, bt.size)
            if nxt is PENDING:
                return True
            if isinstance(nxt, Cut):
                self._cut(nxt)
                return False
            blob, off, addr = nxt, 0, ovf
        return False

    def _swiss_entries(self, h: GoType, raw: bytes, limit: int | None):
        """Go >= 1.24 swiss tables: a directory of tables of 8-slot groups with a control
        word; with dirLen == 0 the directory pointer is one group (a small map)."""
        used = u(raw, h.field("used").offset, 8)
        dir_ptr = u(raw, h.field("dirPtr").offset, 8)
        dir_len = i_(raw, h.field("dirLen").offset, 8)
        table_t = h.field("dirPtr").type.elem.elem
        gref = table_t.field("groups")
        group_t = gref.type.field("data").type.elem
        slots_f = group_t.field("slots")
        slot_t = slots_f.type.elem
        kf, vf = slot_t.field("key"), slot_t.field("elem")
        limit = limit or self._entry_limit(kf.type, vf.type)
        out: list = []
        if used == 0 or dir_ptr == 0:
            return out
        if dir_len == 0:
            g = self.read(dir_ptr, group_t.size)
            if g is PENDING:
                return PENDING
            if isinstance(g, Cut):
                return self._cut(g)
            self._group(group_t, slots_f, slot_t, kf, vf, g, 0, dir_ptr, out)
            if len(out) > limit:
                self.truncated = True
            return out[:limit]
        d = self.read(dir_ptr, 8 * min(dir_len, 1 << 16))
        if d is PENDING:
            return PENDING
        if isinstance(d, Cut):
            return self._cut(d)
        tables = list(dict.fromkeys(u(d, 8 * i, 8) for i in range(min(dir_len, 1 << 16))))
        pending = False
        for tp in tables:
            if len(out) >= limit:
                break
            tr = self.read(tp, table_t.size)
            if tr is PENDING:
                pending = True
                continue
            if isinstance(tr, Cut):
                self._cut(tr)
                continue
            data = u(tr, gref.offset + gref.type.field("data").offset, 8)
            mask = u(tr, gref.offset + gref.type.field("lengthMask").offset, 8)
            ngroups = mask + 1
            n_read = min(ngroups, max(1, (limit * 2 + 7) // 8))
            blob = self._blocks(data, n_read * group_t.size)
            if blob is None or blob is PENDING:
                pending = pending or blob is PENDING
                continue
            for i in range(n_read):
                self._group(group_t, slots_f, slot_t, kf, vf, blob, i * group_t.size,
                            data + i * group_t.size, out)
        if pending:
            return PENDING
        if len(out) < used or len(out) > limit:
            self.truncated = True
        return out[:limit]

    @staticmethod
    def _group(group_t, slots_f, slot_t, kf, vf, blob, off, addr, out) -> None:
        ctrl = blob[off + group_t.field("ctrl").offset: off + group_t.field("ctrl").offset + 8]
        for j in range(8):
            if ctrl[j] & 0x80:  # empty or deleted; full slots hold the low 7 hash bits
                continue
            so = off + slots_f.offset + j * slot_t.size
            sa = addr + slots_f.offset + j * slot_t.size
            out.append((kf.type, blob, so + kf.offset, sa + kf.offset,
                        vf.type, blob, so + vf.offset, sa + vf.offset))

    # --- time -------------------------------------------------------------------------
    def time(self, t: GoType, b: bytes, off: int):
        wall = u(b, off + t.field("wall").offset, 8)
        ext = i_(b, off + t.field("ext").offset, 8)
        loc = u(b, off + t.field("loc").offset, 8)
        nsec = wall & ((1 << 30) - 1)
        if wall >> 63:  # hasMonotonic: 33-bit seconds since 1885 in wall, ext is monotonic
            unix = ((wall << 1) & ((1 << 64) - 1)) >> 31
            unix += _WALL_TO_INTERNAL + _INTERNAL_TO_UNIX
        else:
            unix = ext + _INTERNAL_TO_UNIX
        offset = 0
        if loc:
            offset = self._zone_offset(t.field("loc").type.elem, loc, unix)
            if offset is PENDING:
                return PENDING
        return format_rfc3339(unix, nsec, offset)

    def _zone_offset(self, loc_t: GoType, loc: int, unix: int):
        raw = self.read(loc, loc_t.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            self._cut(raw)
            return 0
        fo = {f.name: f for f in loc_t.fields}
        cstart, cend = i_(raw, fo["cacheStart"].offset, 8), i_(raw, fo["cacheEnd"].offset, 8)
        czone = u(raw, fo["cacheZone"].offset, 8)
        zone_t = fo["zone"].type.elem
        zoff = zone_t.field("offset").offset
        if czone and cstart <= unix < cend:
            z = self.read(czone + zoff, 8)
            if z is PENDING:
                return PENDING
            return 0 if isinstance(z, Cut) else i_(z, 0, 8)
        zones_ptr, nzones = u(raw, fo["zone"].offset, 8), i_(raw, fo["zone"].offset + 8, 8)
        tx_ptr, ntx = u(raw, fo["tx"].offset, 8), i_(raw, fo["tx"].offset + 8, 8)
        if nzones <= 0 or nzones > 4096 or ntx < 0 or ntx > 1 << 16:
            return 0
        zones = self.read(zones_ptr, nzones * zone_t.size)
        tx_t = fo["tx"].type.elem
        txs = self.read(tx_ptr, ntx * tx_t.size) if ntx else b""
        if zones is PENDING or txs is PENDING:
            return PENDING
        if isinstance(zones, Cut) or isinstance(txs, Cut):
            return 0
        idx = 0
        when_off, index_off = tx_t.field("when").offset, tx_t.field("index").offset
        for i in range(ntx):
            if i_(txs, i * tx_t.size + when_off, 8) <= unix:
                idx = txs[i * tx_t.size + index_off]
            else:
                break
        if idx >= nzones:
            idx = 0
        return i_(zones, idx * zone_t.size + zoff, 8)


# --- pure helpers --------------------------------------------------------------------

_SECONDS_PER_DAY = 86400
_UNIX_TO_INTERNAL = (1969 * 365 + 1969 // 4 - 1969 // 100 + 1969 // 400) * _SECONDS_PER_DAY
_INTERNAL_TO_UNIX = -_UNIX_TO_INTERNAL
_WALL_TO_INTERNAL = (1884 * 365 + 1884 // 4 - 1884 // 100 + 1884 // 400) * _SECONDS_PER_DAY


def format_rfc3339(unix: int, nsec: int, offset: int) -> str:
    """Go's Format(time.RFC3339Nano): trailing zeros of the fraction dropped, Z for UTC."""
    try:
        d = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=unix + offset)
    except OverflowError:
        return f"unix:{unix}.{nsec:09d}"
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    if d.year < 1000:
        s = f"{d.year:04d}" + s[s.index("-"):]
    if nsec:
        s += "." + f"{nsec:09d}".rstrip("0")
    if offset == 0:
        return s + "Z"
    sign = "+" if offset > 0 else "-"
    m = abs(offset) // 60
    return f"{s}{sign}{m // 60:02d}:{m % 60:02d}"


def go_duration(d: int) -> str:
    """time.Duration.String(): "1.5s", "2h0m0.000003s", "350ms", "0s"."""
    if d == 0:
        return "0s"
    neg = d < 0
    v = -d if neg else d
    if v < 1_000_000_000:
        for unit, scale in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if v < scale * 1000:
                out = _fmt_frac(v, scale) + unit
                break
    else:
        secs = _fmt_frac(v % 60_000_000_000, 1_000_000_000) + "s"
        mins = v // 60_000_000_000
        if mins == 0:
            out = secs
        else:
            hours, mins = divmod(mins, 60)
            out = (f"{hours}h" if hours else "") + f"{mins}m" + secs
    return "-" + out if neg else out


def _fmt_frac(v: int, scale: int) -> str:
    whole, frac = divmod(v, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def go_string(raw: bytes):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # $text follows Go's strings.ToValidUTF8(s, "\ufffd"): one U+FFFD per bad run.
        text = _BAD_RUN.sub("\ufffd", raw.decode("utf-8", errors="surrogateescape"))
        return {"$b64": base64.b64encode(raw).decode("ascii"), "$text": text}


_BAD_RUN = re.compile("[\udc80-\udcff]+")


def string_bytes(value) -> bytes:
    """The exact bytes of a decoded string value (inverse of go_string)."""
    if isinstance(value, dict):
        return base64.b64decode(value["$b64"])
    return value.encode("utf-8")


def _trim_partial_utf8(raw: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence that the length limit cut at the end."""
    for back in range(1, min(4, len(raw)) + 1):
        c = raw[-back]
        if c & 0xC0 != 0x80:  # found the lead byte (or ASCII)
            need = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 1
            return raw[:-back] if need > back else raw
    return raw


def _float(f: float):
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return f


def is_direct_iface(t: GoType) -> bool:
    """Whether Go stores a value of t directly in an interface's data word (pointer-shaped
    types), rather than a pointer to it (cmd/compile's types.IsDirectIface)."""
    if t.kind in ("ptr", "chan", "map", "func", "unsafeptr"):
        return True
    if t.kind == "array":
        return t.count == 1 and t.elem is not None and is_direct_iface(t.elem)
    if t.kind == "struct" and t.name != "time.Time":
        return len(t.fields) == 1 and is_direct_iface(t.fields[0].type)
    return False


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
