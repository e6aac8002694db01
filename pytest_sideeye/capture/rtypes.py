"""Go types known only by their runtime type descriptor (abi.Type), for interface values
whose dynamic type has no DWARF entry.

The compiler emits DWARF for the types of variables, not for every type converted to an
interface: `ctx.Value(traceKey("t"))` boxes a main.traceKey that DWARF may not know
(before Go 1.27). The runtime's descriptor of it is always there, in the read-only type
data (read from the executable's file when the decoder has it: nothing of the target's
memory budget, nothing in the pause). From it comes a GoType the decoder reads values
with, for the simple kinds: bool, numbers, strings, unsafe pointers, and pointers,
arrays, slices and structs of those. Other kinds (maps, channels, functions, interfaces)
get only the descriptor's name and kind: the value is shown as its raw words.

abi.Type, Go 1.21-1.27: Size_ at 0, PtrBytes at 8, TFlag at 20, Kind_ at 23 (the low 5
bits; Go <= 1.25 kept KindDirectIface in bit 5), Str (a nameOff from the module's types)
at 40; 48 bytes. After it: PtrType.Elem, SliceType.Elem, ArrayType.Elem then .Slice and
.Len at 64, StructType.PkgPath then .Fields (a slice of {Name, Typ, Offset}) at 56.
"""
from __future__ import annotations

from pytest_sideeye.binary import Field, GoType
from pytest_sideeye.capture.memory import PENDING, Cut, u

RTYPE_SIZE, RTYPE_PTRBYTES, RTYPE_TFLAG, RTYPE_KIND, RTYPE_STR = 0, 8, 20, 23, 40
RTYPE_HEADER = 48
KIND_MASK = 0x1F
TFLAG_EXTRA_STAR = 2          # the name's leading "*" belongs to the pointer type
NAME_EMBEDDED = 8             # abi.Name's flags byte: an embedded struct field
STRUCT_FIELD_SIZE = 24        # abi.StructField: Name, Typ, Offset

# abi.Kind -> GoType.kind, for the kinds decoded from the descriptor alone.
KINDS = {1: "bool", 2: "int", 3: "int", 4: "int", 5: "int", 6: "int", 7: "uint", 8: "uint",
         9: "uint", 10: "uint", 11: "uint", 12: "uintptr", 13: "float", 14: "float",
         15: "complex", 16: "complex", 17: "array", 22: "ptr", 23: "slice", 24: "string",
         25: "struct", 26: "unsafeptr"}
KIND_NAMES = {18: "chan", 19: "func", 20: "interface", 21: "map"}
# How far one descriptor leads to others (a pointer's element, a struct's field types),
# and how many fields one struct may have: what a key type or a small value needs.
MAX_NESTING = 4
MAX_FIELDS = 64
MAX_RAW_WORDS = 8


class Undecodable:
    """A runtime type this module does not build a GoType for: its name and kind."""

    def __init__(self, name: str, kind: str, size: int, direct: bool):
        self.name, self.kind, self.size, self.direct = name, kind, size, direct


def runtime_type(dec, rtype: int):
    """The GoType of the runtime type descriptor at `rtype` (a runtime address), from
    DWARF where it knows a type, else from the descriptor; an Undecodable when its kind
    (or a part's) is not a simple one; None when the descriptor cannot be read; or
    PENDING while its bytes are not read yet."""
    return _Builder(dec).build(rtype, 0)


