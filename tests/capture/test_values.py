"""values.py (and the modules it reads through: memory, maps, interfaces, gotime,
gostrings): decoding typed Go values, checked against varzoo's own rendering.

varzoo prints the address of its global `zoo` and a reflect-based rendering of it; the
tests decode `main.Zoo` at that address with values.py, reading the stopped process
through /proc/PID/mem (a test-only reader: the product reads through BPF), for every Go
version in CI: Go 1.21 (classic maps), 1.24 and 1.27 (swiss maps, DWARF 5 in 1.27).
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal

import pytest
from varzoo import BIG, Zoo, start_varzoo

from pytest_sideeye.binary import analyze
from pytest_sideeye.capture import gostrings, gotime, mapkeys, memory, values
from pytest_sideeye.capture.memory import Budget, Limits, Memory


def same(got, want, go_type: str) -> bool:
    """Equal; only a map's [key, value] pairs (maps with non-string keys) may come in any
    order, as Go's map iteration has none. Slices and arrays keep theirs."""
    if got == want:
        return True
    if go_type.startswith("map[") and isinstance(got, list) and isinstance(want, list):
        return sorted(json.dumps(x, sort_keys=True) for x in got) == \
            sorted(json.dumps(x, sort_keys=True) for x in want)
    return False


def test_every_field_matches_go_rendering(zoo):
    d = values.read_value(zoo.debug, zoo.debug.type_by_name("main.Zoo"), zoo.zoo_addr,
                          zoo.read_batch, BIG, max_rounds=16)
    want = zoo.expected["zoo"]
    assert d.errors == []
    assert not d.truncated
    assert list(d.value) == list(want)  # every field, in declaration order
    channels = zoo.expected["channels"]
    types = {f.name: f.type.name for f in zoo.debug.type_by_name("main.Zoo").fields}
    bad = {k: (v, channels.get(k, want[k])) for k, v in d.value.items()
           if not same(v, channels.get(k, want[k]), types[k])}
    assert bad == {}
    # Maps reached through pointers / interfaces / several groups and buckets were read.
    assert len(d.value["MBig"]) == 300 and len(d.value["MIBig"]) == 3000
    assert d.value["EMap"] == {"k": 1}
    assert len(d.value["MGrow"]) == 49  # half-evacuated during growth in Go 1.21


def test_whole_zoo_takes_few_rounds(zoo):
    zoo.reads.clear()
    d = values.read_value(zoo.debug, zoo.debug.type_by_name("main.Zoo"), zoo.zoo_addr,
                          zoo.read_batch, BIG, max_rounds=16)
    # zoo -> heap objects -> map buckets/groups, overflow or table -> strings they hold
    assert d.rounds <= 6, [len(r) for r in zoo.reads]
    assert d.rounds == len(zoo.reads)


