"""Grouping goroutines with identical stacks (panicparse-style buckets).

Two levels:
- a `Bucket` holds goroutines whose stacks are the same sequence of (function, file, line);
  variable values are ignored, so a pool of 5,000 workers parked on the same line is one
  bucket;
- a `Group` holds buckets whose stacks have the same sequence of function names only, so
  workers parked on two lines of the same function read as one story with two variants.

Groups are ordered for reading: stacks that touch the user's own code first, then stacks
made only of standard-library and runtime code, runtime-only stacks last. Within a tier,
goroutines blocked on synchronisation (locks, channels, select, WaitGroup, Cond) come
before those waiting on the outside world (IO, sleep, syscalls) or running: in a hang they
are the likely culprits. Then the biggest first. This stage knows nothing about HTML.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from pytest_sideeye.snapshot.model import CreatedBy, Frame, Goroutine, Process

# Origins, from most to least interesting to someone debugging their own service.
MAIN, USER, DEPENDENCY, STDLIB, RUNTIME = "main", "user", "dependency", "stdlib", "runtime"

# Tiers for ordering groups.
TIER_USER, TIER_STDLIB, TIER_RUNTIME = 0, 1, 2

StackKey = tuple[tuple[str, str, int], ...]


def package_path(function: str) -> str:
    """The import path of a Go symbol: `net/http.(*conn).serve` -> `net/http`,
    `github.com/x/y.(*T).M` -> `github.com/x/y`, `main.main.func1` -> `main`."""
    slash = function.rfind("/")
    # The package name ends at the first dot after the last slash (dots in the last path
    # element are escaped as %2e in symbol names, so this is unambiguous).
    dot = function.find(".", slash + 1)
    return function if dot < 0 else function[:dot]


def is_runtime_package(path: str) -> bool:
    return (path == "runtime" or path.startswith("runtime/")
            or path.startswith("internal/runtime/"))


def is_stdlib_package(path: str) -> bool:
    """Go's rule of thumb: standard-library import paths have no dot in their first element."""
    first = path.split("/", 1)[0]
    return "." not in first and path != "main"


def origin(function: str, file: str = "") -> str:
    """Where a frame's code comes from: main, user, dependency, stdlib or runtime."""
    path = package_path(function)
    if path == "main":
        return MAIN
    if is_runtime_package(path):
        return RUNTIME
    if is_stdlib_package(path):
        return STDLIB
    # Only the file tells the user's own module from a third-party one: dependencies are
    # compiled from the module cache or a vendor directory.
    if "/pkg/mod/" in file or "/vendor/" in file:
        return DEPENDENCY
    return USER


def stack_key(g: Goroutine) -> StackKey:
    return tuple((f.function, f.file, f.line) for f in g.frames)


def tier(frames: Iterable[Frame]) -> int:
    origins = {origin(f.function, f.file) for f in frames}
    if origins & {MAIN, USER, DEPENDENCY}:
        return TIER_USER
    if STDLIB in origins:
        return TIER_STDLIB
    return TIER_RUNTIME


def state_label(g: Goroutine) -> str:
    """One label per goroutine state as a reader thinks of it: the wait reason when
    waiting (`chan receive`), otherwise the status (`running`, `syscall`)."""
    if g.wait_reason:
        return g.wait_reason if g.status == "waiting" else f"{g.status}: {g.wait_reason}"
    return g.status


@dataclass
class Bucket:
    """Goroutines of one process with the same (function, file, line) stack."""
    key: StackKey
    goroutines: list[Goroutine] = field(default_factory=list)

    @property
    def frames(self) -> list[Frame]:
        """The stack, as the first goroutine has it (all members share functions/lines)."""
        return self.goroutines[0].frames

    @property
    def count(self) -> int:
        return len(self.goroutines)

    def states(self) -> Counter:
        return Counter(state_label(g) for g in self.goroutines)

    def created_by(self) -> Counter:
        """Distinct creation sites (function, file, line) and how many goroutines each."""
        return Counter(created_key(g.created_by) for g in self.goroutines
                       if g.created_by is not None)

    def wait_since(self) -> list[int]:
        # 0 means unknown in the runtime (set only by a GC after the goroutine parked).
        return [g.wait_since_ns for g in self.goroutines if g.wait_since_ns]

    def ids(self) -> list[int]:
        return sorted(g.id for g in self.goroutines)

    def truncated(self) -> Counter:
        return Counter(g.truncated for g in self.goroutines if g.truncated)


