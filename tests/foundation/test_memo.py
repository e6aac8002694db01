"""The memo (memo.py): what a long-lived process keeps per binary, under one byte budget,
least recently used binaries dropped first; entry sizes measured by tracing."""
from __future__ import annotations

import ctypes
import gc
import tracemalloc

import pytest

from pytest_sideeye import memo, settings
from pytest_sideeye.errors import SideeyeError

MB = 2**20


def test_least_recently_used_binaries_go_first_when_over_the_budget():
    m = memo.Memo(budget=100)
    m.put("a", "binary", "a1", "A", 40)
    m.put("a", "debug", "a", "A-debug", 20)     # one group: 60 bytes
    m.put("b", "binary", "b1", "B", 30)         # 90
    assert m.get("binary", "a1") == "A"          # a is now the most recently used
    m.put("c", "binary", "c1", "C", 40)         # 130 > 100: b goes, not a
    assert m.groups() == ["a", "c"]
    assert m.get("binary", "b1") is None
    assert m.stats() == {"budget_bytes": 100, "bytes": 100, "binaries": 2, "entries": 3,
                         "evicted": 1, "weights": 0, "kept": ["a", "c"]}
    m.put("d", "binary", "d1", "D", 10)         # 110: a goes, with every entry of it
    assert m.groups() == ["c", "d"]
    assert m.get("debug", "a") is None and m.get("binary", "a1") is None
    assert m.stats()["bytes"] == 50 and m.stats()["evicted"] == 2


def test_a_binary_larger_than_the_budget_is_kept_alone():
    m = memo.Memo(budget=100)
    m.put("a", "binary", "a1", "A", 50)
    m.put("big", "binary", "big1", "BIG", 500)
    assert m.groups() == ["big"]
    m.put("b", "binary", "b1", "B", 1)           # then it is the least recently used
    assert m.groups() == ["b"]


def test_an_entry_stored_again_replaces_its_bytes():
    m = memo.Memo(budget=100)
    m.put("a", "tables", "k", None, 30)
    m.put("a", "tables", "k", None, 30)
    assert m.stats()["bytes"] == 30 and m.stats()["entries"] == 1
    assert m.get("tables", "k", "absent") is None   # None is a value like any other


def test_a_group_keeps_a_few_entries_of_each_kind_least_recently_used_dropped():
    """Entries keyed per process (a PIE's load address, a container's copy of the file)
    do not grow a binary's group with every restart."""
    m = memo.Memo(budget=10_000)
    m.put("a", "debug", "a", "D", 100)
    for bias in range(memo.PER_KIND):
        m.put("a", "tables", bias, f"T{bias}", 10)
    assert m.get("tables", 0) == "T0"                   # 0 used again: 1 is the oldest
    m.put("a", "tables", 99, "T99", 10)
    assert m.get("tables", 1) is None and m.get("tables", 0) == "T0"
    assert m.get("debug", "a") == "D"                   # other kinds are not touched
    assert m.stats()["entries"] == 1 + memo.PER_KIND
    assert m.stats()["bytes"] == 100 + 10 * memo.PER_KIND


def test_remember_makes_once_and_weighs_what_it_made():
    m = memo.Memo(budget=100 * MB)
    made = []

    def make():
        made.append(1)
        return bytearray(4 * MB)

    first = m.remember("a", "blob", 1, make)
    assert m.remember("a", "blob", 1, make) is first and made == [1]
    assert 4 * MB <= m.stats()["bytes"] < 4 * MB + 64 * 1024


def test_measured_counts_what_the_block_keeps_and_nests():
    was_tracing = tracemalloc.is_tracing()
    with memo.measured() as outer:
        kept = bytearray(2 * MB)
        temporary = bytearray(8 * MB)
        del temporary                           # freed inside: not kept
        with memo.measured() as inner:
            inner_kept = bytearray(1 * MB)      # the inner window's, not the outer's
    assert 1 * MB <= inner.nbytes < 1 * MB + 64 * 1024
    assert 2 * MB <= outer.nbytes < 2 * MB + 64 * 1024
    assert tracemalloc.is_tracing() == was_tracing   # tracing only inside the windows
    del kept, inner_kept


def test_an_entry_made_again_is_weighed_as_before_without_tracing():
    m = memo.Memo(budget=100 * MB)
    tracing = []

    def make():
        tracing.append(tracemalloc.is_tracing())
        return bytearray(2 * MB)

    m.remember("a", "blob", 1, make)
    weight = m.stats()["bytes"]
    m.clear()                                   # as an eviction for the budget does
    m.remember("a", "blob", 1, make)
    assert m.stats()["bytes"] == weight and m.stats()["weights"] == 1
    if not tracing[0]:
        pytest.skip("tracemalloc was already tracing (python -X tracemalloc)")
    assert tracing == [True, False]


def test_a_known_weight_nested_in_a_window_is_not_the_windows():
    m = memo.Memo(budget=100 * MB)
    m.remember("a", "blob", 1, lambda: bytearray(1 * MB))
    m.clear()
    with memo.measured() as outer:
        kept = bytearray(2 * MB)
        m.remember("a", "blob", 1, lambda: bytearray(1 * MB))   # weighed from before
    assert 2 * MB <= outer.nbytes < 2 * MB + 64 * 1024
    del kept


# A making that allocates on many distinct lines, as an analysis or a capture plan does.
_MANY_LINES = "def make():\n    out = []\n" + "".join(
    f"    out.append([{i}] * 2)\n" for i in range(4000)) + "    return out\n"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _c_heap_in_use() -> int:
    """Bytes malloc has handed out and not had back (glibc's mallinfo2): what the C heap
    holds, whatever Python's own allocator does."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    gc.collect()
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def test_making_an_evicted_entry_again_leaks_nothing():
    """Each tracing window leaks the tracebacks it interned (CPython < 3.12.5,
    python/cpython#121390: ~32 bytes per distinct allocating line, for good). The agent
    re-made evicted binaries at every snapshot, and grew ~200 KB a snapshot."""
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc was already tracing: windows neither start nor stop it")
    namespace: dict = {}
    exec(compile(_MANY_LINES, "<memo-many-lines>", "exec"), namespace)
    m = memo.Memo(budget=100 * MB)
    m.remember("a", "lines", 1, namespace["make"])
    m.clear()
    before = _c_heap_in_use()
    for _ in range(20):
        m.remember("a", "lines", 1, namespace["make"])
        m.clear()
    grown = _c_heap_in_use() - before
    assert grown < 256 * 1024, f"the C heap grew {grown} bytes over 20 re-makings"


def test_the_budget_is_a_setting(monkeypatch):
    monkeypatch.setenv("SIDEEYE_MEMO_MB", "48")
    assert memo.Memo().budget == 48 * MB
    monkeypatch.setenv("SIDEEYE_MEMO_MB", "lots")
    with pytest.raises(SideeyeError) as e:
        settings.memo_bytes()
    assert str(e.value) == "SIDEEYE_MEMO_MB='lots' (from the environment) is not a number"
    monkeypatch.delenv("SIDEEYE_MEMO_MB")
    assert memo.Memo().budget == 192 * MB
