"""The Python view of the C structs in bpf/snapshot.bpf.c, read from the C itself, so each
layout is declared once: the collector packs `struct config` and reads `struct out_t` by
field name, and nothing in Python spells a byte offset.

Only what the programs share with Python is needed, and the C keeps those structs plain:
fields of u8/u16/u32/u64/s32/s64 (several per declaration, arrays sized by #defines and
products of them), naturally aligned as clang lays them out on x86-64. A union ends the
readable part of a struct (`out_t`'s per-mode results are addressed by the collector on
its own terms, from its start).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from pytest_sideeye.capture import C_FORMATS
from pytest_sideeye.engine.bpf import bpf_source, bpf_text, source_constants
from pytest_sideeye.errors import BpfUnavailable

_TYPES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "s32": "i", "s64": "q"}
_FIELD = re.compile(r"^\s*(u8|u16|u32|u64|s32|s64)\s+(.+)$", re.S)
_NAME = re.compile(r"^\s*(\w+)\s*(?:\[([^\]]+)\])?\s*$")


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    code: str       # struct module code of one element
    count: int      # 1, or the array length

    @property
    def size(self) -> int:
        return struct.calcsize(self.code) * self.count


class CStruct:
    """One C struct's fields by name; `union_offset` is where a trailing union starts."""

    def __init__(self, name: str, fields: list[Field], size: int, union_offset: int | None):
        self.name, self.size, self.union_offset = name, size, union_offset
        self.fields = {f.name: f for f in fields}
        self.format = "<" + "".join(f"{f.count}{f.code}" if f.count > 1 else f.code
                                    for f in fields)

    def offset(self, name: str) -> int:
        return self.fields[name].offset

    def get(self, buf, name: str) -> int:
        f = self.fields[name]
        return struct.unpack_from("<" + f.code, buf, f.offset)[0]

    def set(self, buf, **values: int) -> None:
        for name, value in values.items():
            f = self.fields[name]
            struct.pack_into("<" + f.code, buf, f.offset, value)

    def set_array(self, buf, name: str, values: list[int]) -> None:
        """An array field: `values` first, zeros after."""
        f = self.fields[name]
        if len(values) > f.count:
            raise ValueError(f"{self.name}.{name} holds {f.count} values, not {len(values)}")
        struct.pack_into(f"<{f.count}{f.code}", buf, f.offset,
                         *values, *[0] * (f.count - len(values)))

    def get_many(self, buf, *names: str) -> tuple[int, ...]:
        return tuple(self.get(buf, n) for n in names)


def _eval(expr: str, consts: dict[str, int]) -> int:
    total = 1
    for factor in expr.split("*"):
        factor = factor.strip()
        total *= int(factor) if factor.isdigit() else consts[factor]
    return total


def parse_struct(source: str, name: str, consts: dict[str, int]) -> CStruct:
    m = re.search(r"struct\s+" + re.escape(name) + r"\s*\{(.*?)\};", source, re.S)
    if m is None:
        raise KeyError(f"struct {name} is not in the BPF source")
    fields: list[Field] = []
    offset, align, union_at = 0, 1, None
    body = re.sub(r"//[^\n]*", "", m.group(1))
    for line in body.split(";"):
        if re.match(r"^\s*union\b", line):
            union_at = (offset + 7) & ~7
            break
        fm = _FIELD.match(line)
        if fm is None:
            continue
        code = _TYPES[fm.group(1)]
        size = struct.calcsize(code)
        for decl in fm.group(2).split(","):
            nm = _NAME.match(decl)
            if nm is None:
                raise ValueError(f"struct {name}: cannot read the field {decl.strip()!r}")
            count = _eval(nm.group(2), consts) if nm.group(2) else 1
            offset = (offset + size - 1) & ~(size - 1)
            fields.append(Field(nm.group(1), offset, code, count))
            offset += size * count
            align = max(align, size)
    total = (offset + align - 1) & ~(align - 1)
    return CStruct(name, fields, total, union_at)


@lru_cache(maxsize=None)
def c_struct(name: str) -> CStruct:
    """The layout of `struct name` in bpf/snapshot.bpf.c."""
    return parse_struct(bpf_text().decode(), name, source_constants())


@lru_cache(maxsize=None)
def check_capture_formats() -> None:
    """The capture stage packs struct capop and caprange and reads capent itself (it comes
    before the engine, so it spells their formats): hold those formats to the C."""
    for name, fmt in C_FORMATS.items():
        if struct.calcsize(fmt) != c_struct(name).size or \
                fmt.lstrip("<") != c_struct(name).format.lstrip("<"):
            raise BpfUnavailable(f"capture's {name} format {fmt!r} does not match struct "
                                 f"{name} in {bpf_source().name} ({c_struct(name).format!r})")
