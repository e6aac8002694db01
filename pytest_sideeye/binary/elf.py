"""What an ELF executable says about itself, read by hand where pyelftools is slow:
its loaded sections by link-time address, its symbol table (when not stripped), its
Go function table (`.gopclntab` -> pclntab.Symtab), its Go build info and its build id."""
from __future__ import annotations

import hashlib
import re
import struct
from typing import Callable

from elftools.elf.elffile import ELFFile

from pytest_sideeye.binary.pclntab import MAGIC_GO118, MAGIC_GO120, Symtab, uvarint
from pytest_sideeye.errors import NotGoBinary, SideeyeError

BUILDINFO_MAGIC = b"\xff Go buildinf:"
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
    blob = None
    sec = image.section(".go.buildinfo")
    if sec is not None and sec[2] is not None:
        blob = image.data[sec[2]:sec[2] + sec[1]]
    else:
        for _start, size, off, _ in image.sections:
            if off is None:
                continue
            chunk = image.data[off:off + size]
            i = chunk.find(BUILDINFO_MAGIC)
            while i >= 0 and i % 16:
                i = chunk.find(BUILDINFO_MAGIC, i + 1)
            if i >= 0:
                blob = chunk[i:]
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


def build_id(image: StaticImage) -> str:
    """The one key for everything cached about a binary: its GNU build id, else its Go
    build id, else a hash of its bytes."""
    go_id, gnu_id = build_ids(image)
    if gnu_id:
        return gnu_id
    if go_id:
        return re.sub(r"[^A-Za-z0-9_-]", "_", go_id)
    return "sha256-" + hashlib.sha256(image.data).hexdigest()


def parse_go_version(version: str) -> tuple[int, int] | None:
    m = re.match(r"go(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None

