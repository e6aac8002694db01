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

- `sched` (runtime.schedt, whose first field is goidgen, an atomic.Uint64; its lock comes
  after goidgen, lastpoll, pollUntil and, since Go 1.25, one more word: offset 24 or 32):

      runtime.schedEnableUser: lock(&sched.lock) ...     (its first LEA into the data)
      runtime.newproc1:        pp.goidcache = sched.goidgen.Add(_GoidCacheBatch)
                               (LEA of &sched.goidgen, then LOCK XADD of a qword there)

  sched is the one qword newproc1 adds to atomically (its other LOCK XADDs: a dword,
  sched.ngsys, and globals elsewhere) that lies at most 32 bytes below sched.lock.

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


# runtime.schedt: the most bytes goidgen (offset 0) may lie below lock (24 in Go 1.21-1.24,
# 32 in 1.27).
SCHED_LOCK_MAX_OFFSET = 32


def sched_from_code(elf, read, symtab) -> int:
    """Link-time address of runtime.sched (the pre-read reads sched.timeToRun), from
    runtime.newproc1's atomic add to sched.goidgen, checked by runtime.schedEnableUser's
    lock(&sched.lock); NotFound when the code does not show it so."""
    data = _data_ranges(elf)
    lock = next((a for m, a in _refs(read, symtab, "runtime.schedEnableUser", data)
                 if m == "lea"), None)
    if lock is None:
        raise NotFound("runtime.schedEnableUser takes no lock in the data (runtime.sched)")
    found = {a for a in _qword_xadds(read, symtab, "runtime.newproc1", data)
             if lock - SCHED_LOCK_MAX_OFFSET <= a < lock}
    if len(found) != 1:
        raise NotFound(f"runtime.newproc1 adds atomically to {len(found)} words just below "
                       "sched.lock, not one (runtime.sched.goidgen)")
    return found.pop()


def _qword_xadds(read, symtab, function: str, data: list[tuple[int, int]]) -> list[int]:
    """The data addresses the function LEAs into a register and then LOCK XADDs a qword
    at (through that register, the next time it is used as the address)."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_OP_MEM, X86_OP_REG, X86_REG_RIP
    f = symtab.func_by_name(function)
    if f is None:
        raise NotFound(f"no {function} in the function table")
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    held: dict[int, int] = {}      # register -> data address it was LEAd from
    out = []
    for ins in md.disasm(read(f.entry, f.end - f.entry), f.entry):
        ops = ins.operands
        if ins.mnemonic == "lea" and len(ops) == 2 and ops[0].type == X86_OP_REG \
                and ops[1].mem.base == X86_REG_RIP:
            target = ins.address + ins.size + ops[1].mem.disp
            if any(lo <= target < hi for lo, hi in data):
                held[ops[0].reg] = target
                continue
        if ins.mnemonic.split()[-1] == "xadd" and ops and ops[0].type == X86_OP_MEM \
                and ops[0].size == 8 and ops[0].mem.disp == 0 \
                and ops[0].mem.index == 0 and ops[0].mem.base in held:
            out.append(held.pop(ops[0].mem.base))
        elif ops and ops[0].type == X86_OP_REG and ins.mnemonic not in ("cmp", "test"):
            held.pop(ops[0].reg, None)       # written over
    return out


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
