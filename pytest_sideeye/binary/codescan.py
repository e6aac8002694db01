"""The runtime's globals in a binary without a symbol table (-ldflags='-s -w'), found from
the code that uses them: the functions are still in the pclntab (the runtime needs it), so
their machine code is found by name and its RIP-relative operands name the globals.

    runtime.allgadd:     lock(&allglock); allgs = append(allgs, gp); ...
                         atomic.Storeuintptr(&allglen, uintptr(len(allgs)))
    runtime.mcommoninit: mp.alllink = allm; atomicstorep(unsafe.Pointer(&allm), mp)

- `allgs` (a slice): the one address whose words +0 and +8 (pointer, length) allgadd both
  reads;
- `allglen`: the data address allgadd only takes the address of (LEA, for the atomic
  store), other than the lock it takes first;
- `allm`: the data address mcommoninit both reads (MOV) and takes the address of (LEA).

- `waitReasonStrings` (an array of Go strings) and its length: runtime.waitReason.String
  compares the reason with the length (CMP imm) and indexes the array (LEA):

      if w < 0 || w >= waitReason(len(waitReasonStrings)) { return "unknown wait reason" }
      return waitReasonStrings[w]

Checked on Go 1.21, 1.24 and 1.27 against the symbol table of the same build. What is
found here is a guess until the engine checks it against the live process
(engine/process.py: allglen equals len(allgs), the gs have sane ids, allm's threads are the
process's) before anything is paused.
"""
from __future__ import annotations

from collections import defaultdict

from pytest_sideeye.binary.layout import read_go_strings
from pytest_sideeye.errors import SideeyeError

# Sections where the runtime's globals live (with -s the section headers stay).
DATA_SECTIONS = (".data", ".bss", ".noptrdata", ".noptrbss")


class NotFound(SideeyeError):
    """The code did not name a runtime global the way this module expects."""


def runtime_globals_from_code(elf, read, symtab) -> dict[str, int]:
    """Link-time addresses of runtime.allgs, runtime.allglen and runtime.allm; NotFound
    (one line) when the code does not show them."""
    data = _data_ranges(elf)
    gadd = _refs(read, symtab, "runtime.allgadd", data)
    mcommon = _refs(read, symtab, "runtime.mcommoninit", data)
    return {"runtime.allgs": _allgs(gadd), "runtime.allglen": _allglen(gadd),
            "runtime.allm": _allm(mcommon)}


WAIT_REASON_1 = "GC assist marking"    # waitReasonGCAssistMarking, 1 since Go 1.11


def wait_reasons_from_code(elf, read, symtab) -> list[str]:
    """The binary's own wait reason strings (index = g.waitreason), read from the array
    runtime.waitReason.String indexes: patch releases add reasons, so a table made from
    another release of the same minor version may not have them right. NotFound when the
    code does not show the array as expected."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_REG_RIP
    f = symtab.func_by_name("runtime.waitReason.String")
    if f is None:
        raise NotFound("no runtime.waitReason.String in the function table")
    data = _data_ranges(elf)
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    count = array = None
    for ins in md.disasm(read(f.entry, f.end - f.entry), f.entry):
        ops = ins.operands
        if ins.mnemonic == "cmp" and count is None and len(ops) == 2 \
                and ops[1].type == X86_OP_IMM:
            count = ops[1].imm
        elif ins.mnemonic == "lea" and ops[1].type == X86_OP_MEM \
                and ops[1].mem.base == X86_REG_RIP:
            target = ins.address + ins.size + ops[1].mem.disp
            if any(lo <= target < hi for lo, hi in data):
                array = target
    if not count or array is None or not 1 < count < 256:
        raise NotFound("runtime.waitReason.String does not index an array of wait reasons")
    reasons = read_go_strings(read, array, count)
    if reasons[:2] != ["", WAIT_REASON_1]:
        raise NotFound(f"the array runtime.waitReason.String indexes does not start with "
                       f"the wait reasons ({reasons[:2]})")
    return reasons


def _data_ranges(elf) -> list[tuple[int, int]]:
    out = []
    for name in DATA_SECTIONS:
        s = elf.get_section_by_name(name)
        if s is not None and s["sh_size"]:
            out.append((s["sh_addr"], s["sh_addr"] + s["sh_size"]))
    if not out:
        raise NotFound("no data sections in the binary's section headers")
    return out


def _refs(read, symtab, function: str, data: list[tuple[int, int]]
          ) -> list[tuple[str, int]]:
    """(mnemonic, address) of every RIP-relative operand in the function that points into
    the data sections, in code order."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_OP_MEM, X86_REG_RIP
    f = symtab.func_by_name(function)
    if f is None:
        raise NotFound(f"no {function} in the function table")
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    out = []
    for ins in md.disasm(read(f.entry, f.end - f.entry), f.entry):
        for op in ins.operands:
            if op.type == X86_OP_MEM and op.mem.base == X86_REG_RIP:
                target = ins.address + ins.size + op.mem.disp
                if any(lo <= target < hi for lo, hi in data):
                    out.append((ins.mnemonic, target))
    return out


def _allgs(refs: list[tuple[str, int]]) -> int:
    read = {a for m, a in refs if m != "lea"}
    found = sorted(a for a in read if a + 8 in read)
    if not found:
        raise NotFound("runtime.allgadd reads no slice (runtime.allgs)")
    return found[0]


def _allglen(refs: list[tuple[str, int]]) -> int:
    kinds: dict[int, set[str]] = defaultdict(set)
    for m, a in refs:
        kinds[a].add(m)
    lock = next((a for m, a in refs if m == "lea"), None)
    found = [a for a, ms in kinds.items() if ms == {"lea"} and a != lock]
    if len(found) != 1:
        raise NotFound(f"runtime.allgadd takes the address of {len(found)} globals besides "
                       "its lock, not one (runtime.allglen)")
    return found[0]


def _allm(refs: list[tuple[str, int]]) -> int:
    kinds: dict[int, set[str]] = defaultdict(set)
    for m, a in refs:
        kinds[a].add(m)
    found = [a for a, ms in kinds.items() if "lea" in ms and "mov" in ms]
    if len(found) != 1:
        raise NotFound(f"runtime.mcommoninit reads and stores {len(found)} globals, not one "
                       "(runtime.allm)")
    return found[0]
