"""Decoding raw records (collect.py) into the snapshot model, after the target was
resumed: statuses and wait reasons, running goroutines matched to their threads, frames
symbolized through pclntab with inlined frames expanded like the runtime's traceback."""
from __future__ import annotations

import struct

from pytest_sideeye.engine.collect import (
    F_BADFP,
    F_MORE,
    F_NOG,
    F_READFAIL,
    H_FLAGS,
    H_GOID,
    H_GOPC,
    H_GP,
    H_HI,
    H_LO,
    H_NFRAMES,
    H_PARENT,
    H_SP,
    H_STATUS,
    H_SYSPC,
    H_SYSSP,
    H_WAITREASON,
    H_WAITSINCE,
    Records,
)
from pytest_sideeye.engine.cstructs import c_struct
from pytest_sideeye.errors import NotGoBinary
from pytest_sideeye.snapshot import STATUSES, CreatedBy, Frame, Goroutine

# The runtime's status constants (_Grunning ...) by the model's names (running ...).
STATUS_NAMES = {"_G" + name: name for name in STATUSES}
STOP_AT = ("runtime.goexit",)
# A thread context passing through these runs Go's signal handler, not the goroutine.
SIGNAL_HANDLER = frozenset({"runtime.sigtramp", "runtime.sigreturn__sigaction",
                            "runtime.sighandler", "runtime.sigtrampgo"})
SP_UNWIND_FRAMES = 4   # frames unwound by their sizes from a thread's sp at most
_MISSING = object()


