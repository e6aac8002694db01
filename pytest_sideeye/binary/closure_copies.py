"""Where a function's parameters live on after their last use: in its deferred closures.

A parameter passed in a register is dead to DWARF once the function's last call that uses
it is made (net/http's `(*http2serverConn).runHandler(rw, req, handler)` on Go 1.24: `rw`
and `req` have no location while `handler(rw, req)` runs), yet a closure the function
defers (`defer func() { rw.rws.stream.cancelCtx() ... }()`) holds a copy of each parameter
it captures by value for the function's whole life: the runtime calls it on return or
panic. Go allocates such a closure in the function's own frame (an open-coded defer: its
address is kept in a frame slot the runtime reads), at a fixed offset, and since Go 1.23
the closure function's DWARF gives each captured variable's offset in it
(DW_AT_go_closure_offset). A variable captured by value is never assigned after the
capture (else Go captures it by reference), so the copy equals the parameter.

Found from the code, amd64 (Go's own instruction selection, checked on 1.24.11):

    LEAQ F.func1(SB), SI ; MOVQ SI, off(SP)      the closure's code pointer: its base
    ...                                           (captured values at off+8, off+16, ...)
    LEAQ off(SP), SI     ; MOVQ SI, slot(SP)      its address stored in a defer slot

and F calls runtime.deferreturn (it has open-coded defers), and no jump before the second
store lands past it (a defer in an `if`: not built on every path). From the second store
to the end of the function, where the frame size is the one at that store, each parameter
of F that the closure captures by value (same name, same type) is given an extra
location: the copy, at CFA + off + its offset - frame size - 8, listed before DWARF's own (which says
"in a register" up to and including the call that passes it: nothing a parked frame has).
Anything else (another architecture, a heap closure, other instructions) finds nothing:
the parameter stays as DWARF says."""
from __future__ import annotations

import re

from pytest_sideeye.binary.pclntab import Symtab

AT_GO_CLOSURE_OFFSET = 0x2907   # Go 1.23 on: a captured variable's offset in its closure
_DW_OP_FBREG = 0x91


def is_closure_of(function: str, name: str) -> bool:
    """`name` is a closure the function defines (F.func1, F.deferwrap1; not nested ones)."""
    return name.startswith(function + ".") and \
        re.fullmatch(r"(func|deferwrap)\d+", name[len(function) + 1:]) is not None


def captured(closure_die) -> list[tuple[str, int, int]]:
    """(name, type DIE offset, offset in the closure) of the variables a closure's DWARF
    says it captured by value (by reference ones are named `&x`: not copies)."""
    out = []
    for c in closure_die.iter_children():
        a = c.attributes
        if c.tag != "DW_TAG_variable" or AT_GO_CLOSURE_OFFSET not in a \
                or "DW_AT_name" not in a or "DW_AT_type" not in a:
            continue
        name = a["DW_AT_name"].value.decode(errors="replace")
        if name.startswith("&"):
            continue
        t = a["DW_AT_type"]
        type_off = t.value + (0 if t.form == "DW_FORM_ref_addr" else c.cu.cu_offset)   # dwarf._ref
        out.append((name, type_off, a[AT_GO_CLOSURE_OFFSET].value))
    return out


def copies(symtab: Symtab, read_code, function: str, params: list, closures: dict[str, list]
           ) -> dict[int, list[tuple[int, int, list[int]]]]:
    """Parameter DIE offset -> extra (lo, hi, location expression) ranges: its copies in
    the frame's deferred closures. params: the function's VarDIEs; closures: closure name
    -> captured(); read_code(addr, n) -> the binary's bytes at a link-time address."""
    f = symtab.func_by_name(function)
    deferreturn = symtab.func_by_name("runtime.deferreturn")
    if f is None or deferreturn is None or not closures:
        return {}
    entries = {}
    for name in closures:
        c = symtab.func_by_name(name)
        if c is not None:
            entries[c.entry] = name
    try:
        code = read_code(f.entry, f.end - f.entry)
    except (KeyError, OSError, ValueError):
        return {}
    found, jumps = _deferred_closures(code, f.entry, entries, deferreturn.entry)
    out: dict[int, list[tuple[int, int, list[int]]]] = {}
    by_name = {p.name: p for p in params if p.is_param}
    for name, (base, registered) in found.items():
        ranges = _same_frame_ranges(symtab, registered, f.end)
        if not ranges or _skippable(jumps, registered, ranges):
            continue
        delta = symtab.sp_delta(registered)
        for var, type_off, offset in closures[name]:
            p = by_name.get(var)
            if p is None or p.type_offset != type_off:
                continue
            expr = [_DW_OP_FBREG, *_sleb128(base + offset - delta - 8)]
            out.setdefault(p.die_offset, []).extend((lo, hi, expr) for lo, hi in ranges)
    return out


