"""The capture plan compiled for the BPF programs (bpf/snapshot.bpf.c,
pass_capture), so that the reads of captured variables happen in BPF inside the pause,
frame after frame, and the decoding after the resume.

Each captured function's code is cut into pc ranges within which every variable stays at
the same place; each range gets a *template*: a short list of reads, the variables' stack
slots first, then what values.py's ValueDecoder will read from them (strings, slice data,
pointees, to the same limits and pointer depth). After the resume the bytes read fill a
Memory per frame and the ValueDecoder runs as usual, reading nothing more.

What a template cannot express (interfaces, maps and channels, whose layout depends on
values; index and map-key steps; variables split between registers and memory; functions
inlined into others) gets the TPL_PYTHON mark: those frames are read by the collector's
round-based Python path (capture.run_rounds), as before.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from pytest_sideeye.binary import GoType, iter_scopes
from pytest_sideeye.capture.interfaces import is_direct_iface
from pytest_sideeye.capture.memory import Budget, Memory

OP_END, OP_SLOT, OP_PTR, OP_STR, OP_SLICE, OP_EACH_STR, OP_EACH_PTR = range(7)
OP_FMT = "<BBHiII"            # struct capop: kind, src, count, off, size, limit
RANGE_FMT = "<QQII"           # struct caprange: lo, hi, tpl, pad
CAPENT_FMT = "<IIQQ"          # struct capent: gidx, frame, pc, cfa
# The same structs as the engine's C declares them (checked against it when programs load).
C_FORMATS = {"capop": OP_FMT, "caprange": RANGE_FMT, "capent": CAPENT_FMT}
TPL_PYTHON = 0xFFFF
SCALARS = {"bool", "int", "uint", "float", "complex", "uintptr", "unsafeptr", "void"}


class TooComplex(Exception):
    """This variable's reads depend on values (or need more ops than a template has)."""


@dataclass
class ReadTemplates:
    """What the BPF programs get: ranges (runtime pcs) -> template index, and templates."""
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    templates: list[list[tuple]] = field(default_factory=list)
    lo: int = 0
    hi: int = 0
    # Runtime ranges of the binary's read-only data (binary.ReadOnlyData): a read there
    # that failed in the pause needs no second try, the decoder reads it from the file.
    constant: list[tuple[int, int]] = field(default_factory=list)

    def is_constant(self, addr: int, size: int) -> bool:
        return any(lo <= addr and addr + size <= hi for lo, hi in self.constant)

    def slots_alone(self, pc: int) -> list[tuple[int, int]] | None:
        """(offset from the CFA, size) of each read that the template of a frame at
        return address pc makes, when it reads nothing but the frame's own slots (a
        slots_only template); None otherwise, or when no template covers pc."""
        i = bisect.bisect_right(self.ranges, (pc - 1, 1 << 64)) - 1   # the call is before pc
        if i < 0 or not self.ranges[i][0] <= pc - 1 < self.ranges[i][1]:
            return None
        t = self.ranges[i][2]
        ops = self.templates[t] if t < len(self.templates) else None
        if not ops or any(op[0] != OP_SLOT for op in ops):
            return None
        return [(off, size) for _kind, _src, _count, off, size, _limit in ops]

    def pack_ranges(self) -> bytes:
        return b"".join(struct.pack(RANGE_FMT, lo, hi, t, 0) for lo, hi, t in self.ranges)

    def pack_bits(self, words: int) -> tuple[int, bytes]:
        """(shift, bitmap) of the code between lo and hi holding captured ranges: bit i
        covers [lo + (i << shift), lo + ((i + 1) << shift)); the smallest shift (at least
        16-byte granules) whose bitmap fits in `words` u64 words."""
        shift = 4
        while (self.hi - self.lo) >> shift >= words * 64:
            shift += 1
        bits = bytearray(words * 8)
        for lo, hi, _t in self.ranges:
            for i in range((lo - self.lo) >> shift, ((hi - 1 - self.lo) >> shift) + 1):
                bits[i >> 3] |= 1 << (i & 7)
        return shift, bytes(bits)

    def pack_ops(self, ops_per_template: int) -> bytes:
        out = bytearray()
        for ops in self.templates:
            for op in ops:
                out += struct.pack(OP_FMT, *op)
            out += bytes(struct.calcsize(OP_FMT) * (ops_per_template - len(ops)))
        return bytes(out)


