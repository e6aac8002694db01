"""What a long-lived process (the agent, a pytest session snapshotting in its own process)
keeps in memory about the binaries it has seen, under one byte budget.

Everything cached about one binary (its analysis, its DWARF view, the probes it accepts,
its capture plans' tables) is an entry of that binary's group, keyed by its build id. The
groups share one budget (SIDEEYE_MEMO_MB, settings.memo_bytes()): past it, the least
recently used groups are dropped whole (a group's entries reference each other: dropping
one alone would free nothing). The group just filled is never dropped, so a binary larger
than the whole budget still works, alone. Within a group, at most PER_KIND entries of a
kind are kept (kinds keyed per process). A dropped binary is analysed again from the disk
caches (files.py) when next seen, which costs time, never correctness.

Sizes are measured, not guessed: an entry weighs what was allocated while making it and is
still allocated when it is stored (tracemalloc, traced only for that window; a cache hit
traces nothing; an analysis took as long traced as not, within this machine's noise: 2-5 s
from the disk caches, 12-25 s cold). A window nested in another (the DWARF view made
during a plan) is charged to its own entry only. What the entries allocate later, lazily,
is not counted: the function table's per-function decodings during a snapshot (bounded by
the binary's function count, ~1-2 MB at most here); so the budget is the measured part, an
underestimate by that much per binary kept. An entry dropped alone (PER_KIND) whose parts
another entry still uses (the DWARF view keeps the first analysis's function table) frees
less than it weighed, until its group goes.

Each entry is weighed once (weighed()): its weight is kept, by (kind, key), after the entry
is dropped, and an entry made again (a binary dropped for the budget and seen again) opens
no tracing window. Every window costs memory for good: this Python's tracemalloc (CPython
before 3.12.5, python/cpython#121390) never frees the tracebacks it interned when tracing
stops, one per distinct line that allocated in the window (measured: 1.2 MB of the C heap
per 5 snapshots, ~200 KB per window around a plan; the agent grew that much per snapshot
while it re-made evicted binaries). Weighing once leaves one window per entry ever made.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import threading
import tracemalloc
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterator, TypeVar

from pytest_sideeye import settings

T = TypeVar("T")


_ABSENT = object()


# Weights kept (weighed()), least recently used dropped past it: a few hundred bytes each.
WEIGHTS_KEPT = 4096

# Entries of one kind a group keeps at most, the least recently used dropped past it. Kinds
# keyed by something per process (an executable's file: a container's overlay gives each
# container its own; a PIE's load address) would otherwise grow a binary's group with every
# restart of its processes.
PER_KIND = 4


class _Group:
    __slots__ = ("entries", "nbytes")

    def __init__(self) -> None:
        # (kind, key) -> (value, bytes), least recently used first
        self.entries: OrderedDict[tuple[str, Hashable], tuple[Any, int]] = OrderedDict()
        self.nbytes = 0

    def drop(self, kind_key: tuple[str, Hashable]) -> None:
        self.nbytes -= self.entries.pop(kind_key)[1]


class Memo:
    """Groups of entries (group key: a build id) under one byte budget, least recently
    used dropped first. `budget` (bytes) overrides the setting (tests)."""

    def __init__(self, budget: int | None = None):
        self._budget = budget
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._where: dict[tuple[str, Hashable], str] = {}   # (kind, key) -> its group
        self._lock = threading.RLock()
        self.evicted = 0       # groups dropped for the budget, over the process's life
        # (kind, key) -> bytes, as measured when the entry was first made; kept past the
        # entry's eviction (and clear()) so that making it again traces nothing
        self._weights: OrderedDict[tuple[str, Hashable], int] = OrderedDict()

    @property
    def budget(self) -> int:
        return self._budget if self._budget is not None else settings.memo_bytes()

    def get(self, kind: str, key: Hashable, default: Any = None) -> Any:
        """The entry, or `default`; its group becomes the most recently used."""
        with self._lock:
            group = self._where.get((kind, key))
            if group is None:
                return default
            self._groups.move_to_end(group)
            entries = self._groups[group].entries
            entries.move_to_end((kind, key))
            return entries[(kind, key)][0]

    def put(self, group: str, kind: str, key: Hashable, value: Any, nbytes: int) -> None:
        """Store an entry weighing `nbytes` in `group` (most recently used), drop the
        group's least recently used entry of that kind past PER_KIND, then the least
        recently used other groups while the total is over the budget."""
        with self._lock:
            old = self._where.get((kind, key))
            if old is not None:         # replaced: its bytes go with it
                self._groups[old].drop((kind, key))
            g = self._groups.get(group)
            if g is None:
                g = self._groups[group] = _Group()
            self._groups.move_to_end(group)
            g.entries[(kind, key)] = (value, max(0, nbytes))
            g.nbytes += max(0, nbytes)
            self._where[(kind, key)] = group
            same = [k for k in g.entries if k[0] == kind]
            for k in same[:max(0, len(same) - PER_KIND)]:
                g.drop(k)
                del self._where[k]
            self._shrink(keep=group)

    def remember(self, group: str, kind: str, key: Hashable, make: Callable[[], T]) -> T:
        """The entry (kind, key), made by `make` and stored in `group` when absent, weighing
        what `make` left allocated (weighed())."""
        found = self.get(kind, key, _ABSENT)
        if found is not _ABSENT:
            return found
        with self.weighed(kind, key) as size:
            value = make()
        self.put(group, kind, key, value, size.nbytes)
        return value

    @contextlib.contextmanager
    def weighed(self, kind: str, key: Hashable) -> Iterator[Size]:
        """measured(), the first time the entry (kind, key) is made; after that, its weight
        as then measured, without tracing (see the module's docstring: each tracing window
        leaks). Within an enclosing window, a weight known already counts as that window's
        inner bytes, as a measured one would."""
        with self._lock:
            known = self._weights.get((kind, key))
            if known is not None:
                self._weights.move_to_end((kind, key))
        if known is None:
            with measured() as size:
                yield size
            with self._lock:
                self._weights[(kind, key)] = size.nbytes
                while len(self._weights) > WEIGHTS_KEPT:
                    self._weights.popitem(last=False)
            return
        size = Size(0)
        size.nbytes = known
        yield size
        windows = _local.__dict__.get("windows")
        if windows:
            windows[-1]._inner += known

    def weights(self) -> int:
        """How many entries' weights are known (each was traced once)."""
        with self._lock:
            return len(self._weights)

    def _shrink(self, keep: str) -> None:
        budget = self.budget
        total = sum(g.nbytes for g in self._groups.values())
        for name in list(self._groups):
            if total <= budget:
                break
            if name == keep:
                continue
            total -= self._drop(name)
            self.evicted += 1

    def _drop(self, name: str) -> int:
        g = self._groups.pop(name)
        for k in g.entries:
            self._where.pop(k, None)
        return g.nbytes

    def clear(self) -> None:
        with self._lock:
            for name in list(self._groups):
                self._drop(name)

    def groups(self) -> list[str]:
        """Group keys, least recently used first."""
        with self._lock:
            return list(self._groups)

    def stats(self) -> dict:
        """For the agent's health answer: the budget, what is kept, what was dropped."""
        with self._lock:
            return {"budget_bytes": self.budget,
                    "bytes": sum(g.nbytes for g in self._groups.values()),
                    "binaries": len(self._groups),
                    "entries": sum(len(g.entries) for g in self._groups.values()),
                    "evicted": self.evicted,
                    "weights": len(self._weights),   # entries ever weighed (traced once)
                    "kept": list(self._groups)}   # build ids, least recently used first


