"""Collecting raw goroutine records from a paused process. The stop hook (bpf.py) has
usually walked the goroutines already, in the target's own context, by
the time the stop is complete; passes of the iterator read the threads and do whatever the
hook could not. Everything here runs while the target is stopped, so it only copies bytes
out of the programs' maps; decoding waits until after the resume (decode.py)."""
from __future__ import annotations

import base64
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

from pytest_sideeye.capture import parse_output
from pytest_sideeye.engine.bpf import Program, source_constants
from pytest_sideeye.engine.cstructs import c_struct
from pytest_sideeye.engine.sigframe import SignalCode
from pytest_sideeye.errors import SideeyeError

_C = source_constants()
MODE_THREADS, MODE_GS, MODE_CONT, MODE_READ, MODE_CAPTURE = (
    _C["MODE_THREADS"], _C["MODE_GS"], _C["MODE_CONT"], _C["MODE_READ"], _C["MODE_CAPTURE"])
MODE_KEEP, MODE_VERIFY = _C["MODE_KEEP"], _C["MODE_VERIFY"]
VERIFY_CHECK, VERIFY_NOSEQ, PRE_MAX = _C["VERIFY_CHECK"], _C["VERIFY_NOSEQ"], _C["PRE_MAX"]
GHDR = c_struct("ghdr")
# g.trackingSeq is a uint8: a goroutine that left running a multiple of 256 times between
# the pre-read and the pause shows the same header. Each of its exits with trackingSeq % 8
# == 0 is tracked, and its next transition to running adds one to sched.timeToRun's counts
# (proc.go casgstatus): 256 exits add at least 31. Fewer since the pre-read began: no
# goroutine's trackingSeq can have come round.
WRAP_COUNTS = 256 // 8 - 1
GCHUNK_WALKS = 256   # goroutines walked again from which the helper threads join in
HOOK_ARMED, HOOK_RUNNING, HOOK_DONE = _C["HOOK_ARMED"], _C["HOOK_RUNNING"], _C["HOOK_DONE"]
# The shared structs, by field name (bpf/snapshot.bpf.c declares them; cstructs reads them).
CFG = c_struct("config")
OUT = c_struct("out_t")
CAPENT = c_struct("capent")
MREC = c_struct("mrec")
CAP_COUNTERS = ("ncapq", "capused", "capfull", "ncappy", "ncapq1", "capfail")
HOOK_WAIT_S = 0.05        # after every thread stopped, how long the hook may still take
HELPER_WAIT_S = 10.0      # a helper's pass is one bounded BPF run: far less than this
# Goroutines from which helper threads pay: waking one and waiting for it costs ~0.1-0.3
# ms per pass, more than they save below this (the stop hook walks ~1,000 in its budget).
HELPERS_FROM = 2048

F_MORE, F_BADFP, F_READFAIL, F_NOG = _C["F_MORE"], _C["F_BADFP"], _C["F_READFAIL"], _C["F_NOG"]
# Words of a goroutine record's header (struct grec.h), as the C numbers them.
(H_GP, H_GOID, H_STATUS, H_WAITREASON, H_WAITSINCE, H_GOPC, H_PARENT, H_M, H_LO, H_HI,
 H_SP, H_PC, H_BP, H_SYSSP, H_SYSPC, H_SYSBP, H_NFRAMES, H_FLAGS, H_CONT_FP, H_INDEX,
 H_LABELS) = (
    _C[f"H_{n}"] for n in ("GP", "GOID", "STATUS", "WAITREASON", "WAITSINCE", "GOPC",
                           "PARENT", "M", "LO", "HI", "SP", "PC", "BP", "SYSSP", "SYSPC",
                           "SYSBP", "NFRAMES", "FLAGS", "CONT_FP", "INDEX", "LABELS"))

MAX_TOTAL_FRAMES = 1024   # deeper stacks are cut (the runtime itself prints 100)
MAX_CONT_ROUNDS = MAX_TOTAL_FRAMES // 64


