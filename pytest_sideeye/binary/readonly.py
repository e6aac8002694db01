"""A process's read-only data, read from its executable file instead of its memory.

String literals, Go's table of small numbers (strconv.Itoa), type names: everything the
linker puts in a non-writable, non-executable PT_LOAD segment (.rodata, .typelink,
.gopclntab, ...) is mapped from the file and never changes while the process lives. Its
pages are file-backed and often never touched by the process, so a read of the process's
memory that does not fault pages in (the stop hook) gets nothing there, and one that does
(the iterator) pays a page fault, maybe a disk read, inside the pause. The file holds the
very same bytes: reading them from it costs the target nothing and gives exactly what
/proc/PID/mem would.

Writable segments are left out (their contents change, and a PIE's relocated data sits
there, in its RELRO part), and so are executable ones (a debugger or a uprobe may patch
code). The file is the one the process runs: /proc/PID/exe, which resolves through a
container's mount namespace and still reads after the file was replaced or deleted.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct

PT_LOAD = 1
PF_X, PF_W = 1, 2
ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")   # e_ident .. e_shstrndx
PHDR = struct.Struct("<IIQQQQQQ")                     # p_type, p_flags, p_offset, p_vaddr, ...


class ReadOnlyData:
    """The read-only, file-backed segments of an executable, addressed as loaded at `bias`
    (runtime minus link-time addresses; 0 for a non-PIE executable)."""

    def __init__(self, image: mmap.mmap | bytes, ranges: list[tuple[int, int, int]]):
        self._image = image
        self.ranges = sorted(ranges)           # (runtime start, end, file offset)
        self._starts = [lo for lo, _hi, _off in self.ranges]

    @classmethod
    def open(cls, path: str | os.PathLike, bias: int = 0) -> "ReadOnlyData | None":
        """The executable at `path` mapped (nothing is read until asked), or None when it
        cannot be opened or is not a 64-bit ELF file."""
        try:
            with open(path, "rb") as f:
                image = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        ranges = segments(image, bias)
        if ranges is None:
            image.close()
            return None
        return cls(image, ranges)

    def covers(self, addr: int, size: int) -> bool:
        """Whether [addr, addr+size) lies within one read-only segment's file data."""
        return self._segment(addr, size) is not None

    def read(self, addr: int, size: int) -> bytes | None:
        """The size bytes at runtime address addr, or None when they are not all in one
        read-only segment's file data."""
        seg = self._segment(addr, size)
        if seg is None:
            return None
        lo, _hi, off = seg
        return self._image[off + addr - lo:off + addr - lo + size]

    def _segment(self, addr: int, size: int) -> tuple[int, int, int] | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0 or size < 0:
            return None
        seg = self.ranges[i]
        return seg if addr + size <= seg[1] else None


def segments(image: mmap.mmap | bytes, bias: int) -> list[tuple[int, int, int]] | None:
    """(runtime start, end, file offset) of the file data of each PT_LOAD segment that is
    neither writable nor executable; None when the image is not a little-endian ELF64."""
    if len(image) < ELF64_HEADER.size or image[:4] != b"\x7fELF" or image[4] != 2 \
            or image[5] != 1:
        return None
    fields = ELF64_HEADER.unpack_from(image, 0)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phentsize < PHDR.size or phoff + phnum * phentsize > len(image):
        return None
    out = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = \
            PHDR.unpack_from(image, phoff + i * phentsize)
        if p_type != PT_LOAD or p_flags & (PF_W | PF_X) or not p_filesz:
            continue
        if p_offset + p_filesz > len(image):
            continue
        out.append((p_vaddr + bias, p_vaddr + bias + p_filesz, p_offset))
    return out