class Size:
    __slots__ = ("nbytes", "_start", "_inner")

    def __init__(self, start: int):
        self.nbytes = 0
        self._start = start
        self._inner = 0     # what windows nested in this one measured (charged to theirs)


_local = threading.local()      # each thread's open windows, innermost last
_tracing_lock = threading.Lock()
_open = 0                       # windows open in every thread (tracing while > 0)
_started_tracing = False        # we started tracemalloc (else someone else traces)


@contextlib.contextmanager
def measured() -> Iterator[Size]:
    """Measure what the block leaves allocated: `.nbytes` once it is done. Traces Python's
    allocations for the block only, unless something else already traces them; another
    thread's allocations meanwhile are counted too (the agent makes entries in one thread).
    Windows nest within a thread: an inner window's bytes are not the outer's."""
    global _open, _started_tracing
    stack = _local.__dict__.setdefault("windows", [])
    with _tracing_lock:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            _started_tracing = True
        _open += 1
        size = Size(tracemalloc.get_traced_memory()[0])
    stack.append(size)
    try:
        yield size
    finally:
        stack.pop()
        with _tracing_lock:
            now = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else size._start
            raw = now - size._start
            size.nbytes = max(0, raw - size._inner)
            if stack:
                stack[-1]._inner += max(0, raw)
            _open -= 1
            if _open == 0 and _started_tracing:
                tracemalloc.stop()
                _started_tracing = False


def give_back() -> None:
    """Hand the memory a large snapshot freed back to the system: a collection (the cycles
    it left), then glibc's malloc_trim(0), which returns the free pages of every heap (a
    freed 100,000-goroutine snapshot otherwise stays resident until reused). Measured in
    benchmarks/agent_soak.py; a no-op where the C library has no malloc_trim."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    global _trim
    if _trim is False:
        name = ctypes.util.find_library("c")
        try:
            _trim = getattr(ctypes.CDLL(name), "malloc_trim") if name else None
        except (OSError, AttributeError):
            _trim = None
    return _trim


_trim: object = False   # not looked up yet


MEMO = Memo()   # the process's one memo: every per-binary cache of the engine lives in it
