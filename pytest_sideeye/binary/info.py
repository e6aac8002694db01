"""The one `BinaryInfo` of a Go executable (stage 1 of the pipeline, as Delve's
pkg/proc keeps one): Go version, build id, PIE or not, runtime symbol addresses, the
function table (pclntab.Symtab), the runtime layouts (layout.RuntimeLayout) and, on first
use, the DWARF view variable capture needs (`.debug`, a dwarf.DebugInfo).

Layouts and addresses are cached on disk by build id (diskcache, kind "binaries": DWARF is
the slow part); the Symtab is rebuilt from the file each time (milliseconds) and
everything is cached in memory per path+mtime, within the process's memo (memo.py).
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pytest_sideeye.binary.codescan import (
    NotFound,
    runtime_globals_from_code,
    sched_from_code,
    wait_reasons_from_code,
)
from pytest_sideeye.binary.dwarf import DebugInfo
from pytest_sideeye.binary.elf import (
    PCLNTAB_SECTIONS,
    StaticImage,
    build_id,
    build_ids,
    parse_go_version,
    read_buildinfo,
)
from pytest_sideeye.binary.layout import (
    RuntimeLayout,
    load_layout,
    table_candidates,
    table_digest,
    table_versions,
)
from pytest_sideeye.binary.pclntab import Symtab
from pytest_sideeye.errors import MissingDebugInfo, NoPermission, NotGoBinary, SideeyeError
from pytest_sideeye.files import JsonCache
from pytest_sideeye.memo import MEMO

CACHE = JsonCache("binary", schema=7)
MIN_GO = (1, 21)
WANTED_SYMBOLS = ("runtime.allgs", "runtime.allglen", "runtime.allm", "runtime.goexit",
                  "runtime.waitReasonStrings", "runtime.buildVersion",
                  "runtime.firstmoduledata", "runtime.text", "runtime.etext", "runtime.sched",
                  "runtime.allp", "runtime.mcall", "runtime.morestack", "runtime.gopark",
                  "runtime.goexit1", "runtime.types", "go:func.*", "go.func.*")

@dataclass
class BinaryInfo:
    path: str
    build_id: str
    go_version: str            # as in the build info, e.g. "go1.24.11"
    pie: bool
    text_start: int
    symbols: dict[str, int]    # link-time addresses of runtime globals and functions
    symtab: Symtab = field(repr=False)
    layout_or_error: RuntimeLayout | str = field(repr=False)
    first_load_vaddr: int = 0  # link-time page address of the executable's first mapping
    has_symtab: bool = True
    has_dwarf: bool = True
    # Where runtime.allgs/allglen/allm came from: "symbols", "dwarf", or "code" (a
    # stripped binary: binary/codescan.py; the engine checks them in the live process).
    globals_from: str | None = "symbols"
    # A binary without DWARF of a Go release the table was not made from, whose minor
    # version's releases had several layouts: the live process picks one
    # (engine/process.py pick_layout, then with_layout); `layout` raises until then.
    layout_candidates: list[RuntimeLayout] = field(default_factory=list, repr=False)

    @property
    def debug(self) -> DebugInfo:
        """The DWARF side (types, functions, variable locations), loaded on first use and
        shared by every BinaryInfo of the same build id; MissingDebugInfo without DWARF."""
        with _debug_lock:
            return MEMO.remember(self.build_id, "debug", self.build_id, lambda: DebugInfo(
                self.path, build_id=self.build_id, symtab=self.symtab,
                types_base=self.symbols.get("runtime.types", 0)))

    @property
    def layout(self) -> RuntimeLayout:
        """The runtime layouts; raises MissingDebugInfo when the binary has no DWARF."""
        if isinstance(self.layout_or_error, str):
            # The reason is cached by build id, shared by every path of the binary: the
            # path is this BinaryInfo's own.
            raise MissingDebugInfo(f"{self.path}: {self.layout_or_error}")
        return self.layout_or_error

    @property
    def has_layout(self) -> bool:
        return not isinstance(self.layout_or_error, str)

    def with_layout(self, layout: RuntimeLayout) -> "BinaryInfo":
        """This binary with the layout the live process picked among the candidates."""
        return replace(self, layout_or_error=layout, layout_candidates=[])

    def symbol(self, name: str) -> int:
        """Link-time address of a runtime global; one clear line when it is unknown."""
        addr = self.symbols.get(name)
        if addr is None:
            raise MissingDebugInfo(
                f"{self.path}: the address of {name} is unknown: the binary has neither a "
                "symbol table nor DWARF (built with -ldflags='-s -w'?); rebuild without them")
        return addr


# In memory, every BinaryInfo (by path+mtime+size) and DebugInfo (by build id) is an entry
# of its build id's group in the process's memo (memo.py: one byte budget, least recently
# used binaries dropped first).
_debug_lock = threading.Lock()


def analyze(path: str | os.PathLike, *, need_layout: bool = True,
            use_disk_cache: bool = True) -> BinaryInfo:
    """Analyse a Go executable. With need_layout (the default) a binary without DWARF
    raises MissingDebugInfo; without, the BinaryInfo is returned and only `.layout`
    raises (function names and file:line still work)."""
    path = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SideeyeError(f"{path}: no such file") from None
    except PermissionError:
        raise NoPermission(f"{path}: permission denied (run as root to read other "
                           "users' processes)") from None
    # By the file (device, inode, mtime, size), not the path: each process's /proc/PID/exe
    # is a path of its own for the same file, and an analysis per process grew the agent
    # with every restart. The BinaryInfo carries the path asked for: what reads the file
    # later opens that path (the read-only data, plan.py), which lives as its process does.
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    info = MEMO.get("binary", key)
    if info is None:
        with MEMO.weighed("binary", key) as size:
            info = _analyze_file(path, use_disk_cache)
        MEMO.put(info.build_id, "binary", key, info, size.nbytes)
    if info.path != path:
        info = replace(info, path=path)    # shares the analysis: a few hundred bytes
    if need_layout and not info.layout_candidates:
        info.layout  # noqa: B018 - raises MissingDebugInfo with the reason
    return info


def _open(path: str) -> tuple[ELFFile, bytes]:
    try:
        data = Path(path).read_bytes()
    except PermissionError:
        raise NoPermission(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise NotGoBinary(f"{path} is a directory, not a Go executable") from None
    if not data.startswith(b"\x7fELF"):
        raise NotGoBinary(f"{path} is not an ELF executable")
    try:
        elf = ELFFile(io.BytesIO(data))
    except ELFError as e:
        raise NotGoBinary(f"{path} is not a readable ELF file ({e})") from None
    if elf["e_machine"] != "EM_X86_64":
        raise NotGoBinary(f"{path} is a {elf['e_machine']} binary; only amd64 is supported")
    return elf, data


def _analyze_file(path: str, use_disk_cache: bool) -> BinaryInfo:
    elf, data = _open(path)
    image = StaticImage(elf, data)
    go_id, _gnu_id = build_ids(image)
    bi = read_buildinfo(image)
    has_pcln = image.section(*PCLNTAB_SECTIONS) is not None
    if bi is None and not has_pcln and go_id is None:
        raise NotGoBinary(f"{path} is not a Go binary (no Go build info or function table)")
    go_version = bi[0] if bi else "unknown"
    ver = parse_go_version(go_version)
    if ver is not None and ver < MIN_GO:
        raise SideeyeError(f"{path}: Go {ver[0]}.{ver[1]} is not supported; "
                           "supported: 1.21 and newer")
    # The build info's Go version is part of the key: the layouts depend on it, and a
    # binary whose build info was rewritten keeps its build id. A binary without DWARF
    # takes its layouts from the table: a new table makes them stale.
    key = build_id(image)
    cache_key = f"{key}-{go_version}-{table_digest()}"
    cached = CACHE.load(cache_key) if use_disk_cache else None
    symtab = image.symtab() if cached is None else Symtab(
        image.pclntab_section()[1], cached["text_start"], gofunc=cached["gofunc"],
        read_mem=image.read, pclntab_addr=cached["pclntab_addr"])
    if cached is None:
        cached = _compute(path, elf, image, symtab, go_version)
        if use_disk_cache:
            CACHE.store(cache_key, cached)
    layout = cached["layout"]
    return BinaryInfo(path, key, go_version, elf["e_type"] == "ET_DYN",
                      cached["text_start"], cached["symbols"], symtab,
                      RuntimeLayout.from_json(layout) if isinstance(layout, dict) else layout,
                      cached["first_load_vaddr"], cached["has_symtab"], cached["has_dwarf"],
                      cached["globals_from"],
                      [RuntimeLayout.from_json(c) for c in cached["candidates"]])


def _compute(path: str, elf: ELFFile, image: StaticImage, symtab: Symtab,
             go_version: str) -> dict:
    symbols = _symbols(image, symtab)
    globals_from = "symbols" if "runtime.allgs" in symbols else None
    has_dwarf = elf.get_section_by_name(".debug_info") is not None
    candidates: list[dict] = []
    try:
        layout: dict | str = load_layout(elf, image.read, symbols).to_json()
        for name, addr in layout["variables"].items():
            symbols.setdefault(name, addr)
    except MissingDebugInfo as e:
        why = str(e) if image.has_symtab else \
            "stripped (no DWARF and no symbol table, built with -ldflags='-s -w'?)"
        layout, candidates = _table_layout(go_version, why, _own_wait_reasons(elf, image,
                                                                               symtab))
    if "runtime.allgs" in symbols:
        globals_from = globals_from or "dwarf"
    elif isinstance(layout, dict) or candidates:
        try:
            symbols.update(runtime_globals_from_code(elf, image.read, symtab))
            globals_from = "code"
            symbols.update(_sched_from_code(elf, image, symtab))
        except NotFound as e:
            layout, candidates = (f"stripped (no symbol table, built with -ldflags=-s?) and "
                                  f"{e}: the runtime's goroutine list cannot be found; "
                                  "rebuild without -s"), []
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    first = min(loads, key=lambda s: s["p_vaddr"]) if loads else None
    first_load = (first["p_vaddr"] - first["p_offset"]) & ~0xFFF if first else 0
    return {"go_version": go_version, "text_start": symtab.text_start,
            "gofunc": symtab.gofunc, "pclntab_addr": symtab.pclntab_addr,
            "symbols": symbols, "layout": layout, "first_load_vaddr": first_load,
            "has_symtab": image.has_symtab, "has_dwarf": has_dwarf,
            "globals_from": globals_from, "candidates": candidates}


def _sched_from_code(elf: ELFFile, image: StaticImage, symtab: Symtab) -> dict[str, int]:
    """runtime.sched of a stripped binary, from its code (codescan.py), for the pre-read
    (sched.timeToRun); {} when the code does not show it (the pause walks instead)."""
    try:
        return {"runtime.sched": sched_from_code(elf, image.read, symtab)}
    except (NotFound, SideeyeError, ValueError):
        return {}


def _own_wait_reasons(elf: ELFFile, image: StaticImage, symtab: Symtab) -> list[str] | None:
    """The wait reason strings of a binary without DWARF, from its code (codescan.py);
    None (the table's are used) when the code does not show them."""
    try:
        return wait_reasons_from_code(elf, image.read, symtab)
    except (NotFound, SideeyeError, ValueError):
        return None


def _table_layout(go_version: str, why: str, wait_reasons: list[str] | None
                  ) -> tuple[dict | str, list[dict]]:
    """Layouts for a binary without DWARF, from the table made from reference builds of
    its Go version: (the layout, []) when the table gives one; (the reason there is none
    yet, the candidates) when its minor's releases had several and none is its own; (the
    reason it has none, []) when the table lacks its minor."""
    found = table_candidates(go_version, wait_reasons)
    version = go_version.removeprefix("go")
    if len(found) == 1:
        return found[0].to_json(), []
    if found:
        return (f"{why.split(':')[0].rstrip('.')}, and Go {version} is not in the runtime "
                f"layout table, whose Go {'.'.join(version.split('.')[:2])} releases have "
                f"{len(found)} different layouts: only a live process can pick one"), \
            [c.to_json() for c in found]
    have = ", ".join(table_versions())
    return (f"{why.split(':')[0].rstrip('.')}, and Go {version} is not in the runtime "
            f"layout table (it has {have}): rebuild without -ldflags=-w"), []


def _symbols(image: StaticImage, symtab: Symtab) -> dict[str, int]:
    all_syms = image.symbols()
    out = {n: all_syms[n] for n in WANTED_SYMBOLS if n in all_syms}
    # Functions are always in the pclntab, even in a stripped binary.
    for name in ("runtime.goexit", "runtime.mcall", "runtime.morestack", "runtime.gopark",
                 "runtime.goexit1"):
        f = symtab.func_by_name(name)
        if f is not None:
            out.setdefault(name, f.entry)
    if symtab.pclntab_addr is not None and "runtime.firstmoduledata" not in out:
        md = image.moduledata_addr(symtab.pclntab_addr)
        if md is not None:
            out["runtime.firstmoduledata"] = md
    return out