def raw_words(dec, dyn: Undecodable, data: int):
    """The value of a type only named: its words as hex strings (the interface's data word
    itself when the value is stored in it, else the first words it points at)."""
    out = {"$type": dyn.name, "$kind": dyn.kind}
    if dyn.direct or dyn.size <= 0:
        return dict(out, **{"$words": [f"{data:#x}"]})
    raw = dec.read(data, min(dyn.size, 8 * MAX_RAW_WORDS) // 8 * 8 or 8)
    if raw is PENDING:
        return PENDING
    if isinstance(raw, Cut):
        return dict(out, **{"$ptr": f"{data:#x}", "$cut": raw.why})
    return dict(out, **{"$words": [f"{u(raw, i, 8):#x}" for i in range(0, len(raw), 8)]})


class _Builder:
    def __init__(self, dec):
        self.dec = dec
        self.made: dict[int, GoType] = {}      # by descriptor: a type that refers to itself

    def read(self, addr: int, size: int):
        return self.dec.read(addr, size)

    def build(self, rtype: int, depth: int):
        if rtype in self.made:
            return self.made[rtype]
        known = self.dec.b.type_by_runtime_addr(rtype - self.dec.bias)
        if known is not None:
            return known
        head = self.read(rtype, RTYPE_HEADER)
        if head is PENDING:
            return PENDING
        if isinstance(head, Cut):
            return None
        name = self.name(head)
        if name is PENDING:
            return PENDING
        size, code = u(head, RTYPE_SIZE, 8), head[RTYPE_KIND] & KIND_MASK
        direct = size == 8 and u(head, RTYPE_PTRBYTES, 8) == 8
        kind = KINDS.get(code)
        if kind is None or depth > MAX_NESTING:
            return Undecodable(name or "?", KIND_NAMES.get(code, kind or f"kind {code}"),
                               size, direct)
        t = GoType(-rtype, name or "?", kind, size)
        self.made[rtype] = t
        parts = self.parts(t, rtype, depth)
        if parts is PENDING or isinstance(parts, Undecodable) or parts is None:
            del self.made[rtype]
            if isinstance(parts, Undecodable) or parts is None:
                return Undecodable(t.name, kind, size, direct)
            return parts
        return t

    def parts(self, t: GoType, rtype: int, depth: int):
        """Fill in t's element type, count or fields; PENDING, an Undecodable part, None
        (unreadable), or True."""
        if t.kind in ("ptr", "slice", "array"):
            raw = self.read(rtype + RTYPE_HEADER, 24)
            if raw is PENDING or isinstance(raw, Cut):
                return raw if raw is PENDING else None
            elem = self.build(u(raw, 0, 8), depth + 1)
            if elem is PENDING or elem is None or isinstance(elem, Undecodable):
                return elem
            t.elem = elem
            if t.kind == "array":
                t.count = u(raw, 16, 8)
            return True
        if t.kind == "struct":
            return self.fields(t, rtype, depth)
        return True

    def fields(self, t: GoType, rtype: int, depth: int):
        raw = self.read(rtype + RTYPE_HEADER + 8, 16)
        if raw is PENDING or isinstance(raw, Cut):
            return raw if raw is PENDING else None
        ptr, n = u(raw, 0, 8), u(raw, 8, 8)
        if n > MAX_FIELDS:
            return None
        table = self.read(ptr, n * STRUCT_FIELD_SIZE) if n else b""
        if table is PENDING or isinstance(table, Cut):
            return table if table is PENDING else None
        out, waiting = [], False
        for i in range(0, len(table), STRUCT_FIELD_SIZE):
            name = self.name_at(u(table, i, 8))
            ftype = self.build(u(table, i + 8, 8), depth + 1)
            if name is None or ftype is None or isinstance(ftype, Undecodable):
                return None if name is None else ftype
            if name is PENDING or ftype is PENDING:
                waiting = True     # keep asking for every field's bytes in this pass
                continue
            embedded = bool(name[1])
            out.append(Field(name[0], u(table, i + 16, 8), ftype, embedded))
        if waiting:
            return PENDING
        t.fields = out
        return True

    def name(self, head: bytes):
        """The descriptor's name (its Str, a nameOff from the module's types)."""
        off = int.from_bytes(head[RTYPE_STR:RTYPE_STR + 4], "little", signed=True)
        got = self.name_at(self.dec.b.types_base + self.dec.bias + off)
        if got is PENDING or got is None:
            return got
        text = got[0]
        if head[RTYPE_TFLAG] & TFLAG_EXTRA_STAR and text.startswith("*"):
            text = text[1:]
        return text

    def name_at(self, at: int):
        return abi_name(self.read, at)


def abi_name(read, at: int):
    """(text, embedded) of the runtime's abi.Name at `at` (flags byte, varint length,
    bytes), read through `read(addr, size)`; None when unreadable, or PENDING."""
    head = read(at, 4)
    if head is PENDING or isinstance(head, Cut):
        return head if head is PENDING else None
    n, shift, i = 0, 0, 1
    while i < 4:
        n |= (head[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not head[i - 1] & 0x80:
            break
    text = read(at + i, n) if n else b""
    if text is PENDING or isinstance(text, Cut):
        return text if text is PENDING else None
    return text.decode("utf-8", "replace"), head[0] & NAME_EMBEDDED
