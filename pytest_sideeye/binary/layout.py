"""Layouts of the Go runtime's own structures (runtime.g, runtime.m, gobuf, stack), the
goroutine status constants and the wait reason strings, read from the executable's DWARF.

Offsets differ between Go releases,
so every number comes from the binary, by field name.

Parsing all DWARF of a large binary with pyelftools takes seconds; Go's linker writes
names inline (DW_FORM_string) right after the DIE's abbreviation code, so the few DIEs
needed are found by searching `.debug_info` for their names and parsed one by one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pytest_sideeye.errors import MissingDebugInfo, SideeyeError

ReadMem = Callable[[int, int], bytes]

G_FIELDS = ("goid", "atomicstatus", "sched.sp", "sched.pc", "sched.bp", "sched.g",
            "sched.ctxt", "stack.lo", "stack.hi", "stackguard0", "syscallsp", "syscallpc",
            "waitsince", "waitreason", "gopc", "startpc", "m", "labels")
# trackingSeq: a per-goroutine counter of its exits from _Grunning (casgstatus), which the
# engine compares between its pre-read and its pause (engine/collect.py).
G_OPTIONAL = ("syscallbp", "parentGoid", "sched.lr", "sched.ret", "_panic", "_defer",
              "lockedm", "preempt", "trackingSeq")
# sched.timeToRun: the histogram of tracked goroutines' scheduling latencies, one count per
# tracked transition to running: how the engine bounds trackingSeq's wrapping (collect.py).
SCHED_OPTIONAL = ("timeToRun",)
M_FIELDS = ("procid", "curg", "alllink", "g0", "id")
M_OPTIONAL = ("tls", "vdsoSP", "vdsoPC", "libcallsp", "libcallpc", "gsignal", "p")

NO_DWARF_HINT = ("function names and file:line still work, but reading goroutines needs the "
                 "runtime layouts: build without -ldflags=-w (and without -s)")


@dataclass
class RuntimeLayout:
    """What the engine needs to read goroutines from a paused process's memory."""
    g_offsets: dict[str, int]
    g_size: int
    m_offsets: dict[str, int]
    m_size: int
    status_values: dict[str, int]     # "_Grunning" -> 2 ...
    wait_reasons: list[str]           # index = g.waitreason
    g_sizes: dict[str, int] = field(default_factory=dict)   # byte size of each g field
    m_sizes: dict[str, int] = field(default_factory=dict)
    sched_offsets: dict[str, int] = field(default_factory=dict)   # runtime.schedt's
    sched_sizes: dict[str, int] = field(default_factory=dict)
    variables: dict[str, int] = field(default_factory=dict)  # runtime globals, link addresses
    # Where the layouts came from: "dwarf" (the binary's own), or for a binary built
    # without DWARF (-ldflags=-w) from runtime_layouts.json: "table (Go 1.24.11)" for a
    # release the table was made from, "table (Go 1.24, as 1.24.3)" for another patch
    # release (plus ", picked by the live process of 2" when its minor had several).
    source: str = "dwarf"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RuntimeLayout":
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


class DwarfIndex:
    """Finds named DIEs in `.debug_info` without parsing every compile unit."""

    def __init__(self, elffile):
        if not elffile.has_dwarf_info() or elffile.get_section_by_name(".debug_info") is None:
            raise MissingDebugInfo(f"the binary has no DWARF (built with -ldflags=-w?): "
                                   f"{NO_DWARF_HINT}")
        self.dwarf = elffile.get_dwarf_info(relocate_dwarf_sections=False)
        stream = self.dwarf.debug_info_sec.stream
        self.data = bytes(stream.getbuffer()) if hasattr(stream, "getbuffer") else stream.read()

    def find(self, tag: str, name: str):
        """The first DIE with this tag and name, or None."""
        needle = name.encode() + b"\0"
        i = self.data.find(needle)
        while i > 0:
            # A DIE is its ULEB128 abbreviation code then its attributes; Go's abbrevs
            # start with the inline name, and Go has fewer than 128 abbrevs.
            if self.data[i - 1] != 0 and self.data[i - 1] < 0x80:
                try:
                    die = self.dwarf.get_DIE_from_refaddr(i - 1)
                except Exception:   # noqa: BLE001 - not a DIE start: keep searching
                    die = None
                if die is not None and die.tag == tag:
                    attr = die.attributes.get("DW_AT_name")
                    if attr is not None and attr.value == needle[:-1]:
                        return die
            i = self.data.find(needle, i + 1)
        return None

    def find_prefixed(self, tag: str, prefix: str) -> Iterable:
        """Every DIE with this tag whose name starts with prefix."""
        needle = prefix.encode()
        i = self.data.find(needle)
        seen = set()
        while i > 0:
            if self.data[i - 1] != 0 and self.data[i - 1] < 0x80 and i not in seen:
                seen.add(i)
                try:
                    die = self.dwarf.get_DIE_from_refaddr(i - 1)
                except Exception:   # noqa: BLE001
                    die = None
                if die is not None and die.tag == tag and "DW_AT_name" in die.attributes \
                        and die.attributes["DW_AT_name"].offset == i:
                    yield die
            i = self.data.find(needle, i + 1)

    def struct(self, name: str):
        die = self.find("DW_TAG_structure_type", name)
        if die is None:
            raise MissingDebugInfo(f"the DWARF has no type {name}: {NO_DWARF_HINT}")
        return die


