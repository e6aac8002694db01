"""Binary analysis of a Go executable (stage 1 of the snapshot pipeline): Go version,
build id, PIE or not, runtime symbol addresses, the function table (pclntab.Symtab) and
the runtime layouts (runtime_layout.RuntimeLayout), plus the per-process facts the engine
needs to apply them (executable path, load bias).

The layouts and addresses are cached on disk by build id under
~/.cache/sideeye/binaries/ (DWARF is the slow part); the Symtab is rebuilt from the file
each time (milliseconds) and everything is cached in memory per path+mtime.
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pytest_sideeye.errors import MissingDebugInfo, NoPermission, NotGoBinary, SideeyeError, TargetGone
from pytest_sideeye.binary.pclntab import MAGIC_GO118, MAGIC_GO120, Symtab, uvarint
from pytest_sideeye.binary.layout import NO_DWARF_HINT, RuntimeLayout, load_layout

CACHE_DIR = Path(os.environ.get("SIDEEYE_BINARY_CACHE",
                                Path.home() / ".cache" / "sideeye" / "binaries"))
CACHE_SCHEMA = 2
MIN_GO = (1, 21)
BUILDINFO_MAGIC = b"\xff Go buildinf:"
WANTED_SYMBOLS = ("runtime.allgs", "runtime.allglen", "runtime.allm", "runtime.goexit",
                  "runtime.waitReasonStrings", "runtime.buildVersion",
                  "runtime.firstmoduledata", "runtime.text", "runtime.etext", "runtime.sched",
                  "runtime.allp", "runtime.mcall", "runtime.morestack", "runtime.gopark",
                  "runtime.goexit1", "go:func.*", "go.func.*")
PCLNTAB_SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")
# runtime.moduledata.text: after pcHeader, six slices, findfunctab, minpc and maxpc
# (the same in Go 1.18 to 1.27).
MODULEDATA_TEXT = 8 + 6 * 24 + 3 * 8


class StaticImage:
    """An ELF executable's loadable sections addressed by link-time virtual address."""

    def __init__(self, elffile: ELFFile, data: bytes | None = None):
        self.elf = elffile
        if data is None:
            stream = elffile.stream
            stream.seek(0)
            data = stream.read()
        self.data = data
        self.sections = []    # (addr, size, file offset or None for NOBITS, name)
        for s in elffile.iter_sections():
            if s["sh_flags"] & 2 and s["sh_addr"] and s["sh_size"]:
                off = None if s["sh_type"] == "SHT_NOBITS" else s["sh_offset"]
                self.sections.append((s["sh_addr"], s["sh_size"], off, s.name))
        self.sections.sort(key=lambda sec: (sec[0], sec[1]))
        self._symbols: dict[str, int] | None = None

    def section(self, *names: str) -> tuple[int, int, int | None, str] | None:
        for sec in self.sections:
            if sec[3] in names:
                return sec
        return None

    def read(self, addr: int, n: int) -> bytes:
        """n bytes at a link-time address (zeros for .bss); KeyError when unmapped."""
        for start, size, off, name in self.sections:
            if start <= addr and addr + n <= start + size:
                if off is None:
                    return bytes(n)
                return self.data[off + addr - start:off + addr - start + n]
        raise KeyError(f"address {addr:#x}+{n} is not in a loaded section")

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    # ---- symbols ------------------------------------------------------------------

    @property
    def has_symtab(self) -> bool:
        return self.elf.get_section_by_name(".symtab") is not None

    def symbols(self) -> dict[str, int]:
        """All .symtab symbols with an address (empty when stripped). Parsed by hand:
        pyelftools builds an object per symbol, ten times slower on Go's ~30k symbols."""
        if self._symbols is None:
            self._symbols = {}
            sec = self.elf.get_section_by_name(".symtab")
            if sec is not None:
                strtab = self.elf.get_section(sec["sh_link"])
                strs = self.data[strtab["sh_offset"]:strtab["sh_offset"] + strtab["sh_size"]]
                raw = self.data[sec["sh_offset"]:sec["sh_offset"] + sec["sh_size"]]
                for name_off, _info, _other, shndx, value, _size in struct.iter_unpack(
                        "<IBBHQQ", raw):
                    if value and shndx:
                        end = strs.index(b"\0", name_off)
                        self._symbols.setdefault(strs[name_off:end].decode("utf-8", "replace"),
                                                 value)
        return self._symbols

    # ---- the Go function table --------------------------------------------------------

    def pclntab_section(self) -> tuple[int, bytes]:
        sec = self.section(*PCLNTAB_SECTIONS)
        if sec is None:
            sec = self._find_pclntab_by_magic()
        if sec is None or sec[2] is None:
            raise NotGoBinary("no Go function table (.gopclntab) in the binary")
        addr, size, off, _ = sec
        return addr, self.data[off:off + size]

    def _find_pclntab_by_magic(self):
        # Some linkers (external linking, -s) merge .gopclntab into .rodata: look for a
        # pcHeader (magic, 0, 0, quantum 1, pointer size 8) at an 8-aligned offset.
        for start, size, off, name in self.sections:
            if off is None:
                continue
            blob = self.data[off:off + size]
            for magic in (MAGIC_GO120, MAGIC_GO118):
                needle = struct.pack("<IBBBB", magic, 0, 0, 1, 8)
                i = blob.find(needle)
                while i >= 0 and i % 8:
                    i = blob.find(needle, i + 1)
                if i >= 0:
                    return (start + i, size - i, off + i, name)
        return None

    def text_start(self, pclntab_addr: int, pclntab: bytes) -> int:
        """runtime.text, the base of function entry offsets. With external linking the
        .text section starts with C code, so the section address is the last resort."""
        sym = self.symbols().get("runtime.text")
        if sym:
            return sym
        header_text = struct.unpack_from("<Q", pclntab, 24)[0]   # Go 1.18 to 1.26
        if header_text:
            return header_text
        md = self.moduledata_addr(pclntab_addr)
        if md is not None:
            return self.u64(md + MODULEDATA_TEXT)
        sec = self.section(".text")
        return sec[0] if sec else 0

    def moduledata_addr(self, pclntab_addr: int) -> int | None:
        """runtime.firstmoduledata: its first word points at the pcHeader."""
        sym = self.symbols().get("runtime.firstmoduledata")
        if sym:
            return sym
        needle = struct.pack("<Q", pclntab_addr)
        for start, size, off, name in self.sections:
            if off is None or name in PCLNTAB_SECTIONS:
                continue
            blob = self.data[off:off + size]
            i = blob.find(needle)
            while i >= 0:
                if i % 8 == 0:
                    return start + i
                i = blob.find(needle, i + 1)
        return None

    def gofunc(self, pclntab_addr: int) -> int | None:
        """Address of go:func.* (base of funcdata offsets, inline trees)."""
        syms = self.symbols()
        for name in ("go:func.*", "go.func.*"):
            if syms.get(name):
                return syms[name]
        md = self.moduledata_addr(pclntab_addr)
        return None if md is None else self.gofunc_from_moduledata(md)

    def gofunc_from_moduledata(self, md: int) -> int | None:
        rodata = self.section(".rodata")
        if rodata is None:
            return None
        # moduledata: after the text/data/bss bounds and the type fields comes
        # `rodata` then `gofunc`; the fields between vary by release, so find rodata.
        # `types` often equals rodata too (Go 1.21-1.26): the last match is rodata.
        words = struct.unpack("<24Q", self.read(md + 8 * 22, 8 * 24))
        found = None
        for k in range(len(words) - 1):
            if words[k] == rodata[0] and words[k + 1] > rodata[0]:
                found = words[k + 1]
        return found

    def symtab(self) -> Symtab:
        addr, tab = self.pclntab_section()
        return Symtab(tab, self.text_start(addr, tab), gofunc=self.gofunc(addr), read_mem=self.read,
                      pclntab_addr=addr)


