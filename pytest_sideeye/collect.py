"""Stage 4b: collecting raw goroutine records from a paused process by running passes of
the BPF program (bpfprog.py). Everything here runs while the target is stopped, so it only
copies bytes out of the program's output map; decoding waits until after the resume
(decode.py)."""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from .bpfprog import Program

MODE_THREADS, MODE_GS, MODE_CONT, MODE_READ = 1, 2, 4, 8
OUT_HEADER = 64           # out_t fields before the union
CFG_FMT = "<IIIIQQQQ"

F_MORE, F_BADFP, F_READFAIL, F_NOG = 1, 2, 4, 8
(H_GP, H_GOID, H_STATUS, H_WAITREASON, H_WAITSINCE, H_GOPC, H_PARENT, H_M, H_LO, H_HI,
 H_SP, H_PC, H_BP, H_SYSSP, H_SYSPC, H_SYSBP, H_NFRAMES, H_FLAGS, H_CONT_FP, H_INDEX) = range(20)

MAX_TOTAL_FRAMES = 1024   # deeper stacks are cut (the runtime itself prints 100)
MAX_CONT_ROUNDS = MAX_TOTAL_FRAMES // 64


@dataclass
class GRecord:
    """One goroutine as read in the pause (words as in bpf/snapshot.bpf.c)."""
    h: tuple[int, ...]
    pcs: list[int]
    fps: list[int]
    flags: int


@dataclass
class ThreadRecord:
    tid: int
    ip: int
    sp: int
    bp: int
    r14: int
    pcs: list[int]
    fps: list[int]
    flags: int


@dataclass
class RawProcess:
    pid: int
    allglen: int = 0
    goroutines: list[GRecord] = field(default_factory=list)
    threads: list[ThreadRecord] = field(default_factory=list)
    ms: list[tuple[int, int, int]] = field(default_factory=list)   # (m, procid, curg)
    notes: list[str] = field(default_factory=list)
    passes: int = 0
    # Raw bytes copied during the pause, decoded after it.
    threads_raw: bytes = b""
    nthreads: int = 0
    chunks: list = field(default_factory=list)   # MODE_GS outputs (bytes or map views), in order
    more: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)  # continuations
    syscall_keys: list[tuple[int, int]] = field(default_factory=list)  # maybe in a syscall