@dataclass
class Records:
    """What the pause produced for one process: raw goroutine, thread and M records as the
    programs wrote them (bpf/snapshot.bpf.c's struct grec, trec, mrec), decoded after the
    resume (decode.py). The last goroutine chunk is left as a view into a program's map (no
    copy in the pause); `freeze()` copies it, after which Records is a plain value that
    `to_json`/`from_json` record and replay (tests/data/records: decoding is tested from
    recorded runs per Go version, without root)."""
    pid: int
    allglen: int = 0
    ms: list[tuple[int, int, int]] = field(default_factory=list)   # (m, procid, curg)
    notes: list[str] = field(default_factory=list)
    hook: str = "none"    # what the stop hook did: none, walked, or "fell back: why"
    hook_ns: int = 0      # its walk's duration, as timed in the kernel
    hook_gs: int = 0      # goroutines it walked (a helping iterator pass walked the rest)
    helper_gs: int = 0    # goroutines the collector's helper threads walked (_Helper)
    # Raw bytes copied during the pause, decoded after it.
    threads_raw: bytes = b""
    nthreads: int = 0
    # Threads caught in the Go signal handler: the contexts they interrupted, as read from
    # their signal frames (struct trec each, tid first).
    signals_raw: bytes = b""
    nsignals: int = 0
    chunks: list = field(default_factory=list)   # MODE_GS outputs (bytes or map views), in order
    more: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)  # continuations
    syscall_keys: list[tuple[int, int]] = field(default_factory=list)  # maybe in a syscall
    # With a pre-read (Collector.preread): chunks[:pre_chunks] are its records (chunk ci
    # holds allgs[ci * per_chunk ...]), the chunk after them the goroutines walked again
    # in the pause, each superseding the pre-read's record of its allgs index (H_INDEX).
    pre_chunks: int = 0
    per_chunk: int = 0
    walk: str = ""        # "pre-read", or "in the pause" and why: what the snapshot says
    preread_ns: int = 0
    rewalked: int = 0     # goroutines walked again in the pause after the pre-read
    verify_ns: int = 0    # the in-pause check of every goroutine's header
    rewalk_ns: int = 0    # ... and the walks of those that changed
    # The pre-read's records with pprof labels, {(chunk, index): (goid, g.labels)}, found
    # before the pause (labels.LabelReader.prescan) so the pause scans only the re-walked.
    pre_labels: dict[tuple[int, int], tuple[int, int]] | None = None
    # ... and the label sets they point to, read then too (labels.Taken): the pause
    # adopts those of the goroutines it keeps (labels._adopt).
    pre_label_sets: object = None
    # The link probes' slots the pre-read read (links/preread_slots.PrereadProbes), and
    # how many of those frames the snapshot took (those of goroutines not walked again).
    pre_probes: object = None
    pre_probe_frames: int = 0

    def freeze(self) -> Records:
        """Copy what still lives in a program's map: the map is reused by the next pause."""
        self.chunks = [bytes(c) for c in self.chunks]
        return self

    def to_json(self) -> dict:
        self.freeze()
        return {"pid": self.pid, "allglen": self.allglen, "ms": [list(m) for m in self.ms],
                "notes": list(self.notes), "hook": self.hook, "hook_ns": self.hook_ns,
                "hook_gs": self.hook_gs, "helper_gs": self.helper_gs,
                "threads": _pack(self.threads_raw),
                "nthreads": self.nthreads, "chunks": [_pack(c) for c in self.chunks],
                "signals": _pack(self.signals_raw), "nsignals": self.nsignals,
                "more": [[ci, i, [_pack(r) for r in recs]]
                         for (ci, i), recs in sorted(self.more.items())],
                "syscall_keys": [list(k) for k in self.syscall_keys],
                "pre_chunks": self.pre_chunks, "per_chunk": self.per_chunk, "walk": self.walk,
                "rewalked": self.rewalked}

    @classmethod
    def from_json(cls, d: dict) -> Records:
        return cls(pid=d["pid"], allglen=d["allglen"], ms=[tuple(m) for m in d["ms"]],
                   notes=list(d["notes"]), hook=d["hook"], hook_ns=d["hook_ns"],
                   hook_gs=d["hook_gs"], helper_gs=d.get("helper_gs", 0),
                   threads_raw=_unpack(d["threads"]),
                   nthreads=d["nthreads"], chunks=[_unpack(c) for c in d["chunks"]],
                   signals_raw=_unpack(d["signals"]) if "signals" in d else b"",
                   nsignals=d.get("nsignals", 0),
                   more={(ci, i): [_unpack(r) for r in recs] for ci, i, recs in d["more"]},
                   syscall_keys=[tuple(k) for k in d["syscall_keys"]],
                   pre_chunks=d.get("pre_chunks", 0), per_chunk=d.get("per_chunk", 0),
                   walk=d.get("walk", ""), rewalked=d.get("rewalked", 0))

    def superseded(self) -> set[tuple[int, int]]:
        """Keys (chunk, record) of the pre-read's records that the pause walked again."""
        if not self.pre_chunks or len(self.chunks) <= self.pre_chunks:
            return set()
        chunk, size = self.chunks[self.pre_chunks], _grec_size()
        out = set()
        for off in range(0, len(chunk) - size + 1, size):
            index = struct.unpack_from("<Q", chunk, off + 8 * H_INDEX)[0]
            out.add(divmod(index, self.per_chunk))
        return out


def _grec_size() -> int:
    return c_struct("grec").size


def _pack(data: bytes) -> str:
    """Records are mostly zeros (unused frame slots): compressed, then base64."""
    return base64.b64encode(zlib.compress(bytes(data), 9)).decode("ascii")


def _unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


class _Helper:
    """A collector thread that runs the main thread's shared passes at the same time, on
    another CPU. Goroutine and capture passes are shared by claiming chunks with atomics
    (as the stop hook shares its pass), so with N threads a big process is walked in about
    1/N of the time. The program knows a helper by its thread id (config.helper_tid): it
    gives it its own scratch space and keeps it out of the main thread's other work."""

    def __init__(self, program: Program, link: int):
        self._program, self._link = program, link
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._closing = False
        self._started = threading.Event()
        self.tid = 0
        self._thread = threading.Thread(target=self._serve, name="sideeye-collect",
                                        daemon=True)
        self._thread.start()
        self._started.wait(HELPER_WAIT_S)

    def _serve(self) -> None:
        self.tid = threading.get_native_id()
        self._started.set()
        buf = bytearray(64)
        while True:
            self._go.acquire()
            if self._closing:
                return
            try:
                self._program.run(self._link, buf)
            except OSError:
                pass   # what it did not claim, the main thread's own pass claims
            finally:
                self._done.release()

    def start_pass(self) -> None:
        self._go.release()

    def finish_pass(self) -> None:
        """Wait until its pass is over: a chunk it claimed is written only then."""
        if not self._done.acquire(timeout=HELPER_WAIT_S):
            raise SideeyeError("a collecting thread did not finish its pass")

    def close(self) -> None:
        self._closing = True
        self._go.release()
        self._thread.join(HELPER_WAIT_S)


@dataclass(frozen=True)
class PackedCapture:
    """Capture tables as the programs' maps hold them: packing costs a tenth of a
    millisecond, which take.py spends before the first pause rather than between two."""
    tables: object
    ranges: bytes
    ops: bytes
    shift: int
    bits: bytes


def pack_capture(tables, const: dict) -> PackedCapture:
    shift, bits = tables.pack_bits(const["CAPBITS_WORDS"])
    return PackedCapture(tables, tables.pack_ranges(), tables.pack_ops(const["CAP_OPS"]),
                         shift, bits)


@dataclass(frozen=True)
class PreSlots:
    """Which of the PRE_MAX slots of a program's `pre` map a pre-read keeps its headers
    in: [base, base + count). Processes of one program pre-read before one stop (together
    mode) share the map, so each takes the slots the ones before it left; one by one, each
    has all of them."""
    base: int = 0
    count: int = PRE_MAX

    def short_of(self, allglen: int) -> str:
        """The snapshot's `walk` when the goroutines outnumber the slots."""
        if self.count >= PRE_MAX:
            return f"in the pause ({allglen} goroutines, over the {PRE_MAX} a pre-read keeps)"
        return (f"in the pause ({allglen} goroutines, over the {self.count} pre-read slots "
                f"of {PRE_MAX} that the processes of its program pre-read before it left "
                "(together mode))")