def _members(die) -> dict[str, object]:
    return {c.attributes["DW_AT_name"].value.decode(): c for c in die.iter_children()
            if c.tag == "DW_TAG_member" and "DW_AT_name" in c.attributes}


def _type_of(die):
    t = die.get_DIE_from_attribute("DW_AT_type")
    while t.tag == "DW_TAG_typedef":
        t = t.get_DIE_from_attribute("DW_AT_type")
    return t


def _byte_size(die) -> int:
    attr = die.attributes.get("DW_AT_byte_size")
    return attr.value if attr is not None else 0


def struct_offsets(die, wanted: Iterable[str], optional: Iterable[str] = ()
                   ) -> tuple[dict[str, int], dict[str, int]]:
    """Offsets and sizes of dotted field paths ("sched.sp") inside a struct DIE.

    A field whose type is a struct wrapping one integer `value` (atomic.Uint32 and
    friends, used for g.atomicstatus since Go 1.20) resolves to that integer."""
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    cache: dict[int, dict] = {}

    def members_of(d):
        if d.offset not in cache:
            cache[d.offset] = _members(d)
        return cache[d.offset]

    for path in (*wanted, *optional):
        d, off, t = die, 0, None
        for part in path.split("."):
            m = members_of(d).get(part)
            if m is None:
                t = None
                break
            off += m.attributes["DW_AT_data_member_location"].value
            t = _type_of(m)
            d = t
        if t is None:
            if path in wanted:
                raise SideeyeError(f"runtime layout: {die.attributes['DW_AT_name'].value.decode()}"
                                   f" has no field {path}")
            continue
        if t.tag == "DW_TAG_structure_type" and "value" in members_of(t):
            inner = members_of(t)["value"]
            off += inner.attributes["DW_AT_data_member_location"].value
            t = _type_of(inner)
        offsets[path] = off
        sizes[path] = _byte_size(t)
    return offsets, sizes


def status_constants(index: DwarfIndex) -> dict[str, int]:
    """The goroutine status constants (`runtime._G*`) the compiler recorded."""
    found = {}
    for die in index.find_prefixed("DW_TAG_constant", "runtime._G"):
        name = die.attributes["DW_AT_name"].value.decode()[len("runtime."):]
        # Same prefix, other meanings: _GCoff/_GCmark (GC phases), _GoidCacheBatch.
        if name[2:3].islower() and not name.startswith("_Goid"):
            found[name] = die.attributes["DW_AT_const_value"].value
    for must in ("_Grunning", "_Gwaiting", "_Gscan"):
        if must not in found:
            raise SideeyeError(f"runtime layout: the DWARF has no constant runtime.{must}")
    return found


def variable_address(index: DwarfIndex, name: str) -> int | None:
    """Link-time address of a global variable from its DW_OP_addr location."""
    die = index.find("DW_TAG_variable", name)
    if die is None or "DW_AT_location" not in die.attributes:
        return None
    expr = die.attributes["DW_AT_location"].value
    if isinstance(expr, list) and len(expr) == 9 and expr[0] == 0x03:   # DW_OP_addr
        return int.from_bytes(bytes(expr[1:]), "little")
    return None


def variable_size(index: DwarfIndex, name: str) -> int:
    die = index.find("DW_TAG_variable", name)
    return _byte_size(_type_of(die)) if die is not None else 0


def read_go_strings(read_mem: ReadMem, addr: int, count: int) -> list[str]:
    """An array of Go strings (pointer, length) at addr, in the executable's data."""
    headers = read_mem(addr, 16 * count)
    out = []
    for k in range(count):
        ptr, n = struct.unpack_from("<QQ", headers, 16 * k)
        out.append(read_mem(ptr, n).decode("utf-8", "replace") if n else "")
    return out


RUNTIME_VARIABLES = ("runtime.allgs", "runtime.allglen", "runtime.allm",
                     "runtime.waitReasonStrings", "runtime.buildVersion",
                     "runtime.firstmoduledata", "runtime.sched", "runtime.allp")


# --- the table, for binaries without DWARF ----------------------------------------------------

# Made by scripts/gen_runtime_layouts.py from reference builds of each Go version.
TABLE_PATH = Path(__file__).resolve().parent / "runtime_layouts.json"


