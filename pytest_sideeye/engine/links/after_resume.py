"""The link probes' reads that wait for the resume: only each probed frame's stack slots
are read before (one read a frame: in BPF in the pause, or, for the goroutines the pause
does not walk again, in the pre-read: preread_slots.py), and what they point to (the
connection, its fd, the request, its method and path, the stream) is read right after the
resume, from the running process.

Measured (benchmarks/links_bench.py): every read in the pause costs about 0.1 us, and the
probes read 12 to 16 of them per HTTP frame (the connection, its type word, net.TCPConn,
the netFD, each string...): +0.6 to 0.9 ms at 1,000 goroutines on sockets, against the
+0.3 ms budget. What they point to belongs to a request in flight, which a parked
goroutine keeps as it was: the connection, its fd and the request do not change while
their handler waits. A goroutine that went on in between may give a later request's
values, as a closed fd may be reused before the sockets are read from /proc (sockets.py).

Only functions the links alone read are deferred: a function the user's spec captures
too (or any, when the spec has type rules, which may reach into it) is read whole in the
pause, its values consistent with the rest of the snapshot."""
from __future__ import annotations

from pytest_sideeye import capture as capture_mod
from pytest_sideeye.engine.vmread import read_scatter

# The probes' chains are up to ~8 pointers deep (an HTTP/2 handler's stream, its server
# connection, its net.Conn, fd): rounds past the pause are cheap.
MAX_ROUNDS = 16


def functions(spec: capture_mod.CaptureSpec | None,
              probes: capture_mod.CaptureSpec) -> frozenset[str]:
    """The probed functions whose frames are read after the resume past their slots."""
    if spec is not None and getattr(spec, "types", None):
        return frozenset()
    mine = set(spec.functions) if spec is not None else set()
    return frozenset(fn for fn in probes.functions if fn not in mine)


def read(pid: int, frames: list, tables=None) -> None:
    """Finish the frames' jobs ((pc, cfa, capture.FrameJob), their slots from the pause in
    mem.shared) from the running process's memory; what cannot be read is cut. `tables`:
    the full templates (capture.ReadTemplates), whose reads are made first, a pointer level
    at a time across all the frames: each job then decodes in about one pass, where the
    rounds alone take one a pointer (measured: ~3.7 passes a frame, ~0.4 s for 1,300
    probed frames)."""
    def batch(reqs: list[tuple[int, int]]) -> dict[tuple[int, int], bytes | None]:
        buf, offsets, bad = read_scatter(pid, reqs)
        return {r: None if i in bad else buf[offsets[i]:offsets[i + 1]]
                for i, r in enumerate(reqs)}
    if tables is not None:
        capture_mod.read_as_bpf(tables, [(pc, cfa, job.mem) for pc, cfa, job in frames], batch)
    jobs = [job for _pc, _cfa, job in frames]
    capture_mod.run_rounds(jobs, batch, max_rounds=MAX_ROUNDS)
    for job in jobs:
        job.mem.final = True