class _Loc:
    """Where a value's bytes are: in the data of read `src` at `base` (pieces None), or,
    for a variable kept in pieces (Go spills register arguments piece by piece), in the
    frame read at the place of the piece holding each byte."""

    def __init__(self, src: int, base: int = 0, pieces=None):
        self.src, self.base, self.pieces = src, base, pieces

    def at(self, rel: int, n: int) -> tuple[int, int] | None:
        """(src, offset) of the n bytes at rel in the value; None in a register."""
        if self.pieces is None:
            return self.src, self.base + rel
        start = None
        for vo, fo, size, mem in self.pieces:
            if vo <= rel < vo + size:
                if not mem:
                    return None
                start = fo + rel - vo
                break
        if start is None:
            return None
        # Every byte must sit in memory, in order (pieces can be anywhere in the frame).
        for vo, fo, size, mem in self.pieces:
            lo, hi = max(vo, rel), min(vo + size, rel + n)
            if lo < hi and (not mem or fo + lo - vo != start + lo - rel):
                return None
        return self.src, self.base + start


class _Template:
    """Builds one template's ops, mirroring what ValueDecoder.value reads."""

    def __init__(self, limits, max_ops: int, read_max: int):
        self.limits = limits
        self.max_ops = max_ops
        self.read_max = read_max
        self.ops: list[tuple] = []
        self._index: dict[tuple, int] = {}

    def op(self, kind: int, src: int, off: int, size: int = 0, limit: int = 0,
           count: int = 0) -> int:
        key = (kind, src, count, off, size, limit)
        if key in self._index:
            return self._index[key]
        if len(self.ops) >= self.max_ops:
            raise TooComplex("more reads than a template holds")
        if _read_size(kind, size, limit, count) > self.read_max:
            # BPF would copy only the first read_max bytes, and the decoder, wanting them
            # all, would find the value cut ("rounds"): only the Python rounds read it.
            raise TooComplex("a read longer than one BPF capture read")
        self.ops.append(key)
        self._index[key] = len(self.ops) - 1
        return len(self.ops) - 1

    def op_at(self, kind: int, loc: _Loc, rel: int, n: int, **kw) -> int | None:
        """An op reading from the n bytes at rel of loc's value (None: not in memory)."""
        where = loc.at(rel, n)
        return None if where is None else self.op(kind, where[0], where[1], **kw)

    def _elem_limit(self, elem: GoType) -> int:
        return max(1, self.limits.slice_bytes // max(elem.size, 1))

    # --- what ValueDecoder.value(t) reads beyond the value's own bytes -----------------------
    def value(self, t: GoType, loc: _Loc, rel: int, depth: int) -> None:
        k = t.kind
        if k in SCALARS:
            return
        if k == "string":
            self.op_at(OP_STR, loc, rel, 16, limit=self.limits.string_bytes)
        elif k == "ptr":
            self.pointer(t, loc, rel, depth)
        elif k == "func":
            self.op_at(OP_PTR, loc, rel, 8, size=8)
        elif k == "struct" and t.name == "time.Time":
            self.time(t, loc, rel)
        elif k == "struct":
            for f in t.fields:
                self.value(f.type, loc, rel + f.offset, depth)
        elif k == "array":
            if t.elem is not None:
                for i in range(min(t.count, self._elem_limit(t.elem))):
                    self.value(t.elem, loc, rel + i * t.elem.size, depth)
        elif k == "slice":
            if t.elem is not None and t.elem.size > 0:
                keep = self._elem_limit(t.elem)
                data = self.op_at(OP_SLICE, loc, rel, 16, size=t.elem.size, count=keep)
                if data is not None:
                    self.elements(t.elem, data, keep, depth)
        else:
            raise TooComplex(k)

    def pointer(self, t: GoType, loc: _Loc, rel: int, depth: int) -> None:
        e = t.elem
        if e is None or e.kind == "void" or e.size == 0:
            return
        if depth >= self.limits.pointer_depth:
            return
        p = self.op_at(OP_PTR, loc, rel, 8, size=e.size)
        if p is not None:
            self.value(e, _Loc(p), 0, depth + 1)

    def elements(self, elem: GoType, data: int, keep: int, depth: int) -> None:
        """Per element of a slice's data: strings and pointees one level deep."""
        for kind, off, t in _refs(elem, 0):
            if kind == "string":
                self.op(OP_EACH_STR, data, off, size=elem.size, limit=self.limits.string_bytes,
                        count=keep)
            elif kind == "func":
                self.op(OP_EACH_PTR, data, off, size=elem.size, limit=8, count=keep)
            elif kind == "ptr":
                e = t.elem
                if e is None or e.kind == "void" or e.size == 0 or \
                        depth >= self.limits.pointer_depth:
                    continue
                if _refs(e, 0):
                    raise TooComplex("pointers in elements' pointees")
                self.op(OP_EACH_PTR, data, off, size=elem.size, limit=e.size, count=keep)

    def time(self, t: GoType, loc: _Loc, rel: int) -> None:
        """ValueDecoder.time: the Location, its cached zone, else its zones and transitions."""
        loc_f = t.field("loc")
        loc_t = loc_f.type.elem if loc_f is not None and loc_f.type.elem else None
        if loc_t is None or loc_t.size == 0:
            return
        where = self.op_at(OP_PTR, loc, rel + loc_f.offset, 8, size=loc_t.size)
        fo = {f.name: f for f in loc_t.fields}
        if where is None or not {"cacheZone", "zone", "tx"} <= set(fo):
            return
        zone_t, tx_t = fo["zone"].type.elem, fo["tx"].type.elem
        if zone_t is None or tx_t is None:
            return
        self.op(OP_PTR, where, fo["cacheZone"].offset, size=zone_t.size)
        for name, et in (("zone", zone_t), ("tx", tx_t)):
            self.op(OP_SLICE, where, fo[name].offset, size=et.size,
                    count=max(1, self.read_max // max(et.size, 1)))


def _read_size(kind: int, size: int, limit: int, count: int) -> int:
    """The most bytes an op copies (bpf/snapshot.bpf.c capture_frame): a slice's data is
    count elements of size bytes; a string, or each element's pointee, up to limit."""
    if kind in (OP_SLOT, OP_PTR):
        return size
    if kind == OP_SLICE:
        return size * count
    return limit


def _refs(t: GoType, base: int) -> list[tuple[str, int, GoType]]:
    """(kind, offset, type) of the strings, pointers and funcs laid out inline in t."""
    k = t.kind
    if k in SCALARS:
        return []
    if k == "string":
        return [("string", base, t)]
    if k in ("ptr", "func"):
        return [(k, base, t)]
    if k == "struct" and t.name != "time.Time":
        return [r for f in t.fields for r in _refs(f.type, base + f.offset)]
    if k == "array" and t.elem is not None and t.count <= 16:
        return [r for i in range(t.count) for r in _refs(t.elem, base + i * t.elem.size)]
    raise TooComplex(f"{k} in elements")


def _pieces(pieces, t: GoType) -> list[tuple[int, int, int, bool]]:
    """(offset in the value, offset from the CFA, size, in memory) of each piece."""
    out, vo = [], 0
    for p in pieces:
        size = p.size if p.size is not None else max(t.size - vo, 0)
        out.append((vo, p.addr, size, p.kind == "mem"))
        vo += size
    return out


def _template_for(plan, function: str, pc: int, max_ops: int, read_max: int, *,
                  slots_only: bool = False):
    """The ops reading every expression of `function` in a frame at pc (link-time), or
    None when only the Python path can (TooComplex). slots_only: the frame's slots alone
    (what they point to is read after the resume: engine/links/after_resume.py)."""
    bound = plan._bindings(function, pc)
    if isinstance(bound, str):
        return None
    debug = plan.debug
    roots = []      # (expr, pieces, type)
    for e in plan.spec.functions.get(function, []):
        if any(st.op not in ("field", "deref", "assert") for st in e.steps):
            return None
        b = bound.get(e.root)
        if b is None:
            continue            # not in scope here: reported unavailable, nothing to read
        var, cu_off = b
        t = debug.type_at(var.type_offset)
        pieces = debug.location(var, cu_off, pc, 0)
        if not pieces or all(p.kind != "mem" for p in pieces):
            continue            # not live here, or in registers only: nothing to read
        roots.append((e, _pieces(pieces, t), t))
    if not roots:
        return []
    tpl = _Template(plan.limits, max_ops, read_max)
    mem = [(fo, size) for _e, ps, _t in roots for _vo, fo, size, m in ps if m]
    lo, hi = min(fo for fo, _s in mem), max(fo + s for fo, s in mem)
    try:
        # Every slot of the frame in one read: they are close together.
        if hi - lo > read_max:
            raise TooComplex("slots too far apart")
        frame = tpl.op(OP_SLOT, 0, lo, size=hi - lo)
        if slots_only:
            return tpl.ops
        for e, ps, t in roots:
            pieces = [(vo, fo - lo, size, m) for vo, fo, size, m in ps]
            _expression(tpl, e, t, _Loc(frame, 0, pieces), plan.limits, debug)
    except TooComplex:
        return None
    return tpl.ops


def _expression(tpl: _Template, e, t: GoType, loc: _Loc, limits, debug=None) -> None:
    """Reads of one expression: its steps (fields, dereferences, type assertions), then its
    value."""
    rel = 0
    for st in e.steps:
        if st.op == "assert":
            r = _assertion(tpl, t, loc, rel, st.arg, debug)
            if r is None:
                return
            t, loc, rel = r
            continue
        if st.op == "field":
            for _ in range(limits.pointer_depth + 4):
                if t.kind != "ptr":
                    break
                if t.elem is None or t.elem.size == 0:
                    return
                p = tpl.op_at(OP_PTR, loc, rel, 8, size=t.elem.size)
                if p is None:
                    return
                loc, rel, t = _Loc(p), 0, t.elem
            if t.kind in ("iface", "eface"):
                # Which struct the field is in depends on the dynamic type, read from the
                # itab: only the Python rounds can follow that.
                raise TooComplex(f"field of an {t.kind}")
            f = t.field(st.arg) if t.kind == "struct" else None
            if f is None:
                return          # the decoder reports the error; it reads nothing more
            rel, t = rel + f.offset, f.type
        else:
            if t.kind != "ptr" or t.elem is None or t.elem.size == 0:
                return
            p = tpl.op_at(OP_PTR, loc, rel, 8, size=t.elem.size)
            if p is None:
                return
            loc, rel, t = _Loc(p), 0, t.elem
    if t.kind in ("iface", "eface", "map", "chan"):
        raise TooComplex(t.kind)
    tpl.value(t, loc, rel, 0)


def _assertion(tpl: _Template, t: GoType, loc: _Loc, rel: int, type_name: str, debug):
    """`.(T)` on the interface at rel: what FrameJob._assert reads (the itab's type word,
    then T's bytes: the data word itself when T is pointer-shaped), as (T, loc, rel)."""
    asserted = debug.type_by_name(type_name) if debug is not None else None
    if asserted is None or t.kind not in ("iface", "eface"):
        raise TooComplex("type assertion")
    if t.kind == "iface" and tpl.op_at(OP_PTR, loc, rel, 8, size=16) is None:
        return None
    if is_direct_iface(asserted):
        return asserted, loc, rel + 8
    p = tpl.op_at(OP_PTR, loc, rel + 8, 8, size=max(asserted.size, 1))
    return None if p is None else (asserted, _Loc(p), 0)


def _boundaries(plan, function: str, scope) -> list[int]:
    """Every pc where a variable of the function may change place or scope."""
    names = {e.root for e in plan.spec.functions.get(function, [])}
    points = set()
    for sc in iter_scopes(scope):
        for lo, hi in sc.ranges:
            points.update((lo, hi))
        for v in sc.variables:
            if v.name in names:
                for lo, hi, _expr in plan.debug.location_ranges(v, sc.cu_offset):
                    points.update((lo, hi))
    return sorted(points)


def compile_plan(plan, bias: int, const: dict[str, int], symtab=None,
                 slots_only: frozenset[str] = frozenset()) -> ReadTemplates | None:
    """The plan's BPF tables (runtime addresses), or None when nothing can be templated.
    symtab (pclntab.Symtab): where the functions run inlined, in any package (without it,
    only the inlining sites in the function's own package, from DWARF, are known).
    slots_only: functions whose frames' slots alone are read in the pause."""
    max_ops, read_max = const["CAP_OPS"], const["CAP_READ_MAX"]
    max_templates, max_ranges = const["CAP_TEMPLATES"], const["CAPTAB_MAX"]
    own: list[tuple[int, int, int]] = []        # (lo, hi, template) link-time
    inlined: list[tuple[int, int]] = []
    templates: list[list[tuple]] = []
    index: dict[tuple, int] = {}
    for function in sorted(plan.functions):
        info = plan.debug.function(function)
        if info is None:
            continue
        inlined += plan.debug.inlined_ranges(function)
        if symtab is not None:
            inlined += symtab.inlined_ranges(function)
        if info.concrete is None:
            continue
        points = _boundaries(plan, function, info.concrete)
        for lo, hi in info.concrete.ranges:
            cuts = [p for p in points if lo < p < hi]
            for a, b in zip([lo] + cuts, cuts + [hi]):
                ops = _template_for(plan, function, a, max_ops, read_max,
                                    slots_only=function in slots_only)
                if ops is None:
                    t = TPL_PYTHON
                else:
                    key = tuple(ops)
                    if key not in index and len(templates) < max_templates:
                        index[key] = len(templates)
                        templates.append(list(ops))
                    t = index.get(key, TPL_PYTHON)
                own.append((a, b, t))
    ranges = _paint(own, inlined)
    if not ranges or len(ranges) > max_ranges:
        return None
    constant = [(lo, hi) for lo, hi, _off in plan.constant.ranges] \
        if plan.constant is not None else []
    return ReadTemplates([(lo + bias, hi + bias, t) for lo, hi, t in ranges], templates,
                         ranges[0][0] + bias, ranges[-1][1] + bias, constant)


def _paint(own: list[tuple[int, int, int]], inlined: list[tuple[int, int]]):
    """Disjoint sorted ranges: a function's own ranges with their templates, overridden by
    TPL_PYTHON wherever a captured function is inlined; neighbours with one template
    merged."""
    points = sorted({p for lo, hi, _t in own for p in (lo, hi)} |
                    {p for lo, hi in inlined for p in (lo, hi)})
    out: list[list[int]] = []
    for a, b in zip(points, points[1:]):
        t = None
        if any(lo <= a < hi for lo, hi in inlined):
            t = TPL_PYTHON
        else:
            t = next((tt for lo, hi, tt in own if lo <= a < hi), None)
        if t is None:
            continue
        if out and out[-1][1] == a and out[-1][2] == t:
            out[-1][1] = b
        else:
            out.append([a, b, t])
    return [tuple(r) for r in out]


# --- after the resume --------------------------------------------------------------------

@dataclass
class CaptureOutput:
    """The capture reads of one snapshot, per queued frame (its capq index)."""
    frames: dict[tuple[int, int], int] = field(default_factory=dict)   # (pc, cfa) -> entry
    python: list[tuple[int, int, int]] = field(default_factory=list)   # (entry, pc, cfa)
    reads: dict[int, list[tuple[int, bytes | None, int]]] = field(default_factory=dict)
    dropped: int = 0        # reads refused for lack of space
    queued_over: int = 0    # frames beyond the queue's capacity
    unreached: int = 0      # queued frames left when the capture's pause budget ran out

    def memory(self) -> Memory:
        """Everything read, as one read-only Memory shared by the frames' own (a read is
        done once per snapshot however many frames need it)."""
        mem = Memory(Budget(0))
        failed = []
        for reads in self.reads.values():
            for addr, data, size in reads:
                if data is None:
                    failed.append((addr, size))
                else:
                    mem.add(addr, data)
        for addr, size in failed:
            if mem._lookup(addr, size) is None:
                mem.mark_bad(addr, size, "unreadable")
        return mem


def parse_output(capq: bytes, regions: list[tuple[int, int, int]], buf, used: int,
                 tables: ReadTemplates, region_size: int) -> CaptureOutput:
    """Decode capq entries and the capbuf records (header: address; entry << 32 | size,
    bit 31 when the read failed; then the data, 8-aligned). regions: (first entry,
    entries queued, entries claimed) of each capq region; an entry not claimed was not
    reached before the capture's deadline."""
    out = CaptureOutput()
    starts = [lo for lo, _hi, _t in tables.ranges]
    for base, queued, claimed in regions:
        out.queued_over += max(0, queued - region_size)
        queued = min(queued, region_size)
        out.unreached += max(0, queued - claimed)
        for j in range(queued):
            q = base + j
            _gidx, _frame, pc, cfa = struct.unpack_from(CAPENT_FMT, capq, q * 24)
            i = bisect.bisect_right(starts, pc - 1) - 1
            if i < 0 or not tables.ranges[i][0] <= pc - 1 < tables.ranges[i][1]:
                continue
            if tables.ranges[i][2] == TPL_PYTHON:
                out.python.append((q, pc, cfa))
            elif j < claimed:
                out.frames[(pc, cfa)] = q
    pos = 0
    used = min(used, len(buf))
    while pos + 16 <= used:
        addr, word = struct.unpack_from("<QQ", buf, pos)
        entry, size, failed = word >> 32, word & 0x7FFFFFFF, bool(word & 0x80000000)
        data = None if failed else bytes(buf[pos + 16:pos + 16 + size])
        out.reads.setdefault(entry, []).append((addr, data, size))
        pos += 16 + ((size + 7) & ~7)
    return out


# --- the templates' reads made after the resume (engine/links/after_resume.py) -----------

def read_as_bpf(tables: ReadTemplates, frames: list[tuple[int, int, Memory]],
                read_batch) -> None:
    """For each frame (pc, cfa, mem) whose slots the pause read into mem (a slots_only
    template), make the reads its full template in `tables` would have made in BPF
    (capture_frame), from memory as it is now, and add them to mem: a level of pointers at
    a time across all the frames, one read_batch ({(addr, size): bytes or None}) a level,
    so that each frame is then decoded in one pass rather than in a round a pointer. The
    slots themselves are never read here, only taken from mem. Templates with reads other
    than slots, pointers and strings are left to the rounds (capture.run_rounds)."""
    starts = [lo for lo, _hi, _t in tables.ranges]
    states = []
    for pc, cfa, mem in frames:
        i = bisect.bisect_right(starts, pc - 1) - 1      # a return address: the call is before
        if i < 0 or not (tables.ranges[i][0] <= pc - 1 < tables.ranges[i][1]):
            continue
        t = tables.ranges[i][2]
        if t == TPL_PYTHON or t >= len(tables.templates):
            continue
        ops = tables.templates[t]
        if ops and all(op[0] in (OP_SLOT, OP_PTR, OP_STR) for op in ops):
            states.append((cfa, mem, ops, [None] * len(ops), [False] * len(ops)))
    for _level in range(16):
        wanted: dict[tuple[int, int], list] = {}
        for cfa, mem, ops, res, done in states:
            for k, (kind, src, _count, off, size, limit) in enumerate(ops):
                if done[k]:
                    continue
                if kind == OP_SLOT:
                    res[k], done[k] = _known(mem, cfa + off, size), True
                    continue
                if not done[src]:
                    continue
                buf, need = res[src], 16 if kind == OP_STR else 8
                done[k] = True
                if buf is None or off + need > len(buf):
                    continue
                p = struct.unpack_from("<Q", buf, off)[0]
                if kind == OP_STR:
                    n = struct.unpack_from("<q", buf, off + 8)[0]
                    size = min(n, limit) if n > 0 else 0
                if not p or size <= 0:
                    continue
                res[k] = _known(mem, p, size)
                if res[k] is None:
                    done[k] = False
                    wanted.setdefault((p, size), []).append((mem, res, done, k))
        if not wanted:
            return
        got = read_batch(sorted(wanted))
        for (p, size), owners in wanted.items():
            data = got.get((p, size))
            data = bytes(data[:size]) if data is not None and len(data) >= size else None
            for mem, res, done, k in owners:
                res[k], done[k] = data, True
                if data is not None:
                    mem.add(p, data)


def _known(mem: Memory, addr: int, size: int) -> bytes | None:
    """What mem (or the memory it shares) holds of [addr, addr + size), read nothing."""
    got = mem._lookup(addr, size)
    if got is None and mem.shared is not None:
        got = mem.shared._lookup(addr, size)
    return got