HOSTILE = {
    "Markup": b"<script>alert(1)</script>",
    "Quotes": b"it's \"quoted\" \\ back`tick",
    "Invalid": b"bad\xff\xfeutf8",
    "Nul": b"nul\x00inside\x00",
    "Unicode": "héllo wörld ✓ 🐹".encode(),
    "Empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_strings_round_trip_exactly(zoo, name):
    d = zoo.decode(name)
    through_json = json.loads(json.dumps(d.value))
    assert gostrings.string_bytes(through_json) == HOSTILE[name]
    if name == "Invalid":
        assert d.value == {"$b64": base64.b64encode(HOSTILE[name]).decode(),
                           "$text": "bad\ufffdutf8"}
    else:
        assert isinstance(d.value, str)


def test_default_limits_cut_long_values(zoo):
    long = zoo.decode("Long", Limits())
    assert long.truncated and long.value == ("0123456789" * 70)[:512]
    big = zoo.decode("Big", Limits())
    assert big.truncated and big.value == [i * i for i in range(64)]
    small = zoo.decode("Small", Limits())
    assert not small.truncated and small.value == [1, 2, 3]
    mbig = zoo.decode("MBig", Limits())
    assert mbig.truncated
    assert 0 < len(mbig.value) <= 2048 // 24
    assert all(zoo.expected["zoo"]["MBig"][k] == v for k, v in mbig.value.items())


def test_long_string_is_cut_on_a_character_boundary(zoo):
    # Long is 700 ASCII bytes then "é": cutting at 701 bytes would split the "é".
    d = zoo.decode("Long", Limits(string_bytes=701))
    assert d.truncated and d.value == "0123456789" * 70


def test_pointer_depth_and_cycles(zoo):
    shallow = zoo.decode("PPI", Limits(pointer_depth=1))
    assert shallow.truncated and shallow.value["$cut"] == "depth"
    assert zoo.decode("PPI").value == 7
    cyc = zoo.decode("Cycle")
    assert cyc.value["Next"]["Next"] == {"$ptr": zoo.expected["addrs"]["cycle"], "$cut": "cycle"}
    assert not cyc.truncated


def test_interfaces_resolve_dynamic_types(zoo):
    """The type word (eface) or itab's type (iface) maps back to the DWARF type through
    DW_AT_go_runtime_type; the value is the dynamic value."""
    for name, dyn in zoo.expected["types"].items():
        t, addr = zoo.field_addr(name)
        mem = Memory(Budget(1 << 20))
        for _round in range(8):
            dec = values.ValueDecoder(zoo.debug, mem, BIG)
            raw = dec.read(addr, 16)
            got, value = dec.interface(t, raw, 0, addr, 0) if isinstance(raw, bytes) else (0, 0)
            if not dec.pending:
                break
            mem.feed(zoo.read_batch(mem.take_requests()))
        assert got == (None if dyn == "<nil>" else dyn), name
        assert value == zoo.expected["zoo"][name], name


def test_unreadable_memory_is_a_cut_value_not_an_exception(zoo):
    order = zoo.debug.type_by_name("*main.Order")
    d = values.read_value(zoo.debug, order.elem, 0x10000, zoo.read_batch)
    assert d.value == {"$ptr": "0x10000", "$cut": "unreadable"}
    assert d.truncated and d.errors == ["cannot read memory at 0x10000"]
    # A string header pointing nowhere, decoded from local bytes.
    st = zoo.debug.type_by_name("string")
    dec = values.ValueDecoder(zoo.debug, Memory(Budget(1 << 20)), Limits())
    dec.mem.final = True
    hdr = (0x20000).to_bytes(8, "little") + (5).to_bytes(8, "little")
    assert dec.value(st, hdr, 0, 0)["$cut"] == "rounds"


def test_round_limit_leaves_a_cut_value(zoo):
    # Round 1 reads the pointer, round 2 the Order, the Customer would need a third.
    d = zoo.decode("Ord", max_rounds=2)
    assert d.truncated
    assert d.value["ID"] == 1001
    assert d.value["Customer"]["$cut"] == "rounds"


def test_budget_limits_total_bytes(zoo):
    d = zoo.decode("Ord", Limits(total_bytes=64))
    assert d.truncated
    assert "budget" in json.dumps(d.value)


# --- pure helpers (no process) --------------------------------------------------------

@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (1, "1ns"), (1500, "1.5µs"), (1_500_000, "1.5ms"), (1_500_000_000, "1.5s"),
    (-(2 * 3600 * 10**9 + 3000), "-2h0m0.000003s"), (90 * 10**9, "1m30s"),
    (3 * 10**9, "3s"), (2**63 - 1, "2562047h47m16.854775807s"),
])
def test_go_duration(ns, text):
    assert gotime.go_duration(ns) == text


@pytest.mark.parametrize("unix, nsec, offset, text", [
    (0, 0, 0, "1970-01-01T00:00:00Z"),
    (1709212455, 123456789, 0, "2024-02-29T13:14:15.123456789Z"),
    (946664999, 0, 19800, "1999-12-31T23:59:59+05:30"),
    (1, 500000000, -3600, "1969-12-31T23:00:01.5-01:00"),
])
def test_format_rfc3339(unix, nsec, offset, text):
    assert gotime.format_rfc3339(unix, nsec, offset) == text


def test_memory_merges_near_requests_and_retries_failed_merges():
    mem = Memory(Budget(1 << 20), merge_gap=256)
    mem.wanted = {(0x1000, 8), (0x1010, 8), (0x9000, 8)}
    reqs = mem.take_requests()
    assert reqs == [(0x1000, 0x18), (0x9000, 8)]
    mem.feed({(0x1000, 0x18): None, (0x9000, 8): b"12345678"})
    assert mem.read(0x9000, 8) == b"12345678"
    # The failed merged read is retried part by part, not declared unreadable.
    assert mem.read(0x1000, 8) is memory.PENDING
    assert mem.read(0x1010, 8) is memory.PENDING
    assert sorted(mem.take_requests()) == [(0x1000, 8), (0x1010, 8)]


def test_memory_joins_chunks():
    mem = Memory(Budget(100))
    mem.add(0x2000, b"abcd")
    mem.add(0x2004, b"efgh")
    mem.add(0x1ffe, b"XYab")
    assert mem.read(0x1ffe, 10) == b"XYabcdefgh"


def test_budget_refuses_reads_beyond_it():
    mem = Memory(Budget(10))
    mem.wanted = {(0x5000, 8), (0x9000, 8)}
    assert mem.take_requests() == [(0x5000, 8)]
    assert mem.read(0x9000, 8) == memory.Cut(0x9000, "budget")