class Collector:
    """Drives the passes for one target process (link and config made before the pause)."""

    def __init__(self, program: Program, pid: int, addrs: dict[str, int], bias: int,
                 sp_delta=None):
        self.p = program
        self.pid = pid
        c = program.const
        self.per_pass = c["GS_PER_PASS"]
        self.cont_per_pass = c["CONT_PER_PASS"]
        self.todo_max = c["TODO_MAX"]
        self.max_frames = c["MAX_FRAMES"]
        self.hdr_words = c["HDR_WORDS"]
        self.grec_size = 8 * (self.hdr_words + 2 * self.max_frames)
        self.trec_size = 8 * (8 + 2 * self.max_frames)
        self.max_threads = c["MAX_THREADS"]
        self.reads_per_pass = c["READS_PER_PASS"]
        self.read_max = c["READ_MAX"]
        self.read_out = c["READ_OUT"]
        self.addrs = addrs
        self.bias = bias
        self.sp_delta = sp_delta   # pc -> frame size, for syscalls without syscallbp
        self.link = program.link(pid)
        self.buf = bytearray(64)

    def close(self) -> None:
        import os
        os.close(self.link)

    # --- passes -------------------------------------------------------------------------
    def _configure(self, mode: int, start: int = 0, count: int = 0) -> None:
        struct.pack_into(CFG_FMT, self.p.cfg, 0, mode, start, count, 0,
                         self.addrs["runtime.allgs"] + self.bias,
                         self.addrs["runtime.allglen"] + self.bias,
                         self.addrs["runtime.allm"] + self.bias, self.bias)

    def _run(self, raw: RawProcess) -> None:
        self.p.run(self.link, self.buf)
        raw.passes += 1

    def prewarm(self) -> None:
        """One goroutine pass over the still-running target, its results discarded: it
        brings the target's page tables and the pages the paused pass will read into the
        caches, so that the pass in the pause runs warm (about twice as fast). Reading a
        running process is harmless; what it reads is never used."""
        self._configure(MODE_GS, 0, self.per_pass)
        self.p.run(self.link, self.buf)

    def collect(self, raw: RawProcess) -> None:
        """All stack passes. Called with the target stopped."""
        self._continue(raw, self._goroutines(raw))

    def _read_threads(self, raw: RawProcess) -> None:
        nms = struct.unpack_from("<Q", self.p.out, 24)[0]
        nthreads = struct.unpack_from("<Q", self.p.out, 48)[0]
        base = OUT_HEADER
        data = bytes(self.p.out[base:base + self.trec_size * min(nthreads, self.max_threads)])
        mbase = OUT_HEADER + self.trec_size * self.max_threads
        mdata = bytes(self.p.out[mbase:mbase + 32 * nms])
        raw.threads_raw = data
        raw.ms = [struct.unpack_from("<QQQ", mdata, 32 * i) for i in range(nms)]
        raw.nthreads = min(nthreads, self.max_threads)
        if nthreads > self.max_threads:
            raw.notes.append(f"only the first {self.max_threads} of {nthreads} threads were read")

    def _goroutines(self, raw: RawProcess) -> list:
        """MODE_GS passes over allgs. Returns the walks to continue (stacks deeper than one
        pass's frames); syscalls of Go < 1.23 are kept in raw.syscall_keys for decode.py."""
        start = 0
        view = memoryview(self.p.gout)
        pending = []
        mode = MODE_THREADS | MODE_GS   # the first pass also reads every thread
        while True:
            self._configure(mode, start, self.per_pass)
            struct.pack_into("<Q", self.p.out, 16, 0)
            self._run(raw)
            if mode & MODE_THREADS:
                self._read_threads(raw)
                mode = MODE_GS
            allglen, _allgs, nrecs, _nms, _errors, ntodo = \
                struct.unpack_from("<6Q", self.p.out, 0)
            raw.allglen = allglen
            start += self.per_pass
            last = start >= allglen or not nrecs
            if nrecs:
                # The last pass stays in the map (decoded after the resume); only earlier
                # passes of a big process are copied out before the map is reused.
                chunk = view[:nrecs * self.grec_size]
                ci = len(raw.chunks)
                raw.chunks.append(chunk if last else bytes(chunk))
                pending += self._todo(raw, ci, nrecs, ntodo)
            if last:
                break
        return pending

    def _todo(self, raw: RawProcess, ci: int, nrecs: int, ntodo: int) -> list:
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

    def _continue(self, raw: RawProcess, pending: list) -> None:
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
                data = bytes(self.p.out[OUT_HEADER:OUT_HEADER + len(batch) * self.grec_size])
                for j, (key, fp, lo, hi) in enumerate(batch):
                    off = j * self.grec_size
                    raw.more.setdefault(key, []).append(data[off:off + self.grec_size])
                    flags, cont = struct.unpack_from("<QQ", data, off + 8 * H_FLAGS)
                    if flags & F_MORE:
                        nxt.append((key, cont, lo, hi))
            pending = nxt
        if pending:
            raw.notes.append(f"{len(pending)} stacks deeper than {MAX_TOTAL_FRAMES} frames cut")

    def start_syscall_walks(self, raw: RawProcess, starts: list) -> None:
        """Continue walks from computed frame pointers: [(key, fp, lo, hi)]."""
        self._continue(raw, starts)

    def read_many(self, raw: RawProcess, requests: list[tuple[int, int]]) -> dict:
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

    def _read_spans(self, raw: RawProcess, spans: list[tuple[int, int]]) -> list:
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
            data_base = OUT_HEADER + 4 * self.reads_per_pass
            rcs = struct.unpack_from(f"<{len(batch)}i", self.p.out, OUT_HEADER)
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