# ---- build info and build ids ---------------------------------------------------------

def read_buildinfo(image: StaticImage) -> tuple[str, str] | None:
    """(Go version, module info) from the build info blob, or None when absent."""
    blob, base = None, 0
    sec = image.section(".go.buildinfo")
    if sec is not None and sec[2] is not None:
        blob, base = image.data[sec[2]:sec[2] + sec[1]], sec[0]
    else:
        for start, size, off, _ in image.sections:
            if off is None:
                continue
            chunk = image.data[off:off + size]
            i = chunk.find(BUILDINFO_MAGIC)
            while i >= 0 and i % 16:
                i = chunk.find(BUILDINFO_MAGIC, i + 1)
            if i >= 0:
                blob, base = chunk[i:], start + i
                break
    if blob is None or not blob.startswith(BUILDINFO_MAGIC):
        return None
    return parse_buildinfo(blob, image.read)


def parse_buildinfo(blob: bytes, read: Callable[[int, int], bytes]) -> tuple[str, str]:
    """(Go version, module info) from a build info blob starting at its magic; `read`
    reads the executable's data at link-time addresses (for the pre-1.18 format)."""
    ptr_size, flags = blob[14], blob[15]
    if flags & 2:
        # Go 1.18+: the two strings follow the 32-byte header inline, varint-prefixed.
        n, off = uvarint(blob, 32)
        version = blob[off:off + n].decode("utf-8", "replace")
        n2, off2 = uvarint(blob, off + n)
        modinfo = blob[off2:off2 + n2].decode("utf-8", "replace")
        return version, modinfo
    if ptr_size != 8 or flags & 1:
        raise SideeyeError("unsupported Go build info (big-endian or 32-bit binary)")
    # Before 1.18: two pointers to Go string headers.
    vptr, mptr = struct.unpack_from("<QQ", blob, 16)
    strings = []
    for p in (vptr, mptr):
        data, n = struct.unpack("<QQ", read(p, 16))
        strings.append(read(data, n).decode("utf-8", "replace") if n else "")
    return strings[0], strings[1]


