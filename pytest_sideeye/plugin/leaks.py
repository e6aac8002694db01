"""Goroutine leak checks for the services a test uses (`--sideeye-leaks`, ini
`sideeye_leaks = true`, `@pytest.mark.sideeye_leaks(...)`): goleak's idea, from outside
the process. Every service the test uses is snapshotted before the test body and after
it; goroutines that appeared and are still there after a settle period (retried, like
goleak's, up to `settle` seconds) fail the test, grouped by creation site and stack, with
a diff report attached.

Not leaks:
- goroutines that existed before the body, and any that ended by the last retry;
- the runtime's own (every frame in the runtime: a GC worker started lazily);
- goroutines serving a connection the test process itself still holds open (HTTP
  keep-alive pools of requests/urllib3/http.client in the test): a goroutine parked
  reading a socket ("IO wait" in net.(*conn).Read) is excused while this process has at
  least as many established TCP connections to that service's published ports. Counted,
  not matched one to one: Docker's proxy between the two sockets hides which is which;
- goroutines matched by the ignore lists (`ignore_top_function`: a function anywhere on
  the stack, as goleak's IgnoreAnyFunction; `ignore_created_by`: the creating function),
  from ini (`sideeye_leaks_ignore_top_function`, `sideeye_leaks_ignore_created_by`) and
  the marker.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_sideeye.snapshot import (
    GoroutineGroup,
    ProcessDiff,
    Snapshot,
    SnapshotDiff,
    group_goroutines,
    process_name,
    render_diff_text,
)

DEFAULT_SETTLE_S = 1.0
READING_SOCKET = ("net.(*conn).Read", "internal/poll.(*FD).Read")


@dataclass
class LeakOptions:
    settle_s: float = DEFAULT_SETTLE_S
    ignore_top_function: list[str] = field(default_factory=list)
    ignore_created_by: list[str] = field(default_factory=list)


def options_for(item: pytest.Item, enabled: bool, settle_s: float | None,
                ignore_top: list[str], ignore_created_by: list[str]) -> LeakOptions | None:
    """The leak check this test asked for (ini/option, then markers, closest last), or None."""
    opts = LeakOptions(settle_s if settle_s is not None else DEFAULT_SETTLE_S,
                       list(ignore_top), list(ignore_created_by))
    for marker in reversed(list(item.iter_markers("sideeye_leaks"))):
        enabled = bool(marker.args[0]) if marker.args else True
        kw = marker.kwargs
        if "settle" in kw:
            opts.settle_s = float(kw["settle"])
        opts.ignore_top_function += list(kw.get("ignore_top_function", ()))
        opts.ignore_created_by += list(kw.get("ignore_created_by", ()))
    return opts if enabled else None


# --------------------------------------------------------------------------- the decision

def is_runtime_only(g) -> bool:
    return all(f.function.startswith(("runtime.", "runtime/", "internal/runtime"))
               for f in g.frames)


def is_reading_a_socket(g) -> bool:
    return g.wait_reason == "IO wait" and any(f.function in READING_SOCKET for f in g.frames)


def _matches(name: str, wanted: str) -> bool:
    return name == wanted or name.endswith("." + wanted)


def ignored(g, opts: LeakOptions) -> bool:
    if any(_matches(f.function, w) for f in g.frames for w in opts.ignore_top_function):
        return True
    cb = g.created_by
    return cb is not None and any(_matches(cb.function, w) for w in opts.ignore_created_by)


def leaked_goroutines(before_proc, after_proc, opts: LeakOptions, held_connections: int):
    """The goroutines of after_proc that count as leaked since before_proc."""
    old_ids = {g.id for g in before_proc.goroutines}
    new = [g for g in after_proc.goroutines if g.id not in old_ids
           and not is_runtime_only(g) and not ignored(g, opts)]
    excused = held_connections
    leaked = []
    for g in new:
        if excused and is_reading_a_socket(g):
            excused -= 1
            continue
        leaked.append(g)
    return leaked


# --------------------------------------------------------------------------- connections

def _socket_inodes(pid: int | str = "self") -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _peer_ports_of_established(inodes: set[int]) -> list[int]:
    """Remote ports of this network namespace's established TCP sockets among `inodes`."""
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "01" and int(cols[9]) in inodes:
                ports.append(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def held_connections(service: Any) -> int:
    """Established TCP connections this process holds to the service's published ports
    (read from its container: a go_service's, or one the user started)."""
    try:
        published = service.host_ports()
    except Exception:   # the container is gone: nothing of ours can reach it
        return 0
    if not published:
        return 0
    return sum(1 for p in _peer_ports_of_established(_socket_inodes()) if p in published)


# --------------------------------------------------------------------------- the check

@dataclass
class Verdict:
    leaks: dict[str, list[GoroutineGroup]]      # per service: groups of leaked goroutines
    diff: SnapshotDiff                 # before -> last after, the leaks only
    after: Snapshot

    @property
    def count(self) -> int:
        return sum(g.count for groups in self.leaks.values() for g in groups)

    def message(self) -> str:
        lines = [f"sideeye: {self.count} goroutine{'s' * (self.count != 1)} leaked by this "
                 "test (still there after the settle period):"]
        for service, groups in self.leaks.items():
            for g in groups:
                where = f" created by {g.key.created_by}" if g.key.created_by else ""
                states = ", ".join(f"{n} {s}" for s, n in g.states.most_common())
                lines.append(f"  {service}: {g.count} x {g.key.top}{where} [{states}]")
        return "\n".join(lines)


def check(take, services: list[Any], before: Snapshot, opts: LeakOptions) -> Verdict:
    """Snapshot again until no leak is left or the settle period is over (the goroutines
    a request started may still be finishing); `take()` returns a fresh Snapshot."""
    deadline = time.monotonic() + opts.settle_s
    pause = 0.01
    while True:
        after = take()
        verdict = _judge(services, before, after, opts)
        if not verdict.leaks or time.monotonic() >= deadline:
            return verdict
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.2)


def _judge(services: list[Any], before: Snapshot, after: Snapshot, opts: LeakOptions) -> Verdict:
    olds = {process_name(p): p for p in before.processes}
    by_service = {s.name: s for s in services}
    leaks: dict[str, list[GoroutineGroup]] = {}
    diffs = []
    for proc in after.processes:
        name = process_name(proc)
        old = olds.get(name)
        if old is None or old.pid != proc.pid or proc.error:
            continue   # restarted or unreadable: no goroutine ids to compare
        svc = by_service.get(proc.service or "")
        held = held_connections(svc) if svc is not None else 0
        leaked = leaked_goroutines(old, proc, opts, held)
        if leaked:
            groups = group_goroutines(leaked)
            leaks[name] = groups
            diffs.append(ProcessDiff(name, old.pid, proc.pid, appeared=groups,
                                     count_before=len(old.goroutines),
                                     count_after=len(proc.goroutines)))
    return Verdict(leaks, SnapshotDiff(diffs), after)


def diff_text(verdict: Verdict) -> str:
    return render_diff_text(verdict.diff)