class HookLink:
    """The stop hook's attachment to sched_switch, which several collectors of one program
    may share (take.py collects a snapshot's processes back to back: attaching costs
    milliseconds each time). Armed for one process at a time (Collector.arm_hook)."""

    def __init__(self, program: Program):
        self.program = program
        self.fd: int | None = None

    def attach(self) -> int | None:
        if self.fd is None:
            self.fd = self.program.attach_hook()
        return self.fd

    def detach(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Collector:
    """Drives the passes for one target process (link and config made before the pause)."""

    def __init__(self, program: Program, pid: int, addrs: dict[str, int], bias: int, *,
                 hook_budget_ns: int = 900_000, threads: int = 1,
                 signal_code: SignalCode | None = None, hook: HookLink | None = None):
        self.p = program
        # The pre-read (preread()): its records, and MODE_GS's filter while re-walking.
        self.pre: Records | None = None
        self._slots = PreSlots()
        self._pre_count, self._hist, self._queue = 0, (0, 0), None
        self._pre_taken = 0   # capture bytes read before the pause (keep_queued)
        self._verify = 0
        self._check = VERIFY_CHECK
        # How long the stop hook may walk with interrupts off on its CPU (the iterator
        # takes the rest): settings' SIDEEYE_HOOK_BUDGET_US.
        self.hook_budget_ns = hook_budget_ns
        self.pid = pid
        c = program.const
        self.per_pass = c["GS_PER_PASS"]
        self.cont_per_pass = c["CONT_PER_PASS"]
        self.todo_max = c["TODO_MAX"]
        self.max_frames = c["MAX_FRAMES"]
        self.hdr_words = c["HDR_WORDS"]
        self.grec_size = c_struct("grec").size
        self.trec_size = c_struct("trec").size
        self.max_threads = c["MAX_THREADS"]
        self.reads_per_pass = c["READS_PER_PASS"]
        self.read_max = c["READ_MAX"]
        self.read_out = c["READ_OUT"]
        self.addrs = addrs
        self.bias = bias
        self.link = program.link(pid)
        self.hook_link = None
        # The stop hook's attachment: the caller's when it collects several processes of
        # this program in a row (attaching costs milliseconds), else this collector's own.
        self.own_hook = hook is None
        self.hook = HookLink(program) if hook is None else hook
        self.buf = bytearray(64)
        self.helpers = self._start_helpers(threads - 1) \
            if threads > 1 and self._goroutines_now() >= HELPERS_FROM else []
        self.signal_code = signal_code
        # The pre-read (preread()): its records, and MODE_GS's filter while re-walking.
        self.claim()

    def claim(self) -> None:
        """Write this process's part of the program's shared config; again right before
        its pause when other collectors of the same program were made meanwhile (take.py
        makes them all before the first pause)."""
        # Always written: a stale id of an earlier collector's helper could be this
        # thread's now (programs are pinned and shared).
        CFG.set_array(self.p.cfg, "helper_tid", [h.tid for h in self.helpers])
        # Always written too: another binary's code ranges mean nothing in this one.
        CFG.set(self.p.cfg, **(self.signal_code.config(self.bias) if self.signal_code
                               else SignalCode.NONE))

    def _start_helpers(self, n: int) -> list[_Helper]:
        """Up to MAX_HELPERS helper threads; one that did not start (no thread id to tell
        it by) is closed rather than left to run as if it were the main thread."""
        helpers = [_Helper(self.p, self.link)
                   for _ in range(min(n, self.p.const["MAX_HELPERS"]))]
        for h in [h for h in helpers if not h.tid]:
            h.close()
        return [h for h in helpers if h.tid]

    def _goroutines_now(self) -> int:
        """runtime.allglen of the running target, read before the pause (0 if unreadable):
        whether helper threads are worth waking."""
        addr = self.addrs["runtime.allglen"] + self.bias
        data = self.read_many(Records(self.pid), [(addr, 8)]).get((addr, 8))
        return struct.unpack("<Q", data)[0] if data else 0

    def close(self) -> None:
        """Idempotent: take.py closes each after its pause, and any left on the way out."""
        if self.link is None:
            return
        if self.own_hook:
            self._detach_hook()
        elif self.hook_link is not None:
            if self._hook_state() == HOOK_RUNNING:
                self._detach_hook()   # waits for that run to end (it would re-arm at its end)
            # Kept attached for the next process: disarmed, it acts for nobody (and only
            # acts on a process group-stopped, which this one no longer is).
            CFG.set(self.p.cfg, hook_state=0)
            self.hook_link = None
        for h in self.helpers:
            h.close()
        self.helpers = []
        CFG.set_array(self.p.cfg, "helper_tid", [])
        os.close(self.link)
        self.link = None

    # --- variable capture in BPF (capture/templates.py) ----------------------------------
    def set_capture(self, tables, budget_ns: int = 0, budget_bytes: int = 0,
                    packed: PackedCapture | None = None) -> None:
        """Before the pause: the capture tables for this snapshot, or None (no capture),
        how long reading captured frames may take in the pause and how many bytes;
        `packed`: the tables already packed (pack_capture), else packed here."""
        CFG.set(self.p.cfg, cap_deadline=0, cap_budget_ns=budget_ns, cap_bytes=budget_bytes)
        self._new_capture_generation()
        OUT.set(self.p.out, **dict.fromkeys(CAP_COUNTERS, 0))
        CFG.set(self.p.cfg, cap_cursor1=0)
        if tables is None:
            CFG.set(self.p.cfg, cap_lo=0, cap_hi=0, cap_nranges=0, cap_cursor=0)
            return
        if packed is None or packed.tables is not tables:
            packed = pack_capture(tables, self.p.const)
        ranges, ops, shift, bits = packed.ranges, packed.ops, packed.shift, packed.bits
        self.p.captab[:len(ranges)] = ranges
        self.p.capops[:len(ops)] = ops
        self.p.capbits[:len(bits)] = bits
        CFG.set(self.p.cfg, cap_lo=tables.lo, cap_hi=tables.hi, cap_shift=shift,
                cap_nranges=len(tables.ranges), cap_cursor=0)

    def _new_capture_generation(self) -> None:
        """What the programs remember of their capture reads (where in capbuf an address
        was copied) is stale once capbuf starts over: a new generation number says so.
        Counted in the map itself: pinned programs share it with other processes."""
        CFG.set(self.p.cfg, cap_gen=CFG.get(self.p.cfg, "cap_gen") + 1)

    def _out_word(self, name: str) -> int:
        return OUT.get(self.p.out, name)

    def _capture_mode(self) -> int:
        """MODE_CAPTURE when this snapshot captures variables (the helping pass reads the
        frames it walked right after walking them)."""
        return MODE_CAPTURE if CFG.get(self.p.cfg, "cap_hi") else 0

    def capture_pass(self, raw: Records) -> None:
        """Read the captured frames nobody has read yet (all of them without the hook)."""
        if not (self._out_word("ncapq") or self._out_word("ncapq1")):
            # None queued (after a pre-read, often: its kept goroutines' probe frames were
            # read before the pause): a pass would cost ~0.05 ms of the pause for nothing.
            return
        self._configure(MODE_CAPTURE)
        self._run(raw, shared=True)

    def failed_capture_frames(self, tables) -> list[tuple[int, int]]:
        """(pc, cfa) of the frames BPF read with at least one failed read; empty (and
        free) when none failed, the common case. A failed read of the binary's read-only
        data (string literals, often never paged in) is no reason: it cannot change, and
        the decoder reads it from the file after the resume."""
        if not self._out_word("capfail"):
            return []
        out = self.capture_output(tables)
        by_entry = {q: key for key, q in out.frames.items()}
        return sorted({by_entry[q] for q, reads in out.reads.items()
                       if q in by_entry and any(data is None and not tables.is_constant(a, s)
                                                for a, data, s in reads)})

    def capture_used(self) -> int:
        return self._out_word("capused")

    def python_frames(self, raw: Records) -> list[tuple[int, int]]:
        """(pc, cfa) of the captured frames whose ranges only Python can read."""
        # Sized as capq itself: a frame is listed once per capture pass, so none is left
        # out (the note below is for a C change that breaks this).
        n = min(self._out_word("ncappy"), self.p.const["CAPPY_MAX"])
        entries = struct.unpack_from(f"<{n}Q", self.p.cappy, 0)
        out = []
        for q in entries:
            _gidx, _frame, pc, cfa = struct.unpack_from(CAPENT.format, self.p.capq,
                                                        CAPENT.size * q)
            out.append((pc, cfa))
        if self._out_word("ncappy") > n:
            raw.notes.append(f"capture: {self._out_word('ncappy') - n} frames past the first "
                             f"{n} that need the Python path were not captured")
        return out

    def capture_output(self, tables):
        """After the resume: what the BPF capture read, per frame."""
        used = min(self._out_word("capused"), self.p.const["CAPBUF"])
        regions = [(0, self._out_word("ncapq"), CFG.get(self.p.cfg, "cap_cursor")),
                   (self.p.const["CAPQ_REGION"], self._out_word("ncapq1"),
                    CFG.get(self.p.cfg, "cap_cursor1"))]
        out = parse_output(self.p.capq, regions, memoryview(self.p.capbuf), used, tables,
                           self.p.const["CAPQ_REGION"])
        out.dropped = self._out_word("capfull")
        return out

    # --- the stop hook ----------------------------------------------------------------
    def arm_hook(self) -> bool:
        """Before the stop: arm the stop hook for this process and attach it. False when
        this kernel has no hook (the iterator then does everything)."""
        self._configure(0)
        self.p.out[:OUT.union_offset] = bytes(OUT.union_offset)
        self._new_gs_pass()
        CFG.set(self.p.cfg, hook_budget_ns=self.hook_budget_ns)
        CFG.set(self.p.cfg, hook_tgid=self.pid, hook_count=self.per_pass, hook_state=HOOK_ARMED)
        self.hook_link = self.hook.attach()
        return self.hook_link is not None

    def _detach_hook(self) -> None:
        """Closing the link waits for a run of the hook in progress to finish (a shared
        attachment is attached again by the next collector that arms it)."""
        if self.hook_link is not None:
            self.hook.detach()
            self.hook_link = None

    def _hook_state(self) -> int:
        return CFG.get(self.p.cfg, "hook_state")

    def hook_saw_stop(self) -> bool:
        """True once the hook has started: it starts only when the stop is complete."""
        return self._hook_state() >= HOOK_RUNNING

    def _hook_result(self, raw: Records) -> tuple[int, int, int] | None:
        """(allglen, nrecs, ntodo) of the hook's walk of allgs[0 .. GS_PER_PASS), or None
        when the iterator must do it: no hook, it did not run in time, or some g or stack
        was not resident (the hook never faults pages in; the iterator may)."""
        if self.hook_link is None:
            return None
        deadline = time.perf_counter() + HOOK_WAIT_S
        helping = self._capture_mode()
        while self._hook_state() != HOOK_DONE:
            if helping and self._out_word("hook_walked"):
                # The hook walked; it reads its captured frames now: read them with it.
                helping = 0
                self.capture_pass(raw)
                continue
            if time.perf_counter() > deadline:
                self._detach_hook()
                if self._hook_state() != HOOK_DONE:
                    raw.hook = "fell back: the hook did not run"
                    return None
            time.sleep(0)
        allglen, nrecs, ntodo, gfails, gerrors = self._gs_words()
        raw.hook_ns, raw.hook_gs = OUT.get_many(self.p.out, "hook_ns", "hook_gs")
        cursor = CFG.get(self.p.cfg, "cursor")
        if cursor < nrecs and not gerrors:
            # The hook kept to its budget and nobody helped it: finish its pass.
            self._shared_pass(raw, MODE_GS)
            allglen, nrecs, ntodo, gfails, gerrors = self._gs_words()
        if gerrors or gfails:
            raw.hook = f"fell back: {gerrors + gfails} reads needed pages not resident"
            return None
        raw.hook = "walked"
        return allglen, nrecs, ntodo

    # --- passes -------------------------------------------------------------------------
    def _configure(self, mode: int, start: int = 0, count: int = 0) -> None:
        # verify is always written: the maps are shared, a filter left set would skip
        # goroutines in another collector's walk.
        CFG.set(self.p.cfg, mode=mode, start=start, count=count, pad=0, verify=self._verify,
                allgs_addr=self.addrs["runtime.allgs"] + self.bias,
                allglen_addr=self.addrs["runtime.allglen"] + self.bias,
                allm_addr=self.addrs["runtime.allm"] + self.bias, bias=self.bias)

    def _shared_pass(self, raw: Records, mode: int) -> None:
        """A pass claiming what is left of the goroutine pass the hook started."""
        self._configure(mode, 0, self.per_pass)
        self._run(raw, shared=True)

    def _gs_words(self) -> tuple[int, int, int, int, int]:
        """(allglen, nrecs, ntodo, gfails, gerrors) of the last goroutine pass."""
        return OUT.get_many(self.p.out, "allglen", "nrecs", "ntodo", "gfails", "gerrors")

    def _new_gs_pass(self, start: int = 0) -> None:
        """Zero what a MODE_GS pass counts with atomics (the hook and the iterator may
        share a pass): the claim cursor, nrecs, ntodo, gfails and gerrors; and, when the
        walk starts over, the captured frames queued so far."""
        CFG.set(self.p.cfg, cursor=0)
        OUT.set(self.p.out, nrecs=0, ntodo=0, gfails=0, gerrors=0)
        if start == 0:
            OUT.set(self.p.out, helper_gs=0)
            self._new_capture_generation()
            CFG.set(self.p.cfg, cap_cursor=0, cap_cursor1=0)
            OUT.set(self.p.out, **dict.fromkeys(CAP_COUNTERS, 0))

    def _run(self, raw: Records, shared: bool = False) -> None:
        """One pass; `shared` (goroutine and capture passes) runs it in every helper too."""
        if not shared:
            self.p.run(self.link, self.buf)
            return
        for h in self.helpers:
            h.start_pass()
        try:
            self.p.run(self.link, self.buf)
        finally:
            for h in self.helpers:
                h.finish_pass()

    def prewarm(self) -> None:
        """One goroutine pass over the still-running target, its results discarded: it
        brings the target's page tables and the pages the paused pass will read into the
        caches, so that the pass in the pause runs warm (about twice as fast). Reading a
        running process is harmless; what it reads is never used."""
        self._configure(MODE_GS, 0, self.per_pass)
        self._new_gs_pass()
        self.p.run(self.link, self.buf)

    def collect(self, raw: Records) -> None:
        """All stack passes. Called with the target stopped."""
        if self.pre is not None:
            pending = self._verified(raw)
            if pending is None:
                pending = self._passes(raw, MODE_GS, 0, [])
        else:
            pending = self._goroutines(raw)
        raw.helper_gs = self._out_word("helper_gs")
        self._continue(raw, pending)

    # --- the pre-read: walk while the target runs, check headers in the pause --------
    def preread(self, max_ns: int, hist: tuple[int, int], check: int = VERIFY_CHECK,
                slots: PreSlots | None = None) -> Records:
        """Walk every goroutine with the target running, keeping each header as read
        before its walk (MODE_KEEP), so that the pause only checks headers (_verified).
        Returns the pre-read's records; self.pre is set only when it can stand: the
        goroutine list read whole within max_ns. Call after set_capture: captured frames
        it finds are queued for the pause's capture pass to read (values are read in the
        pause, but for the link probes' stack slots: keep_queued). `hist`: (address,
        size) of runtime.sched.timeToRun in the target.
        `check`: VERIFY_NOSEQ only for the ABA test. `slots`: where in the program's
        `pre` map this process's headers go (PreSlots; all of it by default)."""
        pre = Records(self.pid, per_chunk=self.per_pass)
        self.pre, self._verify = None, 0
        self._slots = slots or PreSlots()
        self._pre_count, self._hist, self._queue = 0, hist, None
        self._pre_taken = 0
        CFG.set(self.p.cfg, pre_count=0, pre_base=self._slots.base)
        t0 = time.perf_counter_ns()
        # Read before any header: every header kept is younger than this count.
        data = self.read_many(pre, [hist]).get(hist)
        if data is None:
            pre.walk = "in the pause (sched.timeToRun was unreadable)"
            return pre
        self._hist_base = sum(struct.unpack(f"<{hist[1] // 8}Q", data))
        CFG.set(self.p.cfg, hist_addr=hist[0], hist_words=hist[1] // 8)
        view = memoryview(self.p.gout)
        pending: list = []
        start = kept = 0
        while True:
            self._configure(MODE_GS, start, self.per_pass)
            self._new_gs_pass(start)
            self._run(pre, shared=True)
            allglen, nrecs, ntodo, _gfails, gerrors = self._gs_words()
            if gerrors:
                pre.walk = "in the pause (the goroutine list was unreadable while running)"
                return pre
            if nrecs and start + nrecs > self._slots.count:
                pre.walk = self._slots.short_of(allglen)
                return pre
            if nrecs:
                pre.chunks.append(bytes(view[:nrecs * self.grec_size]))
                pending += self._todo(pre, len(pre.chunks) - 1, nrecs, ntodo)
                self._configure(MODE_KEEP, start, nrecs)
                self._run(pre)
                kept = start + nrecs
            pre.allglen = allglen
            start += self.per_pass
            if start >= allglen or not nrecs or start >= PRE_MAX:
                break
            if time.perf_counter_ns() - t0 > max_ns:
                break
        self._continue(pre, pending)
        pre.syscall_keys = []   # never kept valid: walked again in the pause
        self._unkeep_broken(pre)
        pre.preread_ns = time.perf_counter_ns() - t0
        if kept < pre.allglen:
            pre.walk = (f"in the pause (the pre-read read {kept} of {pre.allglen} goroutines"
                        + (f" in its {max_ns / 1e6:g} ms" if kept < PRE_MAX else "") + ")")
            return pre
        if pre.preread_ns > max_ns:
            pre.walk = (f"in the pause (the pre-read took {pre.preread_ns / 1e6:.1f} ms, over "
                        f"its {max_ns / 1e6:g} ms)")
            return pre
        CFG.set(self.p.cfg, pre_count=kept)
        self._pre_count = kept
        pre.pre_chunks = len(pre.chunks)
        pre.walk = "pre-read"
        self.pre, self._check = pre, check
        self._queue = self._queued_frames()
        return pre

    @property
    def pre_kept(self) -> int:
        """Slots of the program's `pre` map this process's standing pre-read holds."""
        return self._pre_count if self.pre is not None else 0

    def _queued_frames(self) -> tuple[int, bytes] | None:
        """The captured frames the pre-read queued (capq's second region, the iterator's,
        and its count), as bytes: a later process's pre-read of the same program queues
        its own there (together mode); requeue() puts them back. None: no capture."""
        if not CFG.get(self.p.cfg, "cap_hi"):
            return None
        n = self._out_word("ncapq1")
        first = self.p.const["CAPQ_REGION"]
        kept = min(n, first)
        return n, bytes(self.p.capq[first * CAPENT.size:(first + kept) * CAPENT.size])

    def requeue(self) -> None:
        """In the pause, after set_capture (which empties capq): the captured frames this
        process's pre-read queued, back in capq for the capture pass: every process of a
        snapshot is pre-read before the first pause, so others of its program may have
        been pre-read after it (take._all_before_pause)."""
        if self.pre is None or self._queue is None:
            return
        n, entries = self._queue
        first = self.p.const["CAPQ_REGION"] * CAPENT.size
        self.p.capq[first:first + len(entries)] = entries
        OUT.set(self.p.out, ncapq1=n)
        if self._pre_taken:   # what keep_queued read counts towards the byte budget
            budget = CFG.get(self.p.cfg, "cap_bytes")
            CFG.set(self.p.cfg, cap_bytes=max(0, budget - self._pre_taken))

    def queued_frames(self) -> list[tuple[int, int, int, int]] | None:
        """Before the pause, after a pre-read that stands: the captured frames it queued,
        as (allgs index, frame, pc, cfa); None when they overflowed capq's region."""
        if self.pre is None or self._queue is None:
            return None
        n, entries = self._queue
        if n > self.p.const["CAPQ_REGION"]:
            return None
        return [struct.unpack_from(CAPENT.format, entries, j * CAPENT.size)[:4]
                for j in range(n)]

    def keep_queued(self, keep: list[int], taken_bytes: int) -> None:
        """Before the pause: of the frames queued_frames() gave, only those at the indexes
        `keep` (in order) stay queued for the pause's capture pass; the others were read
        already (links/preread_slots.py), `taken_bytes` as the capture buffer counts them,
        which the pause's capture may use that much less of (requeue)."""
        _n, entries = self._queue
        size = CAPENT.size
        self._queue = (len(keep), b"".join(entries[i * size:(i + 1) * size] for i in keep))
        self._pre_taken = taken_bytes
        self.requeue()

    def _unkeep_broken(self, pre: Records) -> None:
        """A deep stack whose continuation went wrong while the target ran is walked
        again in the pause: its kept header is made invalid."""
        for (ci, i), recs in pre.more.items():
            flags = struct.unpack_from("<Q", recs[-1], 8 * H_FLAGS)[0]
            if flags & (F_BADFP | F_READFAIL | F_MORE):
                index = self._slots.base + ci * self.per_pass + i
                GHDR.set(memoryview(self.p.pre)[index * GHDR.size:], small=0)

    def prewarm_verify(self) -> None:
        """Right before the pause, after a pre-read that stands: one MODE_VERIFY pass over
        the running target, its results discarded (_verified writes again every word it
        reads), so that the pause's check finds the allgs array and the g structs in the
        caches, whatever ran since the pre-read (the link probes' slot reads, labels,
        context chains). Measured at 1,000 goroutines: the pause's verify 0.05-0.07 ms
        shorter than without it, 0.1 ms shorter than after the probes' slot reads."""
        if self.pre is None:
            return
        self._verify = self._check
        CFG.set(self.p.cfg, cursor=0, pre_base=self._slots.base, pre_count=self._pre_count)
        OUT.set(self.p.out, nchanged=0, gerrors=0)
        self._configure(MODE_VERIFY)
        self._run(Records(self.pid))
        self._verify = 0

    def _verified(self, raw: Records) -> list | None:
        """In the pause, after a pre-read: check every goroutine's header (MODE_VERIFY,
        reading the allgs array and the g structs only) and walk again those that differ.
        Returns the walks to continue, or None (with raw.walk saying why) when the full
        walk must be done after all."""
        pre = self.pre
        t0 = time.perf_counter_ns()
        self._verify = self._check
        # This process's slots and counters: another process of the program may have
        # been pre-read since (together mode).
        CFG.set(self.p.cfg, cursor=0, pre_base=self._slots.base, pre_count=self._pre_count,
                hist_addr=self._hist[0], hist_words=self._hist[1] // 8)
        OUT.set(self.p.out, nchanged=0, gerrors=0, helper_gs=0)
        self._configure(MODE_THREADS | MODE_VERIFY)
        self._run(raw, shared=True)
        self._read_threads(raw)
        allglen, nchanged, gerrors, hist = OUT.get_many(self.p.out, "allglen", "nchanged",
                                                        "gerrors", "hist_sum")
        t1 = time.perf_counter_ns()
        raw.verify_ns, raw.preread_ns, raw.allglen = t1 - t0, pre.preread_ns, allglen
        ran = hist - self._hist_base
        why = ("the goroutine list was unreadable" if gerrors else
               "sched.timeToRun was unreadable" if hist == 2**64 - 1 else
               f"{ran} tracked runs since the pre-read: trackingSeq could have wrapped"
               if not 0 <= ran < WRAP_COUNTS else
               f"{allglen} goroutines, over the {PRE_MAX} a pre-read keeps"
               if allglen > PRE_MAX else
               f"{nchanged} of {allglen} goroutines changed since the pre-read"
               if nchanged > self.per_pass or 2 * nchanged > allglen + 64 else "")
        if why:
            self._verify = 0
            raw.walk = f"in the pause ({why})"
            return None
        # An array map's values are 8-byte aligned in its mapping: a u32 each 8 bytes.
        indexes = sorted(i & 0xffffffff for i in
                         struct.unpack_from(f"<{nchanged}Q", self.p.changed, 0))
        raw.chunks, raw.more = list(pre.chunks), dict(pre.more)
        raw.pre_labels, raw.pre_label_sets = pre.pre_labels, pre.pre_label_sets
        raw.pre_chunks, raw.per_chunk = pre.pre_chunks, self.per_pass
        ci = len(raw.chunks)
        recs: list[bytes] = []
        pending: list = []
        view = memoryview(self.p.gout)
        for start in sorted({i - i % self.per_pass for i in indexes}):
            CFG.set(self.p.cfg, cursor=0)
            OUT.set(self.p.out, nrecs=0, ntodo=0, gfails=0, gerrors=0)
            self._configure(MODE_GS, start, self.per_pass)
            # Waking the helpers costs more than a few walks (0.1-0.3 ms a pass).
            self._run(raw, shared=len(indexes) > GCHUNK_WALKS)
            for i in indexes:
                if start <= i < start + self.per_pass:
                    off = (i - start) * self.grec_size
                    rec = bytes(view[off:off + self.grec_size])
                    self._follow_up(raw, (ci, len(recs)), rec, pending)
                    recs.append(rec)
        self._verify = 0
        raw.chunks.append(b"".join(recs))
        raw.rewalked, raw.walk = len(recs), "pre-read"
        raw.rewalk_ns = time.perf_counter_ns() - t1
        return pending

    def _follow_up(self, raw: Records, key: tuple[int, int], rec: bytes, pending: list) -> None:
        """What _todo does for a pass's listed records, for one record walked again."""
        flags, cont = struct.unpack_from("<QQ", rec, 8 * H_FLAGS)
        if flags & F_MORE:
            lo, hi = struct.unpack_from("<QQ", rec, 8 * H_LO)
            pending.append((key, cont, lo, hi))
        elif not flags & F_NOG:
            raw.syscall_keys.append(key)

    def _read_threads(self, raw: Records) -> None:
        nms, nthreads = OUT.get_many(self.p.out, "nms", "nthreads")
        base = OUT.union_offset
        data = bytes(self.p.out[base:base + self.trec_size * min(nthreads, self.max_threads)])
        mbase = OUT.union_offset + self.trec_size * self.max_threads
        mdata = bytes(self.p.out[mbase:mbase + MREC.size * nms])
        raw.threads_raw = data
        raw.ms = [struct.unpack_from(MREC.format, mdata, MREC.size * i)[:3] for i in range(nms)]
        raw.nthreads = min(nthreads, self.max_threads)
        nsigs = min(self._out_word("nsigs"), self.max_threads)
        if nsigs:   # rare: a thread caught in the Go signal handler
            sbase = mbase + MREC.size * self.p.const["MAX_MS"]
            raw.signals_raw = bytes(self.p.out[sbase:sbase + self.trec_size * nsigs])
        raw.nsignals = nsigs
        if nthreads > self.max_threads:
            raw.notes.append(f"only the first {self.max_threads} of {nthreads} threads were read")

    def _goroutines(self, raw: Records) -> list:
        """The stop hook's walk of the first GS_PER_PASS goroutines, then MODE_GS passes
        over the rest of allgs (over all of it when the hook did not walk). Returns the
        walks to continue (stacks deeper than one pass's frames); syscalls of Go < 1.23 are
        kept in raw.syscall_keys for decode.py."""
        view = memoryview(self.p.gout)
        pending: list = []
        if self.hook_link is not None and self.hook_saw_stop():
            # Help the hook, usually running on another CPU: read the threads, then claim
            # the goroutines it has not claimed yet (nothing is reset: the pass is shared).
            # Alone, it also reads the frames it queued right after walking them; with
            # helpers it must not: one could start reading the queue while another still
            # fills it (an entry reserved but not written yet would be lost). Their frames
            # are read by the capture passes after.
            capture = self._capture_mode() if not self.helpers else 0
            self._shared_pass(raw, MODE_THREADS | MODE_GS | capture)
            self._read_threads(raw)
        hooked = self._hook_result(raw)
        if hooked is None:
            # The first pass also reads the threads (again, if the hook fell back).
            mode, start = MODE_THREADS | MODE_GS, 0
        else:
            if self._take_chunk(raw, view, 0, *hooked, pending):
                return pending
            mode, start = MODE_GS, self.per_pass
        return self._passes(raw, mode, start, pending)

    def _passes(self, raw: Records, mode: int, start: int, pending: list) -> list:
        """MODE_GS passes over allgs[start ..) (the first may read the threads too)."""
        view = memoryview(self.p.gout)
        while True:
            self._configure(mode, start, self.per_pass)
            self._new_gs_pass(start)
            self._run(raw, shared=True)
            if mode & MODE_THREADS:
                self._read_threads(raw)
                mode = MODE_GS
            allglen, nrecs, ntodo, _gfails, gerrors = self._gs_words()
            if gerrors:
                raw.notes.append(f"goroutines {start}..{start + self.per_pass} could not be "
                                 "read: the list of goroutines (allgs) was unreadable")
                nrecs = 0
            if self._take_chunk(raw, view, start, allglen, nrecs, ntodo, pending):
                return pending
            start += self.per_pass

    def _take_chunk(self, raw: Records, view, start: int, allglen: int, nrecs: int,
                    ntodo: int, pending: list) -> bool:
        """Keep the records of the goroutine pass that began at `start`; True if last."""
        raw.allglen = allglen
        last = start + self.per_pass >= allglen or not nrecs
        if nrecs:
            # The last pass stays in the map (decoded after the resume); only earlier
            # passes of a big process are copied out before the map is reused.
            chunk = view[:nrecs * self.grec_size]
            ci = len(raw.chunks)
            raw.chunks.append(chunk if last else bytes(chunk))
            pending += self._todo(raw, ci, nrecs, ntodo)
        return last

    def _todo(self, raw: Records, ci: int, nrecs: int, ntodo: int) -> list:
        """Records of chunk ci needing a follow-up walk, as listed by the program."""
        if ntodo <= self.todo_max:
            indexes = struct.unpack_from(f"<{ntodo}Q", self.p.todo, 0)
        else:
            indexes = range(nrecs)   # the list overflowed: look at every record
        chunk = raw.chunks[ci]
        pending = []
        for i in indexes:
            off = i * self.grec_size
            flags, cont = struct.unpack_from("<QQ", chunk, off + 8 * H_FLAGS)
            if flags & F_MORE:
                lo, hi = struct.unpack_from("<QQ", chunk, off + 8 * H_LO)
                pending.append(((ci, i), cont, lo, hi))
            elif ntodo <= self.todo_max or not flags & F_NOG:
                raw.syscall_keys.append((ci, i))
        return pending

    def _continue(self, raw: Records, pending: list) -> None:
        rounds = 0
        while pending and rounds < MAX_CONT_ROUNDS:
            rounds += 1
            nxt = []
            for batch_start in range(0, len(pending), self.cont_per_pass):
                batch = pending[batch_start:batch_start + self.cont_per_pass]
                for j, (key, fp, lo, hi) in enumerate(batch):
                    struct.pack_into("<QQQQ", self.p.conts, 32 * j, j, fp, lo, hi)
                self._configure(MODE_CONT, len(batch))
                self._run(raw)
                data = bytes(self.p.out[OUT.union_offset:OUT.union_offset + len(batch) * self.grec_size])
                for j, (key, fp, lo, hi) in enumerate(batch):
                    off = j * self.grec_size
                    raw.more.setdefault(key, []).append(data[off:off + self.grec_size])
                    flags, cont = struct.unpack_from("<QQ", data, off + 8 * H_FLAGS)
                    if flags & F_MORE:
                        nxt.append((key, cont, lo, hi))
            pending = nxt
        if pending:
            raw.notes.append(f"{len(pending)} stacks deeper than {MAX_TOTAL_FRAMES} frames cut")

    def start_syscall_walks(self, raw: Records, starts: list) -> None:
        """Continue walks from computed frame pointers: [(key, fp, lo, hi)]."""
        self._continue(raw, starts)

    def read_many(self, raw: Records, requests: list[tuple[int, int]]) -> dict:
        """Copy (addr, size) ranges out of the target, as {(addr, size): bytes or None}.

        A copy costs about the same whatever its size up to a page, so nearby ranges (heap
        objects allocated together, slots of one frame) are merged into spans of up to
        READ_MAX bytes; a merged span that fails (it crossed into unmapped memory) is read
        again range by range."""
        wanted = sorted(set(requests))
        spans = _merge_spans(wanted, self.read_max)
        got = self._read_spans(raw, [(a, n) for a, n, _ in spans])
        results: dict[tuple[int, int], bytes | None] = {}
        retry = []
        for (addr, size, members), data in zip(spans, got):
            for (ra, rn) in members:
                if data is not None:
                    results[(ra, rn)] = data[ra - addr:ra - addr + rn]
                elif len(members) > 1:
                    retry.append((ra, rn))
                else:
                    results[(ra, rn)] = None
        if retry:
            for key, data in zip(retry, self._read_spans(raw, retry)):
                results[key] = data
        return results

    def _read_spans(self, raw: Records, spans: list[tuple[int, int]]) -> list:
        """Read each (addr, size) span, any size, in as few passes as fit."""
        pieces = []   # (span index, address, size) of at most READ_MAX bytes each
        for si, (addr, size) in enumerate(spans):
            for off in range(0, size, self.read_max):
                pieces.append((si, addr + off, min(self.read_max, size - off)))
        parts: list[list] = [[] for _ in spans]
        failed = set()
        i = 0
        while i < len(pieces):
            batch, used = [], 0
            while i < len(pieces) and len(batch) < self.reads_per_pass and \
                    used + pieces[i][2] <= self.read_out:
                batch.append((pieces[i], used))
                used += (pieces[i][2] + 7) & ~7
                i += 1
            for j, ((_si, paddr, psize), off) in enumerate(batch):
                struct.pack_into("<QII", self.p.reads, 16 * j, paddr, psize, off)
            self._configure(MODE_READ, len(batch))
            self._run(raw)
            data_base = OUT.union_offset + 4 * self.reads_per_pass
            rcs = struct.unpack_from(f"<{len(batch)}i", self.p.out, OUT.union_offset)
            for ((si, _paddr, psize), off), rc in zip(batch, rcs):
                if rc != 0:
                    failed.add(si)
                else:
                    parts[si].append(bytes(self.p.out[data_base + off:data_base + off + psize]))
        return [None if si in failed else b"".join(parts[si]) for si in range(len(spans))]


MERGE_GAP = 256   # bytes between two ranges still worth reading in one copy


def _merge_spans(sorted_ranges: list[tuple[int, int]], limit: int) -> list:
    """[(addr, size, [members])]: sorted ranges grouped into spans of at most `limit`
    bytes (a range larger than that is a span of its own)."""
    spans: list = []
    for addr, size in sorted_ranges:
        if spans:
            s_addr, s_size, members = spans[-1]
            end = max(s_addr + s_size, addr + size)
            if addr <= s_addr + s_size + MERGE_GAP and end - s_addr <= limit:
                spans[-1] = (s_addr, end - s_addr, members + [(addr, size)])
                continue
        spans.append((addr, size, [(addr, size)]))
    return spans
