"""Each goroutine's pprof labels (runtime/pprof.Do, SetGoroutineLabels), read with its stack.

`g.labels` is an unsafe.Pointer to a `runtime/pprof.labelMap`, whose shape depends on the
Go release: up to Go 1.23 a `map[string]string` (so g.labels points to a word holding the
map's hmap pointer); from Go 1.24 a struct around a slice of {key, value} string pairs,
sorted by key (`LabelSet.list` of `label`, from 1.26 `label.Set.List` of `label.Label`).
Both shapes are taken from the binary's DWARF, by the labelMap type: a binary without
DWARF shows no labels.

The pointer itself comes with each goroutine's record: the BPF walk has the g in hand and
stores g.labels in the header (H_LABELS), so a program where no goroutine has labels costs
the pause no read at all here. g.labels is written only by the goroutine itself
(runtime_setProfLabel stores getg().labels), by newproc (a goroutine inherits its creator's
pointer) and on exit (cleared): after a pre-read, a goroutine whose record was kept neither
ran, nor was made, nor died (the pause's header check walks those again), so its pointer
is the pause's.

Label sets are never modified once made (Go 1.21-1.27's runtime/pprof/label.go:
WithLabels builds a new map or merged slice, SetGoroutineLabels and Do only swap the
pointer), so each distinct set is read once. A set is read while it is known live: after
the resume a goroutine may drop its set, the collector free it and the memory hold another
set or anything else, and reading it back then could not tell a live set from a reused
address (checking g.labels again after the read leaves the drop-free-reuse-set-again case
undetectable). Before the pause, right after a pre-read, the sets its records point to are
read (prescan): one a goroutine the pause keeps points to was live all along (its g.labels
held it, the goroutine did not run), so what was read then is what the pause would read.
The pause reads only the other sets: those of goroutines it walked again. Strings in the
binary's read-only data (literal keys and values) are read from the executable after the
resume (binary.ReadOnlyData): the same bytes, at no cost to the pause.

    reader = label_reader(info, bias)                        # before the pause
    taken = reader.read(raw, pid, deadline)                  # in the pause
    labels = reader.decode(taken)                            # after: {goid: {key: value}}
"""
from __future__ import annotations

import gc
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from pytest_sideeye.binary import ReadOnlyData
from pytest_sideeye.engine.collect import F_NOG, H_FLAGS, H_GOID, H_LABELS, H_STATUS
from pytest_sideeye.engine.cstructs import c_struct
from pytest_sideeye.engine.vmread import read_scatter

# read_scatter bound to a process: [(addr, size)] -> (buffer, offsets, bad indexes)
Scatter = Callable[[list[tuple[int, int]]], tuple[bytes, list[int], set[int]]]
MAX_LABELS = 64          # labels shown per goroutine; more are cut (a note says so)
LABEL_BYTES = 512        # bytes shown of one key or value; longer ones end in "…"
MAX_OVERFLOW = 4         # overflow buckets followed per bucket of a (small) label map
CUT = "…"
PRE_SETS_BUDGET_S = 0.05   # reading the pre-read's sets before the pause, at most


@dataclass
class _Slice:
    """Go >= 1.24: labelMap is a struct holding a slice of {key, value string} structs."""
    slice_off: int       # of the slice header in labelMap
    elem_size: int
    key_off: int
    value_off: int


@dataclass
class _Map:
    """Go <= 1.23: labelMap is a map[string]string (hmap with buckets of 8 slots)."""
    hmap_size: int
    count_off: int
    flags_off: int
    b_off: int
    buckets_off: int
    oldbuckets_off: int
    bucket_size: int
    keys_off: int
    values_off: int
    overflow_off: int


