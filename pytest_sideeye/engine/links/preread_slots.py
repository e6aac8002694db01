"""The link probes' stack slots, read in the pre-read instead of in the pause.

In the pause, BPF reads of each frame of a function only the link probes read its stack
slots alone (after_resume.py reads the rest): ~1.9 us a frame, most of it a stack page
touched, so +0.4-0.6 ms at 1,000 goroutines waiting on sockets. After a pre-read
(engine/collect.py, Collector.preread), the pause walks again only the goroutines whose
header changed; one whose header is unchanged did not run since the pre-read walked it,
so its stack holds what it held then (what else writes a parked goroutine's stack makes
it runnable, which changes its header: a channel's sendDirect; a stack copy changes its
bounds). So those slots are read here, right after the pre-read, with the target
running, and their frames are taken off the queue the pause's capture pass reads (take).
After the resume they are given to the frames of the goroutines that the pause did not
walk again (adopt). A goroutine it walked again gets nothing from here: that walk queued
its frames again, and they were read in the pause. Without a pre-read that stood (the
fallbacks the snapshot's `walk` names) nothing is given: the full walk in the pause queues
every frame again.

Only stack slots, and only of the probes' own functions: what the slots point to lives
in the heap, which the running target changes (it is read after the resume, as it was);
a function a user's capture reads too is read whole in the pause."""
from __future__ import annotations

from dataclasses import dataclass, field

from pytest_sideeye.engine.vmread import read_scatter

# Entry numbers given to the frames read here, in a capture's output: past any capq index.
ADOPTED = 1 << 40


@dataclass
class PrereadProbes:
    """The probe frames' slots the pre-read read: by allgs index, [(pc, cfa, reads)], each
    read (address, bytes, size) as the BPF capture records it."""
    frames: dict[int, list[tuple[int, int, list[tuple[int, bytes, int]]]]] = \
        field(default_factory=dict)
    nbytes: int = 0

    def __len__(self) -> int:
        return sum(len(fs) for fs in self.frames.values())


def take(pid: int, collector, tables, decoder, wants, probe_only: frozenset[str]
         ) -> PrereadProbes | None:
    """Right after a pre-read that stands: read the slots of the queued frames of the
    `probe_only` functions (their BPF template reads slots alone) and drop those frames
    from the queue; None when there are none. A frame whose read failed stays queued."""
    if not probe_only or tables is None:
        return None
    queued = collector.queued_frames()
    if not queued:
        return None
    slots: dict[int, list[tuple[int, int]] | None] = {}   # by pc
    picked, reqs, keep = [], [], []
    for n, (_gidx, _frame, pc, cfa) in enumerate(queued):
        if pc not in slots:
            slots[pc] = _probe_slots(pc, tables, decoder, wants, probe_only)
        reads = slots[pc]
        if reads is None:
            keep.append(n)
            continue
        picked.append((n, len(reqs), len(reads)))
        reqs += [(cfa + off, size) for off, size in reads]
    if not picked:
        return None
    buf, offsets, bad = read_scatter(pid, reqs)
    got = PrereadProbes()
    for n, first, count in picked:
        if any(k in bad for k in range(first, first + count)):
            keep.append(n)
            continue
        gidx, _frame, pc, cfa = queued[n]
        reads = [(reqs[k][0], bytes(buf[offsets[k]:offsets[k + 1]]), reqs[k][1])
                 for k in range(first, first + count)]
        got.frames.setdefault(gidx, []).append((pc, cfa, reads))
        # As the capture buffer counts a read: a 16-byte header, then the data 8-aligned.
        got.nbytes += sum(16 + ((size + 7) & ~7) for _a, _d, size in reads)
    collector.keep_queued(sorted(keep), got.nbytes)
    return got if got.frames else None


def _probe_slots(pc: int, tables, decoder, wants, probe_only: frozenset[str]
                 ) -> list[tuple[int, int]] | None:
    """The slot reads of a frame at pc when only probe-only functions run there (inlined
    ones too) and their template reads slots alone."""
    functions = decoder._wanted_at(pc, wants)
    if not functions or not set(functions) <= probe_only:
        return None
    return tables.slots_alone(pc)


def adopt(out, probes: PrereadProbes | None, raw) -> int:
    """After the resume: the pre-read's probe frames of the goroutines the pause did not
    walk again, added to the capture's output `out` (capture.CaptureOutput) as if BPF had
    read them in the pause. Nothing when the pause did not check headers after the
    pre-read (raw.pre_chunks 0: it walked every goroutine). Returns how many."""
    if probes is None or out is None or not raw.pre_chunks:
        return 0
    again = {ci * raw.per_chunk + i for ci, i in raw.superseded()}
    n = 0
    for gidx, frames in probes.frames.items():
        if gidx in again:
            continue   # it ran: its frames were queued again and read in the pause
        for pc, cfa, reads in frames:
            if (pc, cfa) in out.frames:
                continue
            out.frames[(pc, cfa)] = ADOPTED + n
            out.reads[ADOPTED + n] = list(reads)
            n += 1
    return n