def _deferred_closures(code: bytes, entry: int, closures: dict[int, str], deferreturn: int
                       ) -> tuple[dict[str, tuple[int, int]], list[tuple[int, int | None]]]:
    """Closure name -> (its base's offset from SP, the pc after its address is stored in
    a frame slot), for the closures built in the frame and registered as defers; and
    every jump of the function as (its pc, its target; None: indirect)."""
    try:
        from capstone import CS_ARCH_X86, CS_MODE_64, Cs
        from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG, X86_REG_RIP, X86_REG_RSP
    except ImportError:
        return {}, []
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    insns = list(md.disasm(code, entry))
    if not any(i.mnemonic == "call" and i.operands and i.operands[0].type == X86_OP_IMM
               and i.operands[0].imm == deferreturn for i in insns):
        return {}, []
    jumps = [(i.address, i.operands[0].imm if i.operands and i.operands[0].type == X86_OP_IMM
              else None) for i in insns if i.mnemonic.startswith("j")]
    bases: dict[str, list[int]] = {}
    at_base: dict[int, str] = {}
    registered: dict[str, list[int]] = {}
    for lea, mov in zip(insns, insns[1:]):
        if lea.mnemonic != "lea" or mov.mnemonic != "mov" or len(lea.operands) != 2 \
                or len(mov.operands) != 2:
            continue
        src, dst = lea.operands[1], mov.operands[0]
        reg_ok = lea.operands[0].type == X86_OP_REG and mov.operands[1].type == X86_OP_REG \
            and mov.operands[1].reg == lea.operands[0].reg
        if not reg_ok or dst.type != X86_OP_MEM or dst.mem.base != X86_REG_RSP \
                or dst.mem.index != 0 or src.type != X86_OP_MEM or src.mem.index != 0:
            continue
        if src.mem.base == X86_REG_RIP:        # LEAQ closure(SB), R; MOVQ R, off(SP)
            name = closures.get(lea.address + lea.size + src.mem.disp)
            if name is not None:
                bases.setdefault(name, []).append(dst.mem.disp)
                at_base[dst.mem.disp] = name
        elif src.mem.base == X86_REG_RSP:      # LEAQ off(SP), R; MOVQ R, slot(SP)
            name = at_base.get(src.mem.disp)
            if name is not None:
                registered.setdefault(name, []).append(mov.address + mov.size)
    # One build and one registration each: anything else is not the pattern above.
    return {name: (offs[0], registered[name][0]) for name, offs in bases.items()
            if len(offs) == 1 and len(registered.get(name, ())) == 1}, jumps


def _skippable(jumps: list[tuple[int, int | None]], registered: int,
               ranges: list[tuple[int, int]]) -> bool:
    """Whether a pc of the ranges can be reached without building the closure: a jump
    before its registration lands past it (`if flag { defer func() {...}() }`, the flag
    false: the closure's slot holds what the stack had), or goes who knows where."""
    for at, target in jumps:
        if at >= registered:
            continue
        if target is None or (target >= registered and
                              any(lo <= target < hi for lo, hi in ranges)):
            return True
    return False


def _same_frame_ranges(symtab: Symtab, start: int, end: int) -> list[tuple[int, int]]:
    """The pcs from start to end whose frame size is the one at start (not the epilogue
    after RET, nor the stack-growth call, where SP differs), as ranges."""
    delta = symtab.sp_delta(start)
    ranges: list[tuple[int, int]] = []
    pc = start
    while pc < end:
        same = symtab.sp_delta(pc) == delta
        nxt = pc + 1
        while nxt < end and (symtab.sp_delta(nxt) == delta) == same:
            nxt += 1
        if same:
            ranges.append((pc, nxt))
        pc = nxt
    return ranges


def _sleb128(v: int) -> list[int]:
    out = []
    while True:
        b = v & 0x7F
        v >>= 7
        if (v == 0 and not b & 0x40) or (v == -1 and b & 0x40):
            return out + [b]
        out.append(b | 0x80)
