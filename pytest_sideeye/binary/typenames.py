"""The names of a Go binary's runtime type descriptors, read from its file.

A type used only in a conversion to an interface (a context key such as
`ctx.Value(traceKey("t"))`) has a runtime type descriptor but, often, no DWARF type entry:
the compiler emits DWARF for the types of variables, not of every converted value. Its
name is still in the binary, as an abi.Name (a flags byte, a varint length, the bytes)
among the type data: `.rodata` up to Go 1.26, `.go.type` from Go 1.27. A named type's
name is stored with a leading "*" (abi.TFlagExtraStar: its pointer type shares it), as
context.valueCtx's key is matched at run time (capture/contexts.py _rtype_name)."""
from __future__ import annotations

import os
import re
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

TYPE_SECTIONS = (".go.type", ".rodata")
# abi.Name's first byte: exported (1), has a tag (2), has a package path (4), embedded (8).
_FLAGS = rb"[\x00-\x0f]"


def has_runtime_type(path: str, name: str) -> bool:
    """Whether the binary at path has a runtime type descriptor named `name` (as Go
    prints it: main.traceKey, *main.T, pkg.Box[int])."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return name in _names_asked(path, st.st_dev, st.st_ino, st.st_mtime_ns, (name,))


@lru_cache(maxsize=64)
def _names_asked(path: str, _dev: int, _ino: int, _mtime: int,
                 names: tuple[str, ...]) -> frozenset[str]:
    data = _type_data(path)
    found = set()
    for name in names:
        raw = (name if name.startswith("*") else "*" + name).encode()
        if re.search(_FLAGS + re.escape(_varint(len(raw)) + raw), data):
            found.add(name)
    return frozenset(found)


def _type_data(path: str) -> bytes:
    """The bytes of the sections the type descriptors and their names live in."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            return b"".join(s.data() for s in map(elf.get_section_by_name, TYPE_SECTIONS)
                            if s is not None)
    except (OSError, ELFError):
        return b""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