@dataclass
class Taken:
    """What the pause read: each live goroutine's labels pointer, each distinct set's
    (key, value) string headers, the strings read (heap ones), and why anything is missing;
    `reads`: how many ranges of the target's memory the pause read for them."""
    pointers: dict[int, int] = field(default_factory=dict)     # goid -> g.labels
    reads: int = 0
    sets: dict[int, list] = field(default_factory=dict)        # pointer -> [(kp, kn, vp, vn)]
    cut: dict[int, str] = field(default_factory=dict)          # pointer -> why incomplete
    strings: dict[tuple[int, int], bytes | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class LabelReader:
    def __init__(self, shape, status_dead: int, rodata: ReadOnlyData | None):
        self.shape = shape
        self.status_dead = status_dead
        self.rodata = rodata
        self.grec = c_struct("grec")

    # --- in the pause ---------------------------------------------------------------
    def read(self, raw, pid: int, deadline: float) -> Taken:
        """The distinct label sets the goroutines' records point to (H_LABELS) and their
        heap strings: a few batched reads in all (vmread), none without labels, parsed as
        columns. Python's garbage collector is held off meanwhile: the objects made here
        could start a collection in the pause, and a full one over the binaries' analyses
        held in memory took ~40 ms."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._read(raw, lambda reqs: read_scatter(pid, reqs), deadline)
        except Exception as e:  # noqa: BLE001 - never let labels cost the snapshot
            return Taken(notes=[f"labels: not read: {type(e).__name__}: {e}"])
        finally:
            if enabled:
                gc.enable()

    def _read(self, raw, read: Scatter, deadline: float) -> Taken:
        taken = Taken()
        taken.pointers, kept = self._pointers(raw)
        if not taken.pointers:
            return taken

        def scatter(reqs):
            taken.reads += len(reqs)
            return read(reqs)
        before = raw.pre_label_sets if raw.pre_chunks else None
        adopted = _adopt(taken, before, kept) if before is not None else set()
        ptrs = sorted(set(taken.pointers.values()) - adopted)
        self._read_sets(ptrs, scatter, deadline, taken)
        return taken

    def _read_sets(self, ptrs: list[int], scatter: Scatter, deadline: float,
                   taken: Taken) -> None:
        if ptrs:
            if isinstance(self.shape, _Slice):
                self._slice_sets(ptrs, scatter, taken)
            else:
                self._map_sets(ptrs, scatter, deadline, taken)
        self._heap_strings(scatter, deadline, taken)

    def prescan(self, pre) -> None:
        """Before the pause, the pre-read's records' labels (Records.pre_labels). Each one
        the pause keeps still holds at the pause: its header is unchanged, so its
        goroutine did not run, and only a goroutine itself sets its own g.labels (and
        newproc, a new goroutine's). Scanning 10,000 records' column costs ~0.4 ms, memory
        bound, which the pause is spared."""
        try:
            pre.pre_labels = self._found(pre.chunks, range(len(pre.chunks)))
        except Exception:  # noqa: BLE001 - never let labels cost the snapshot: the pause
            pre.pre_labels = None   # scans them all instead
            return
        pre.pre_label_sets = self._sets_before_pause(pre)

    def _sets_before_pause(self, pre) -> Taken | None:
        """The sets the pre-read's records point to, read while the target runs (the
        pause adopts those its kept goroutines point to: _adopt); None when there are
        none or reading them failed (the pause reads them all then)."""
        ptrs = sorted({ptr for _goid, ptr in pre.pre_labels.values()})
        if not ptrs:
            return None
        taken = Taken()
        try:
            self._read_sets(ptrs, lambda reqs: read_scatter(pre.pid, reqs),
                            time.monotonic() + PRE_SETS_BUDGET_S, taken)
        except Exception:  # noqa: BLE001 - the pause reads them instead
            return None
        return taken

    def _pointers(self, raw) -> tuple[dict[int, int], set[int]]:
        """{goid: g.labels} of each live goroutine with labels, from the records' H_LABELS
        column (the BPF walk's copy of the word); a chunk where that column is all zeros,
        the usual case, costs one scan of it. With a pre-read, its records were scanned
        before the pause (prescan), and a record the pause walked again supersedes the
        pre-read's (its goroutine may have died or changed labels). Also the pointers of
        the pre-read's records the pause kept: sets live since the pre-read."""
        pre = raw.pre_labels if raw.pre_chunks else None
        found = dict(pre) if pre is not None else {}
        scan = range(raw.pre_chunks if pre is not None else 0, len(raw.chunks))
        found.update(self._found(raw.chunks, scan))
        if not found:
            return {}, set()
        superseded = raw.superseded()
        kept = {ptr for key, (_goid, ptr) in (pre or {}).items() if key not in superseded}
        return ({goid: ptr for key, (goid, ptr) in found.items() if key not in superseded},
                kept)

    def _found(self, chunks, indexes) -> dict[tuple[int, int], tuple[int, int]]:
        """{(chunk, index): (goid, g.labels)} of the live goroutines with labels there."""
        words = self.grec.size // 8
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for ci in indexes:
            col = memoryview(chunks[ci]).cast("B").cast("Q")
            n = len(col) // words
            ptrs = col[H_LABELS::words].tolist()[:n]
            if not any(ptrs):
                continue
            goids = col[H_GOID::words].tolist()[:n]
            status = col[H_STATUS::words].tolist()[:n]
            flags = col[H_FLAGS::words].tolist()[:n]
            for i, (ptr, goid, st, fl) in enumerate(zip(ptrs, goids, status, flags)):
                if ptr and goid and st != self.status_dead and not fl & F_NOG:
                    out[ci, i] = (goid, ptr)
        return out

    def _slice_sets(self, ptrs: list[int], scatter: Scatter, taken: Taken) -> None:
        """Go >= 1.24: each set's slice header, then its elements, one read each."""
        s = self.shape
        buf, _offs, bad = scatter([(p + s.slice_off, 24) for p in ptrs])
        hdr = memoryview(buf).cast("Q")
        arrays, lens = hdr[0:3 * len(ptrs):3].tolist(), hdr[1:3 * len(ptrs):3].tolist()
        todo = []
        for i, (ptr, arr, n) in enumerate(zip(ptrs, arrays, lens)):
            if i in bad:
                taken.cut[ptr] = "unreadable"
            elif n > 1 << 20:
                taken.cut[ptr] = "bad length"
            elif n:
                todo.append((ptr, arr, n))
            else:
                taken.sets[ptr] = []
        if not todo:
            return
        buf, offs, bad = scatter([(arr, min(n, MAX_LABELS) * s.elem_size)
                                  for _ptr, arr, n in todo])
        q = memoryview(buf).cast("B")[:offs[-1]].cast("Q").tolist()
        per, k, v = s.elem_size // 8, s.key_off // 8, s.value_off // 8
        for i, (ptr, _arr, n) in enumerate(todo):
            if i in bad:
                taken.cut[ptr] = "unreadable"
                continue
            w = offs[i] // 8
            taken.sets[ptr] = [(q[e + k], q[e + k + 1], q[e + v], q[e + v + 1])
                               for e in range(w, w + min(n, MAX_LABELS) * per, per)]
            if n > MAX_LABELS:
                taken.cut[ptr] = f"{n - MAX_LABELS} more labels"

    def _map_sets(self, ptrs: list[int], scatter: Scatter, deadline: float,
                  taken: Taken) -> None:
        """Go <= 1.23: the map header each set points to, its buckets (and old buckets
        while it grows), then overflow buckets, a round a hop."""
        m = self.shape
        hmaps, bad = _words(scatter, ptrs)
        live = []
        for i, (ptr, h) in enumerate(zip(ptrs, hmaps)):
            if i in bad:
                taken.cut[ptr] = "unreadable"
            elif h:
                live.append((ptr, h))
            else:
                taken.sets[ptr] = []
        if not live:
            return
        buf, offs, bad = scatter([(h, m.hmap_size) for _ptr, h in live])
        blocks = []   # (ptr, address, size) of bucket arrays to read
        for i, (ptr, _h) in enumerate(live):
            h = buf[offs[i]:offs[i + 1]]
            count = int.from_bytes(h[m.count_off:m.count_off + 8], "little")
            B = h[m.b_off]
            if i in bad or B > 8:
                taken.cut[ptr] = "unreadable" if i in bad else "bad map"
                continue
            taken.sets[ptr] = []
            if not count:
                continue
            if count > MAX_LABELS:
                taken.cut[ptr] = f"{count - MAX_LABELS} more labels"
            buckets = int.from_bytes(h[m.buckets_off:m.buckets_off + 8], "little")
            old = int.from_bytes(h[m.oldbuckets_off:m.oldbuckets_off + 8], "little")
            blocks.append((ptr, buckets, (1 << B) * m.bucket_size))
            if old:   # growing: entries not moved yet are still in the old buckets
                same_size = h[m.flags_off] & 8
                blocks.append((ptr, old, (1 << (B if same_size else max(B - 1, 0)))
                               * m.bucket_size))
        for _hop in range(MAX_OVERFLOW + 1):
            if not blocks or time.monotonic() > deadline:
                break
            buf, offs, bad = scatter([(addr, size) for _ptr, addr, size in blocks])
            nxt = []
            for i, (ptr, _addr, size) in enumerate(blocks):
                if i in bad:
                    taken.cut[ptr] = "unreadable"
                    continue
                for off in range(offs[i], offs[i] + size, m.bucket_size):
                    ovf = self._bucket(buf, off, taken.sets[ptr])
                    if ovf:
                        nxt.append((ptr, ovf, m.bucket_size))
            blocks = nxt
        for ptr, _addr, _size in blocks:
            taken.cut.setdefault(ptr, "pause budget" if time.monotonic() > deadline
                                 else "overflow chain")
        for ptr, refs in taken.sets.items():
            del refs[MAX_LABELS:]

    def _bucket(self, data: bytes, off: int, refs: list) -> int:
        """Add a bucket's live slots to refs; returns its overflow bucket's address."""
        m = self.shape
        for j in range(8):
            if data[off + j] >= 5:   # tophash below minTopHash: empty or evacuated
                refs.append(struct.unpack_from("<2Q", data, off + m.keys_off + 16 * j)
                            + struct.unpack_from("<2Q", data, off + m.values_off + 16 * j))
        return int.from_bytes(data[off + m.overflow_off:off + m.overflow_off + 8], "little")

    def _heap_strings(self, scatter: Scatter, deadline: float, taken: Taken) -> None:
        """The keys' and values' bytes that are not in the read-only data (those are read
        from the file after the resume)."""
        ro = self.rodata.ranges if self.rodata is not None else []
        refs = {(p, min(n, LABEL_BYTES)) for refs in taken.sets.values()
                for kp, kn, vp, vn in refs for p, n in ((kp, kn), (vp, vn)) if n}
        heap = sorted(r for r in refs if r not in taken.strings
                      and not any(lo <= r[0] < hi for lo, hi, _off in ro))
        if not heap:
            return
        if time.monotonic() > deadline:
            taken.notes.append(f"labels: {len(heap)} strings not read (pause budget)")
            return
        buf, offs, bad = scatter(heap)
        taken.strings.update({r: None if i in bad else buf[offs[i]:offs[i + 1]]
                              for i, r in enumerate(heap)})

    # --- after the resume -----------------------------------------------------------
    def decode(self, taken: Taken) -> dict[int, dict[str, str]]:
        """{goid: {key: value}} sorted by key; a set read in part ends with the key "…"
        saying why."""
        sets = {ptr: self._labels(ptr, refs, taken) for ptr, refs in taken.sets.items()}
        for ptr in taken.cut:
            sets.setdefault(ptr, self._labels(ptr, [], taken))
        return {goid: sets[ptr] for goid, ptr in taken.pointers.items() if sets.get(ptr)}

    def _labels(self, ptr: int, refs: list, taken: Taken) -> dict[str, str]:
        out = {self._text(kp, kn, taken): self._text(vp, vn, taken) for kp, kn, vp, vn in refs}
        out = dict(sorted(out.items()))
        if ptr in taken.cut:
            out[CUT] = taken.cut[ptr]
        return out

    def _text(self, ptr: int, n: int, taken: Taken) -> str:
        if not n:
            return ""
        size = min(n, LABEL_BYTES)
        data = taken.strings.get((ptr, size))
        if data is None and self.rodata is not None:
            data = self.rodata.read(ptr, size)
        if data is None:
            return f"<unreadable {ptr:#x}>"
        text = data.decode("utf-8", errors="replace")
        return text + CUT if n > size else text


def _adopt(taken: Taken, before: Taken, kept: set[int]) -> set[int]:
    """Into `taken`, the sets read before the pause (prescan) that a goroutine the
    pause kept points to, with their strings: those sets were live and unchanged from
    then to the pause. A set read in part then (unreadable, cut) is read again."""
    adopted = {p for p in kept if p in before.sets and p not in before.cut}
    for p in adopted:
        refs = before.sets[p]
        taken.sets[p] = refs
        for kp, kn, vp, vn in refs:
            for r in ((kp, min(kn, LABEL_BYTES)), (vp, min(vn, LABEL_BYTES))):
                if r[1] and before.strings.get(r) is not None:
                    taken.strings[r] = before.strings[r]
    return adopted


def label_reader(info, bias: int) -> LabelReader | None:
    """The reader for this binary, or None when it cannot hold labels we can read (no
    DWARF, or runtime/pprof's labelMap is not in it: nothing ever set labels)."""
    if "labels" not in info.layout.g_offsets or not info.has_dwarf:
        return None
    t = info.debug.type_by_name("runtime/pprof.labelMap")
    shape = _shape(t) if t is not None else None
    if shape is None:
        return None
    dead = info.layout.status_values.get("_Gdead", -1)
    return LabelReader(shape, dead, ReadOnlyData.open(info.path, bias))


def _shape(t):
    """The labelMap's shape from its DWARF type: _Slice, _Map, or None if unknown."""
    if t.kind == "map":
        h = t.impl
        fields = {f: h.field(f) if h is not None else None
                  for f in ("count", "flags", "B", "buckets", "oldbuckets")}
        if any(v is None for v in fields.values()):
            return None
        bt = fields["buckets"].type.elem
        keys, vals = bt.field("keys"), bt.field("values") or bt.field("elems")
        ovf = bt.field("overflow")
        if keys is None or vals is None or ovf is None or keys.type.elem.size != 16:
            return None
        return _Map(h.size, fields["count"].offset, fields["flags"].offset,
                    fields["B"].offset, fields["buckets"].offset,
                    fields["oldbuckets"].offset, bt.size, keys.offset, vals.offset,
                    ovf.offset)
    # Go >= 1.24: labelMap{LabelSet{list []label}} (1.26+: label.Set{List []label.Label}).
    off, s = 0, t
    while s.kind == "struct" and len(s.fields) == 1 and s.fields[0].type.kind == "struct":
        off += s.fields[0].offset
        s = s.fields[0].type
    if s.kind != "struct" or len(s.fields) != 1 or s.fields[0].type.kind != "slice":
        return None
    elem = s.fields[0].type.elem
    strs = [f for f in elem.fields if f.type.kind == "string"] if elem is not None else []
    if len(strs) != 2:
        return None
    return _Slice(off + s.fields[0].offset, elem.size, strs[0].offset, strs[1].offset)


def attach(proc, reader: LabelReader, taken: Taken) -> None:
    """Put each goroutine's labels on it (after the resume), and the reader's notes."""
    try:
        by_goid = reader.decode(taken)
    except Exception as e:  # noqa: BLE001 - never let labels cost the snapshot
        by_goid = {}
        taken.notes.append(f"labels: not decoded: {type(e).__name__}: {e}")
    for g in proc.goroutines:
        g.labels = by_goid.get(g.id, {})
    proc.label_reads = taken.reads
    proc.notes += taken.notes


def _words(scatter: Scatter, addrs: list[int]) -> tuple[list[int], set[int]]:
    """The 8-byte word at each address (0 where unreadable), and the unreadable indexes."""
    buf, _offs, bad = scatter([(a, 8) for a in addrs])
    return memoryview(buf).cast("B")[:8 * len(addrs)].cast("Q").tolist(), bad