class RecordDecoder:
    def __init__(self, info, bias: int, const: dict[str, int]):
        self.info = info
        self.symtab = info.symtab
        self.bias = bias
        layout = info.layout
        self.status_by_value = {v: STATUS_NAMES[k] for k, v in layout.status_values.items()
                                if k in STATUS_NAMES}
        self.wait_reasons = layout.wait_reasons
        self.hdr_words = const["HDR_WORDS"]
        self.max_frames = const["MAX_FRAMES"]
        self.grec_size = c_struct("grec").size
        self.trec_size = c_struct("trec").size
        self.has_syscallbp = "syscallbp" in layout.g_offsets
        self._symbol_cache: dict[tuple, tuple | None] = {}

    # --- records ------------------------------------------------------------------------
    def _record(self, chunk: bytes, i: int):
        off = i * self.grec_size
        h = struct.unpack_from(f"<{self.hdr_words}Q", chunk, off)
        n = min(h[H_NFRAMES], self.max_frames)
        frames = struct.unpack_from(f"<{2 * n}Q", chunk, off + 8 * self.hdr_words)
        return h, list(frames[0::2]), list(frames[1::2])

    def _continuations(self, raw: Records, key) -> tuple[list[int], list[int], int]:
        pcs, fps, flags = [], [], 0
        for rec in raw.more.get(key, []):
            h, p, f = self._record(rec, 0)
            pcs += p
            fps += f
            flags = h[H_FLAGS]
        return pcs, fps, flags

    def threads(self, raw: Records) -> dict[int, tuple]:
        """Thread id -> (ip, sp, bp, pcs leaf first, walk flags), from its registers."""
        return self._contexts(raw.threads_raw, raw.nthreads)

    def signal_contexts(self, raw: Records) -> dict[int, tuple]:
        """The same, for each thread caught in the Go signal handler, of the context it
        interrupted (the registers in its signal frame): the goroutine's own frames."""
        return self._contexts(raw.signals_raw, raw.nsignals)

    def _contexts(self, data: bytes, count: int) -> dict[int, tuple]:
        out = {}
        trec = c_struct("trec")
        frames_at, stk = trec.offset("f"), trec.fields["stk"]
        for i in range(count):
            off = i * self.trec_size
            tid, ip, sp, bp, _r14, n, flags, _ = struct.unpack_from("<8Q", data, off)
            n = min(n, self.max_frames)
            walked = struct.unpack_from(f"<{2 * n}Q", data, off + frames_at)
            pcs, fps = list(walked[0::2]), walked[1::2]
            top = struct.unpack_from(f"<{stk.count}Q", data, off + stk.offset)
            out[tid] = (ip, sp, bp, self._with_leaf_caller(ip, pcs, top), flags, fps)
        return out

    def _with_leaf_caller(self, ip: int, pcs: list[int], top: tuple[int, ...]) -> list[int]:
        """A thread stopped in a leaf that pushed no frame pointer (a small frameless
        function, or any function before its prologue): the frame-pointer walk goes from
        the caller's frame pointer and skips the caller. Its return address is at sp + the
        leaf's frame size (pcsp), as runtime/traceback.go unwinds the innermost frame.

        The runtime's preemption signal handler may have made the goroutine call
        runtime.asyncPreempt (an injected call: what it returns to is the interrupted pc
        itself, whose function may be frameless too): unwinding by frame sizes then goes
        on, a few frames at most, until it meets the frame-pointer chain."""
        first = self._sp_caller(ip, 0, top)
        if first is None:
            return pcs
        one_step = pcs if len(pcs) > 1 and pcs[1] == first[0] else pcs[:1] + [first[0]] + pcs[1:]
        added: list[int] = []
        k, pc, off = 1, ip, 0   # pcs[k]: the frame-pointer chain's next return address
        for _ in range(SP_UNWIND_FRAMES):
            step = self._sp_caller(pc, off, top)
            if step is None:
                break
            ret, off = step
            meets = k < len(pcs) and pcs[k] == ret
            if meets and not self._is_injected(pc):
                return pcs[:1] + added + pcs[k:]
            added.append(ret)
            k += meets
            pc = ret
        return one_step

    def _sp_caller(self, pc: int, off: int, top: tuple[int, ...]) -> tuple[int, int] | None:
        """(return address, offset of the caller's sp) of the frame at pc whose sp is `off`
        bytes into `top` (the stack words from the thread's sp), or None."""
        try:
            delta = self.symtab.sp_delta(pc - self.bias)
        except (KeyError, NotGoBinary):
            return None
        at = off + delta
        if delta < 0 or at % 8 or at // 8 >= len(top):
            return None
        ret = top[at // 8]
        if not ret or self.symtab.func_for_pc(ret - self.bias) is None:
            return None
        return ret, at + 8

    def _is_injected(self, pc: int) -> bool:
        f = self.symtab.func_for_pc(pc - self.bias)
        return f is not None and self.symtab.is_injected_call(f)

    # --- goroutines ---------------------------------------------------------------------
    def goroutines(self, raw: Records) -> list[Goroutine]:
        threads = self.threads(raw)
        signals = self.signal_contexts(raw)
        curg_thread = {curg: procid for _m, procid, curg in raw.ms if curg}
        result = []
        seen = set()
        unknown = 0
        superseded = raw.superseded()
        for ci, chunk in enumerate(raw.chunks):
            for i in range(len(chunk) // self.grec_size):
                if (ci, i) in superseded:   # walked again in the pause
                    continue
                h, pcs, fps = self._record(chunk, i)
                flags = h[H_FLAGS]
                if flags & F_NOG:
                    continue
                status = self.status_by_value.get(h[H_STATUS])
                if status is None:   # garbage: a g read while being torn down or reused
                    unknown += 1
                    continue
                if status == "dead":
                    continue
                if (ci, i) in raw.more:   # deep stacks, and syscalls of Go < 1.23
                    more_pcs, more_fps, flags2 = self._continuations(raw, (ci, i))
                    pcs += more_pcs
                    fps += more_fps
                    flags = (flags & ~F_MORE) | flags2
                g = self._goroutine(h, status, pcs, flags, threads, signals, curg_thread)
                if g.id in seen:   # a goroutine list that changed under us
                    continue
                seen.add(g.id)
                result.append(g)
        if unknown:
            raw.notes.append(f"{unknown} goroutine records with an unknown status skipped "
                             "(memory changing while read?)")
        return result

    def _goroutine(self, h, status, pcs, flags, threads, signals, curg_thread) -> Goroutine:
        g = Goroutine(id=h[H_GOID], status=status)
        reason = h[H_WAITREASON] & 0xff   # trackingSeq above it (bpf/snapshot.bpf.c)
        if status == "waiting" and reason < len(self.wait_reasons):
            g.wait_reason = self.wait_reasons[reason]
        if h[H_WAITSINCE]:
            g.wait_since_ns = h[H_WAITSINCE]
        # Goroutine 1 is started by the runtime's assembly entry: no Go creator to show.
        g.created_by = self._created_by(h[H_GOPC], h[H_PARENT]) if g.id != 1 else None
        first_is_call_site = True
        if status == "running":
            tid = curg_thread.get(h[H_GP])
            th = threads.get(tid) if tid else None
            sig = signals.get(tid) if tid else None
            g.thread = tid
            if th and h[H_LO] <= th[1] < h[H_HI]:
                pcs, flags, first_is_call_site = th[3], th[4], False
            elif sig and h[H_LO] <= sig[1] < h[H_HI]:
                # Its thread runs the Go signal handler (SIGURG preemption, SIGPROF) on the
                # signal stack: the goroutine's own frames go on from the registers the
                # signal interrupted, the leaf being the very pc interrupted.
                pcs, flags, first_is_call_site = sig[3], sig[4], False
            elif h[H_SP]:
                pass  # on the system stack: g.sched was saved at the switch, pcs walked it
            elif (own := self._into_stack(sig, h) or self._into_stack(th, h)) is not None:
                # On the g0 stack in a vDSO call (time.Now, nanotime), where Go saves no
                # g.sched: the thread's (or the interrupted context's) chain goes on into
                # the goroutine's own frames (walk_thread in the BPF). Seen once in 25,000
                # churn snapshots; most of the time in fixture clockspin.
                pcs, flags, first_is_call_site = own
            elif th:
                # In a signal handler whose signal frame could not be read: the goroutine's
                # own frames sit behind it; show where the thread is.
                pcs, flags, first_is_call_site = th[3], th[4], False
                g.truncated = "running in a signal handler; its own frames are not shown"
            else:
                pcs = []
                g.truncated = "running on a thread that could not be read"
        elif status == "syscall":
            tid = curg_thread.get(h[H_GP])
            if tid:
                g.thread = tid
        g.frames, cut = self.symbolize(pcs, first_is_call_site)
        if flags & F_BADFP:
            g.truncated = g.truncated or "frame pointer chain broken (stack changing?)"
        elif flags & F_READFAIL:
            g.truncated = g.truncated or "stack memory could not be read"
        elif flags & F_MORE:
            g.truncated = g.truncated or "depth limit"
        elif cut:
            g.truncated = g.truncated or cut
        if not g.frames and not g.truncated:
            # Never an empty stack that does not say so. (The one case seen, 1 in ~2,000
            # churn snapshots, was a thread stopped at goexit+1: symbolize shows it.)
            g.truncated = "no frame could be read at this instant"
        return g

    def _into_stack(self, ctx: tuple | None, h) -> tuple[list[int], int, bool] | None:
        """A thread context whose frame-pointer chain reaches the goroutine's stack and
        passes through no signal handler: its pcs from the first in Go code (the vDSO's
        are not), its walk flags, whether the first is a call site. Else None."""
        if ctx is None or not any(h[H_LO] <= fp < h[H_HI] for fp in ctx[5]):
            return None
        pcs = ctx[3]
        k = next((i for i, pc in enumerate(pcs)
                  if self.symtab.func_for_pc(pc - self.bias) is not None), None)
        if k is None or any(self._in_signal_handler(pc) for pc in pcs[k:]):
            return None
        return pcs[k:], ctx[4], k > 0

    def _in_signal_handler(self, pc: int) -> bool:
        f = self.symtab.func_for_pc(pc - self.bias)
        return f is not None and f.name in SIGNAL_HANDLER

    def _created_by(self, gopc: int, parent: int) -> CreatedBy | None:
        if not gopc:
            return None
        pc = gopc - self.bias
        f = self.symtab.func_for_pc(pc)
        if f is None:
            return None
        frames = self.symtab.frames_for_pc(pc, is_call_site=True)
        file, line = (frames[0].file, frames[0].line) if frames else ("?", 0)
        return CreatedBy(f.print_name, file, line, parent or None)

    def symbolize(self, pcs: list[int], first_is_call_site: bool = True
                  ) -> tuple[list[Frame], str | None]:
        """PCs (leaf first) to frames, inlined frames expanded, stopping at goexit."""
        frames: list[Frame] = []
        callee = None
        call_site = first_is_call_site
        for pc in pcs:
            step = self._symbolized(pc, call_site, callee)
            if step is None:
                return frames, f"return address {pc:#x} is in no Go function"
            name, injected, symframes = step
            if name in STOP_AT:
                # A leaf in goexit: the goroutine's function has returned (to goexit+1,
                # the CALL goexit1 there) and it is exiting: its one frame is goexit.
                return (frames or self._unelided(pc)), None
            frames += [Frame(function, file, line, pc, inlined=inlined, wrapper=wrapper)
                       for function, file, line, inlined, wrapper in symframes]
            callee = name
            call_site = not injected
        if not frames and pcs:
            return self._unelided(pcs[0]), None
        return frames, None

    def _symbolized(self, pc: int, call_site: bool, callee: str | None):
        """(function name, whether its call was injected, its frames as tuples) of one
        return address, cached: the goroutines of a process share most of their pcs (at
        1,000 goroutines this cut the decoding from ~90 ms to ~15 ms)."""
        key = (pc, call_site, callee)
        hit = self._symbol_cache.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        link_pc = pc - self.bias
        f = self.symtab.func_for_pc(link_pc)
        if f is None:
            out = None
        else:
            out = (f.name, self.symtab.is_injected_call(f),
                   tuple((sf.function, sf.file, sf.line, sf.inlined, sf.wrapper)
                         for sf in self.symtab.frames_for_pc(
                             link_pc, is_call_site=call_site, callee=callee,
                             keep_wrappers=True))
                   if f.name not in STOP_AT else ())
        self._symbol_cache[key] = out
        return out

    def _unelided(self, pc: int) -> list[Frame]:
        """The physical function at pc, even a wrapper or goexit the runtime would hide: a
        goroutine not started yet sits at its go-statement wrapper's entry, and an empty
        stack would say nothing."""
        f = self.symtab.func_for_pc(pc - self.bias)
        if f is None:
            return []
        file, line = self.symtab.file_line(pc - self.bias)
        return [Frame(f.print_name, file, line, pc, inlined=False)]

    def frames_for_capture(self, raw: Records, wants, continued_only: bool = False):
        """(key, pc, cfa, function) of every parked frame running a captured function,
        inlined ones included; key = (goid, pc, function, n), n counting repeats of
        (pc, function) from the leaf (recursion). PCs are symbolized once each (cached).
        continued_only: only the frames past a record's own (deep stacks, which the BPF
        capture does not queue), cheap enough to run in the pause."""
        for _rec, key, pc, cfa, name in self.frames_by_record(raw, wants, continued_only):
            yield key, pc, cfa, name

    def frames_by_record(self, raw: Records, wants, continued_only: bool = False):
        """frames_for_capture's frames, each with its goroutine's record key (chunk,
        index): (record key, key, pc, cfa, function)."""
        cache = self._capture_cache = getattr(self, "_capture_cache", {})
        running = self.info.layout.status_values.get("_Grunning")
        keys = ((ci, i) for ci, chunk in enumerate(raw.chunks)
                for i in range(len(chunk) // self.grec_size))
        superseded = raw.superseded()
        for ci, i in (sorted(raw.more) if continued_only else keys):
            if (ci, i) in superseded:
                continue
            h, pcs, fps = self._record(raw.chunks[ci], i)
            if h[H_FLAGS] & F_NOG or h[H_STATUS] == running or not h[H_GOID]:
                continue
            own = len(pcs)
            if (ci, i) in raw.more:
                more_pcs, more_fps, _ = self._continuations(raw, (ci, i))
                pcs, fps = pcs + more_pcs, fps + more_fps
            seen: dict[tuple[int, str], int] = {}
            for k, (pc, fp) in enumerate(zip(pcs, fps)):
                names = cache.get(pc)
                if names is None:
                    names = cache[pc] = self._wanted_at(pc, wants)
                for name in names:
                    n = seen[(pc, name)] = seen.get((pc, name), -1) + 1
                    if fp and (k >= own or not continued_only):
                        yield (ci, i), (h[H_GOID], pc, name, n), pc, fp + 16, name

    def _wanted_at(self, pc: int, wants) -> tuple[str, ...]:
        """The captured functions running at pc (inlined ones too), once per pc: the
        pause asks for each of 1,000 frames parked at one pc."""
        cache = self._wanted_cache = getattr(self, "_wanted_cache", {})
        got = cache.get((pc, wants))
        if got is None:
            frames = self.symtab.frames_for_pc(pc - self.bias, is_call_site=True)
            got = cache[(pc, wants)] = tuple(f.function for f in frames if wants(f.function))
        return got

    def syscall_starts(self, raw: Records) -> list:
        """Go < 1.23 keeps no frame pointer for a goroutine in a syscall: compute it from
        syscallsp and the pcsp table, as (key, fp, lo, hi) walks to continue."""
        if self.has_syscallbp:
            return []
        starts = []
        syscall_value = self.info.layout.status_values.get("_Gsyscall")
        for ci, i in raw.syscall_keys:
            h, _pcs, _fps = self._record(raw.chunks[ci], i)
            if h[H_FLAGS] & F_NOG or h[H_STATUS] != syscall_value or not h[H_SYSPC]:
                continue
            try:
                delta = self.symtab.sp_delta(h[H_SYSPC] - self.bias)
            except KeyError:
                continue
            if delta >= 8:
                starts.append(((ci, i), h[H_SYSSP] + delta - 8, h[H_LO], h[H_HI]))
        return starts