@functools.lru_cache(maxsize=1)
def _table_text() -> str:
    try:
        return TABLE_PATH.read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    try:
        return json.loads(_table_text())["versions"]
    except (ValueError, KeyError):
        return {}


def table_digest() -> str:
    """A short digest of the table: layouts cached from it are stale once it changes."""
    return hashlib.sha256(_table_text().encode()).hexdigest()[:12]


def table_versions() -> list[str]:
    """The Go minor versions the table has layouts for ("1.21", ..., "1.27")."""
    return sorted(_table(), key=_version_key)


def table_checked() -> list[str]:
    """Every Go release the table's layouts were read from (a reference build each)."""
    return sorted({v for entry in _table().values() for variant in entry["variants"]
                   for v in variant["checked"]}, key=_version_key)


def _version_key(v: str) -> list[int]:
    return [int(x) for x in v.split(".")]


def table_candidates(go_version: str, wait_reasons: list[str] | None = None
                     ) -> list[RuntimeLayout]:
    """The layouts Go `go_version` ("go1.24.11") may have, from the table, without
    addresses: the one of its own release when the table was made from it; else every
    distinct layout its minor version's releases had (one for most minors: patch
    releases rarely change the runtime's structures; the live process picks among
    several, engine/process.py); [] when the table has not its minor. `wait_reasons`,
    the binary's own (codescan.py), replace the table's: releases that differ only in
    those then give one layout."""
    v = go_version.removeprefix("go").split("-")[0].split(" ")[0]
    m = ".".join(v.split(".")[:2])
    variants = _table().get(m, {}).get("variants", [])
    exact = [x for x in variants if v in x["checked"]]
    distinct: dict[str, tuple[dict, list[str]]] = {}
    for x in exact or variants:
        layout = dict(x["layout"], variables={})
        if wait_reasons is not None:
            layout["wait_reasons"] = list(wait_reasons)
        key = json.dumps(layout, sort_keys=True)
        distinct.setdefault(key, (layout, []))[1].extend(x["checked"])
    return [RuntimeLayout.from_json(dict(layout, source=f"table (Go {v})" if exact else
                                         f"table (Go {m}, as {', '.join(checked)})"))
            for layout, checked in distinct.values()]


def table_layout(go_version: str) -> RuntimeLayout | None:
    """The one layout the table gives Go `go_version`, or None when it has none or
    several (table_candidates)."""
    found = table_candidates(go_version)
    return found[0] if len(found) == 1 else None


def load_layout(elffile, read_mem: ReadMem, symbols: dict[str, int] | None = None
                ) -> RuntimeLayout:
    """Read the runtime layouts from DWARF; `read_mem` reads the executable's static data
    at link-time addresses (for the wait reason strings); `symbols` gives .symtab
    addresses when the binary has them (DWARF variables are the fallback).

    Damaged DWARF makes pyelftools raise its own errors from anywhere: they become one
    MissingDebugInfo line."""
    try:
        return _load_layout(elffile, read_mem, symbols)
    except SideeyeError:
        raise
    except Exception as e:  # noqa: BLE001 - pyelftools' error kinds are open-ended
        raise MissingDebugInfo(f"the DWARF debug information is damaged ({type(e).__name__}); "
                               "rebuild the binary") from None


def _load_layout(elffile, read_mem: ReadMem, symbols: dict[str, int] | None) -> RuntimeLayout:
    index = DwarfIndex(elffile)
    g = index.struct("runtime.g")
    m = index.struct("runtime.m")
    g_off, g_sizes = struct_offsets(g, G_FIELDS, G_OPTIONAL)
    m_off, m_sizes = struct_offsets(m, M_FIELDS, M_OPTIONAL)
    sched = index.find("DW_TAG_structure_type", "runtime.schedt")
    sched_off, sched_sizes = struct_offsets(sched, (), SCHED_OPTIONAL) if sched is not None \
        else ({}, {})
    variables = {}
    for name in RUNTIME_VARIABLES:
        addr = (symbols or {}).get(name) or variable_address(index, name)
        if addr:
            variables[name] = addr
    return RuntimeLayout(g_off, _byte_size(g), m_off, _byte_size(m), status_constants(index),
                         _wait_reasons(index, read_mem, variables), g_sizes, m_sizes,
                         sched_off, sched_sizes, variables)


def _wait_reasons(index: DwarfIndex, read_mem: ReadMem, variables: dict[str, int]) -> list[str]:
    addr = variables.get("runtime.waitReasonStrings")
    size = variable_size(index, "runtime.waitReasonStrings")
    if not addr or not size:
        raise SideeyeError("runtime layout: runtime.waitReasonStrings not found in the binary")
    return read_go_strings(read_mem, addr, size // 16)