def load_bias(pid: int, exe: str) -> int:
    """Runtime minus link-time address of the executable (0 unless PIE)."""
    from elftools.elf.elffile import ELFFile
    with open(exe, "rb") as f:
        first = min(s["p_vaddr"] for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD")
    real = os.path.realpath(exe)
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == real:
                return int(parts[0].split("-")[0], 16) - (first & ~0xFFF)
    raise AssertionError("executable not mapped")


def test_pie_binary_with_load_bias(go_build):
    exe = str(go_build("varzoo", "1.24.11", flags=("-buildmode=pie",)))
    p, expected = start_varzoo(exe)
    try:
        os.kill(p.pid, signal.SIGSTOP)
        with open(f"/proc/{p.pid}/mem", "rb", buffering=0) as mem:
            z = Zoo(p.pid, exe, expected, analyze(exe).debug, mem, [])
            bias = load_bias(p.pid, exe)
            assert bias != 0
            for name in ("EStruct", "EPtr", "EErr", "Fn", "Clos", "MS", "Ord"):
                t, addr = z.field_addr(name)
                d = values.read_value(z.debug, t, addr, z.read_batch, BIG, 16, bias=bias)
                assert d.value == expected["zoo"][name], name
    finally:
        p.kill()
        p.wait()


# --- one JSON shape for string-keyed maps (capture/mapkeys.py, docs/snapshot-format.md) ----

def test_a_map_whose_keys_were_not_read_is_still_an_object(zoo):
    """MS = {"one": 1, "two": 2, "three": 3}: with too few rounds to read its keys' bytes
    it is still an object, each key a "$cut:rounds@<address>" placeholder; and with the
    key bytes unreadable, "$cut:unreadable@..."."""
    whole = zoo.decode("MS").value
    assert whole == {"one": 1, "two": 2, "three": 3}
    shapes = [zoo.decode("MS", max_rounds=r).value for r in range(1, 6)]
    cut_keys = [v for v in shapes if any(k.startswith("$cut:") for k in v)]
    assert cut_keys, shapes     # some round limit leaves the keys unread
    for v in shapes:
        assert isinstance(v, dict), v
        if "$ptr" not in v and v:    # past the map's header and its buckets or groups
            assert sorted(v.values()) == [1, 2, 3]
            assert all(k in whole or re.fullmatch(r"\$cut:rounds@0x[0-9a-f]+", k) for k in v)

    t, addr = zoo.field_addr("MS")
    key_bytes = _key_data_addresses(zoo, "MS")

    def keys_unreadable(reqs):
        got = zoo.read_batch(reqs)
        return {(a, s): None if a in key_bytes else data for (a, s), data in got.items()}

    d = values.read_value(zoo.debug, t, addr, keys_unreadable, BIG, 16)
    assert sorted(d.value.values()) == [1, 2, 3]
    assert all(re.fullmatch(r"\$cut:unreadable@0x[0-9a-f]+", k) for k in d.value), d.value
    assert d.truncated


def _key_data_addresses(zoo, name: str) -> set[int]:
    """The data pointers of a string-keyed map's keys: each key's bytes, read whole."""
    t, addr = zoo.field_addr(name)
    mem = Memory(Budget(1 << 20))
    while True:
        dec = values.ValueDecoder(zoo.debug, mem, BIG)
        entries = dec.map_entries(t, int.from_bytes(zoo.read_batch([(addr, 8)])[(addr, 8)],
                                                    "little"))
        if not dec.pending:
            break
        mem.feed(zoo.read_batch(mem.take_requests()))
    return {memory.u(kb, koff, 8) for _kt, kb, koff, *_rest in entries}


@pytest.mark.parametrize("pairs, want", [
    ([("a", 1), ("$HOME", 2), ("$$x", 3)], {"a": 1, "$$HOME": 2, "$$$x": 3}),
    ([({"$ptr": "0x10", "$cut": "unreadable"}, 1), ("b", 2)],
     {"$cut:unreadable@0x10": 1, "b": 2}),
    ([({"$ptr": "0x10", "$cut": "rounds"}, 1), ({"$ptr": "0x10", "$cut": "rounds"}, 2),
      ({"$ptr": "0x10", "$cut": "rounds"}, 3)],
     {"$cut:rounds@0x10": 1, "$dup:2:$cut:rounds@0x10": 2, "$dup:3:$cut:rounds@0x10": 3}),
    ([({"$b64": "/w==", "$text": "\ufffd"}, 1)], {"$b64:/w==": 1}),
    ([], {}),
])
def test_string_keyed_map_object(pairs, want):
    assert mapkeys.string_keyed(pairs) == want
