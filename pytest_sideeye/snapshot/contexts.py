"""Goroutines still waiting on a context that is done: the classic hang (a request's
deadline passed or its caller canceled it, and the goroutine serving it waits on anyway).

Context rules (capture/contexts.py) capture each context's `ctx.Err()` and
`ctx.Deadline()` in the frames that hold one; here the goroutines that wait (parked or in a
system call) with a done context in some frame are picked out, the frame nearest the leaf
naming where, and said as "context done 3.2 s ago (deadline exceeded), still waiting in
main.handle": how long ago is the deadline's distance to the snapshot's own time (a
canceled context records no time). The reports list them first, next to the wait chains.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

WAITING = ("waiting", "syscall")


@dataclass
class DoneContext:
    pid: int
    goroutine: int
    function: str          # the frame nearest the leaf holding a done context
    err: str               # "context deadline exceeded", "context canceled"
    done_ago_ns: int | None   # since its deadline, when it has one


def done_contexts(snap) -> list[DoneContext]:
    """Every goroutine still waiting with a done context, longest done first."""
    now = rfc3339_ns(snap.taken_at)
    out = []
    for p in snap.processes:
        for g in p.goroutines:
            if g.status not in WAITING:
                continue
            found = _nearest_done(g, now)
            if found is not None:
                out.append(DoneContext(p.pid, g.id, *found))
    return sorted(out, key=lambda d: (-(d.done_ago_ns or 0), d.pid, d.goroutine))


def _nearest_done(g, now: int | None):
    for f in g.frames:
        for v in f.variables:
            if v.name.endswith(".Err()") and v.type == "error" and isinstance(v.value, str):
                deadline = next((w.value for w in f.variables
                                 if w.name == v.name[:-len("Err()")] + "Deadline()"), None)
                when = rfc3339_ns(deadline) if isinstance(deadline, str) else None
                ago = now - when if now is not None and when is not None and \
                    "deadline" in v.value else None
                return f.function, v.value, ago
    return None


def done_context_text(d: DoneContext) -> str:
    """`context done 3.2 s ago (deadline exceeded), still waiting in main.handle`."""
    if d.done_ago_ns is not None:
        what = f"context done {d.done_ago_ns / 1e9:.1f} s ago ({d.err.removeprefix('context ')})"
    else:
        what = d.err
    return f"{what}, still waiting in {d.function}"


def rfc3339_ns(text: str | None) -> int | None:
    """Unix ns of an RFC 3339 time (nanosecond fractions, Z or an offset); None if not one."""
    if not text:
        return None
    try:
        date, _t, clock = text.partition("T")
        zone_at = max(clock.rfind("+"), clock.rfind("-"), clock.rfind("Z"))
        zone = clock[zone_at:] if zone_at > 0 else "Z"
        clock = clock[:zone_at] if zone_at > 0 else clock
        whole, _dot, frac = clock.partition(".")
        when = _dt.datetime.fromisoformat(f"{date}T{whole}" + ("+00:00" if zone == "Z" else zone))
        return int(when.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])
    except (ValueError, TypeError):
        return None
