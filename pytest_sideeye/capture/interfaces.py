"""Go interfaces: finding an interface value's dynamic type (through its itab or its type
word) and where its data lives. `InterfaceReader` is part of values.ValueDecoder, kept here
because it is its own concept; it relies on the decoder's read/at/value."""
from __future__ import annotations

from pytest_sideeye.binary import GoType
from pytest_sideeye.capture.memory import PENDING, Cut, u
from pytest_sideeye.capture.rtypes import Undecodable, raw_words, runtime_type


def is_direct_iface(t: GoType) -> bool:
    """Whether Go stores a value of t directly in an interface's data word (pointer-shaped
    types), rather than a pointer to it (cmd/compile's types.IsDirectIface)."""
    if t.kind in ("ptr", "chan", "map", "func", "unsafeptr"):
        return True
    if t.kind == "array":
        return t.count == 1 and t.elem is not None and is_direct_iface(t.elem)
    if t.kind == "struct" and t.name != "time.Time":
        return len(t.fields) == 1 and is_direct_iface(t.fields[0].type)
    return False


class InterfaceReader:
    """values.ValueDecoder's interface methods."""

    def dynamic_type(self, t: GoType, b: bytes, off: int):
        """(dynamic GoType | None | PENDING | Cut, data word) of an interface value."""
        word0, data = u(b, off, 8), u(b, off + 8, 8)
        if word0 == 0:
            return None, data
        rtype = word0
        if t.kind == "iface":
            raw = self.read(word0 + 8, 8)   # itab.Type / itab._type: second word
            if raw is PENDING or isinstance(raw, Cut):
                return raw, data
            rtype = u(raw, 0, 8)
        dyn = self.b.type_by_runtime_addr(rtype - self.bias)
        if dyn is None:
            return Cut(rtype, "unknown dynamic type"), data
        return dyn, data

    def interface(self, t: GoType, b: bytes, off: int, addr: int, depth: int):
        """(dynamic type name or None, value)."""
        dyn, data = self.dynamic_type(t, b, off)
        if dyn is None:
            return None, None
        if dyn is PENDING:
            return None, PENDING
        if isinstance(dyn, Cut) and dyn.why == "unknown dynamic type":
            # No DWARF type: the runtime's own descriptor of it (capture/rtypes.py).
            known = runtime_type(self, dyn.addr)
            if known is PENDING:
                return None, PENDING
            if isinstance(known, Undecodable):
                return known.name, raw_words(self, known, data)
            dyn = known or dyn
        if isinstance(dyn, Cut):
            self.errors.append(f"unknown dynamic type at {dyn.addr:#x}")
            self.truncated = True
            return None, {"$ptr": f"{data:#x}", "$cut": dyn.why}
        if is_direct_iface(dyn):
            return dyn.name, self.value(dyn, b, off + 8, addr + 8, depth)
        return dyn.name, self.at(dyn, data, depth)