def _notes(image: StaticImage, name: str) -> list[tuple[bytes, int, bytes]]:
    sec = image.elf.get_section_by_name(name)
    if sec is None:
        return []
    raw, out, off = sec.data(), [], 0
    while off + 12 <= len(raw):
        namesz, descsz, ntype = struct.unpack_from("<III", raw, off)
        off += 12
        nm = raw[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        out.append((nm, ntype, raw[off:off + descsz]))
        off += (descsz + 3) & ~3
    return out


def build_ids(image: StaticImage) -> tuple[str | None, str | None]:
    """(Go build id, GNU build id as hex)."""
    go_id = gnu_id = None
    for nm, ntype, desc in _notes(image, ".note.go.buildid"):
        if nm == b"Go" and ntype == 4:
            go_id = desc.decode("utf-8", "replace")
    for nm, ntype, desc in _notes(image, ".note.gnu.build-id"):
        if nm == b"GNU" and ntype == 3:
            gnu_id = desc.hex()
    return go_id, gnu_id


def parse_go_version(version: str) -> tuple[int, int] | None:
    m = re.match(r"go(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


# ---- the analysis ---------------------------------------------------------------------

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

    def symbol(self, name: str) -> int:
        """Link-time address of a runtime global; one clear line when it is unknown."""
        addr = self.symbols.get(name)
        if addr is None:
            raise MissingDebugInfo(
                f"{self.path}: the address of {name} is unknown: the binary has neither a "
                "symbol table nor DWARF (built with -ldflags='-s -w'?); rebuild without them")
        return addr


_memory_cache: dict[tuple[str, int, int], BinaryInfo] = {}


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
    key = (path, st.st_mtime_ns, st.st_size)
    info = _memory_cache.get(key)
    if info is None:
        info = _analyze_file(path, use_disk_cache)
        _memory_cache[key] = info
    if need_layout:
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
    go_id, gnu_id = build_ids(image)
    bi = read_buildinfo(image)
    has_pcln = image.section(*PCLNTAB_SECTIONS) is not None
    if bi is None and not has_pcln and go_id is None:
        raise NotGoBinary(f"{path} is not a Go binary (no Go build info or function table)")
    go_version = bi[0] if bi else "unknown"
    ver = parse_go_version(go_version)
    if ver is not None and ver < MIN_GO:
        raise SideeyeError(f"{path}: Go {ver[0]}.{ver[1]} is not supported; "
                           "supported: 1.21 and newer")
    build_id = _cache_key(go_id, gnu_id, data)
    cached = _load_cached(build_id) if use_disk_cache else None
    symtab = image.symtab() if cached is None else Symtab(
        image.pclntab_section()[1], cached["text_start"], gofunc=cached["gofunc"],
        read_mem=image.read, pclntab_addr=cached["pclntab_addr"])
    if cached is None:
        cached = _compute(path, elf, image, symtab, go_version)
        if use_disk_cache:
            _store_cached(build_id, cached)
    layout = cached["layout"]
    return BinaryInfo(path, build_id, go_version, elf["e_type"] == "ET_DYN",
                      cached["text_start"], cached["symbols"], symtab,
                      RuntimeLayout.from_json(layout) if isinstance(layout, dict) else layout,
                      cached["first_load_vaddr"], cached["has_symtab"])


def _cache_key(go_id: str | None, gnu_id: str | None, data: bytes) -> str:
    if gnu_id:
        return gnu_id
    if go_id:
        return re.sub(r"[^A-Za-z0-9_-]", "_", go_id)
    import hashlib
    return "sha256-" + hashlib.sha256(data).hexdigest()


def _compute(path: str, elf: ELFFile, image: StaticImage, symtab: Symtab,
             go_version: str) -> dict:
    symbols = _symbols(image, symtab)
    try:
        layout: dict | str = load_layout(elf, image.read, symbols).to_json()
        for name, addr in layout["variables"].items():
            symbols.setdefault(name, addr)
    except MissingDebugInfo as e:
        layout = str(e)
        if not image.has_symtab:
            layout = ("stripped (no DWARF and no symbol table, built with "
                      f"-ldflags='-s -w'?): {NO_DWARF_HINT}")
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    first = min(loads, key=lambda s: s["p_vaddr"]) if loads else None
    first_load = (first["p_vaddr"] - first["p_offset"]) & ~0xFFF if first else 0
    return {"schema": CACHE_SCHEMA, "go_version": go_version, "text_start": symtab.text_start,
            "gofunc": symtab.gofunc, "pclntab_addr": symtab.pclntab_addr,
            "symbols": symbols, "layout": layout, "first_load_vaddr": first_load,
            "has_symtab": image.has_symtab}


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


def _cache_file(build_id: str) -> Path:
    return CACHE_DIR / f"{build_id}.json"


def _load_cached(build_id: str) -> dict | None:
    try:
        d = json.loads(_cache_file(build_id).read_text())
    except (OSError, ValueError):
        return None
    return d if d.get("schema") == CACHE_SCHEMA else None


def _store_cached(build_id: str, d: dict) -> None:
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = _cache_file(build_id).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, _cache_file(build_id))
    except OSError:
        pass   # a cache we cannot write only costs time


# ---- per process ----------------------------------------------------------------------

def exe_for_pid(pid: int) -> str:
    """The executable of a running process, as a path readable from the host (also for a
    process inside a container: /proc/PID/exe resolves through its mount namespace)."""
    exe = f"/proc/{pid}/exe"
    try:
        os.stat(exe)
    except FileNotFoundError:
        raise TargetGone(f"process {pid} is gone") from None
    except PermissionError:
        raise NoPermission(f"cannot read the executable of process {pid}: run as root") \
            from None
    return exe


def load_bias(pid: int, info: BinaryInfo) -> int:
    """What to add to link-time addresses to get addresses in process pid: 0 for a
    non-PIE executable; for PIE the start of the executable's first mapping minus its
    link-time address (from /proc/PID/maps)."""
    if not info.pie:
        return 0
    try:
        target = os.readlink(f"/proc/{pid}/exe")
        st = os.stat(f"/proc/{pid}/exe")
        maps = Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:
        raise TargetGone(f"process {pid} is gone") from None
    except PermissionError:
        raise NoPermission(f"cannot read /proc/{pid}/maps: run as root") from None
    target = target.removesuffix(" (deleted)")
    starts = []
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        addr, _perm, offset, _dev, inode, name = parts
        name = name.removesuffix(" (deleted)")
        if name == target or int(inode) == st.st_ino:
            starts.append(int(addr.split("-")[0], 16) - int(offset, 16))
    if not starts:
        raise SideeyeError(f"process {pid}: its executable is not in /proc/{pid}/maps")
    return min(starts) - info.first_load_vaddr