@dataclass
class Group:
    """Buckets with the same sequence of function names (differing only in lines/files)."""
    functions: tuple[str, ...]
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(b.count for b in self.buckets)

    @property
    def frames(self) -> list[Frame]:
        return self.buckets[0].frames

    @property
    def tier(self) -> int:
        return tier(self.frames)

    def states(self) -> Counter:
        total: Counter = Counter()
        for b in self.buckets:
            total.update(b.states())
        return total


def created_key(c: CreatedBy) -> tuple[str, str, int]:
    return (c.function, c.file, c.line)


def bucketize(goroutines: Iterable[Goroutine]) -> list[Bucket]:
    """Exact buckets, biggest first (ties by first goroutine id, for a stable page)."""
    by_key: dict[StackKey, Bucket] = {}
    for g in goroutines:
        key = stack_key(g)
        b = by_key.get(key)
        if b is None:
            b = by_key[key] = Bucket(key)
        b.goroutines.append(g)
    return sorted(by_key.values(), key=lambda b: (-b.count, min(g.id for g in b.goroutines)))


# Wait reasons of goroutines blocked on other goroutines (the runtime's own strings).
SYNC_WAITS = ("chan send", "chan receive", "chan send (nil chan)", "chan receive (nil chan)",
              "select", "sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock",
              "sync.WaitGroup.Wait", "sync.Cond.Wait", "semacquire")


def blocked_on_sync(gr: "Group") -> bool:
    """True when most of a group's goroutines wait on a lock, a channel or a select."""
    states = gr.states()
    sync = sum(n for state, n in states.items() if state in SYNC_WAITS)
    return sync * 2 > sum(states.values())


def group(goroutines: Iterable[Goroutine]) -> list[Group]:
    """Two-level grouping, ordered: user-code tier first, then stdlib, then runtime;
    within a tier, groups blocked on synchronisation first, then the biggest."""
    groups: dict[tuple[str, ...], Group] = {}
    for b in bucketize(goroutines):
        fk = tuple(f for f, _, _ in b.key)
        groups.setdefault(fk, Group(fk)).buckets.append(b)
    return sorted(groups.values(), key=lambda gr: (gr.tier, not blocked_on_sync(gr),
                                                   -gr.count, gr.buckets[0].ids()[0]))


def group_process(process: Process) -> list[Group]:
    return group(process.goroutines)


def headline_frame(frames: list[Frame]) -> Frame | None:
    """The frame that best names a stack. With the user's code on it: the innermost such
    frame (a worker parked in `runtime.gopark <- runtime.chanrecv <- main.worker` reads
    as `main.worker`), the user's own code before dependencies. A standard-library-only
    stack reads best by its outermost function (`net/http.(*conn).serve`, not the
    `internal/poll` call it is parked in), skipping the `go` statement's wrapper."""
    for wanted in ({MAIN, USER}, {DEPENDENCY}):
        for f in frames:
            if origin(f.function, f.file) in wanted:
                return f
    std = [f for f in frames if origin(f.function, f.file) == STDLIB]
    if std:
        return _outermost_named(std)
    # Runtime-only: the runtime's own worker (`runtime.bgsweep`), not `runtime.gopark`.
    return _outermost_named(frames) if frames else None


def _outermost_named(frames: list[Frame]) -> Frame:
    named = [f for f in frames if ".gowrap" not in f.function and f.function != "runtime.goexit"]
    return (named or frames)[-1]
