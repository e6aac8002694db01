"""Go's own function table (`.gopclntab`): function names, file:line and inline trees for
any PC of a Go executable, with or without DWARF and `.symtab`.

The format follows the Go runtime
(runtime/symtab.go, runtime/symtabinl.go, runtime/traceback.go) for the pcHeader layout
shared by Go 1.18+ (magic 0xfffffff0 for 1.18/1.19, 0xfffffff1 for 1.20 and newer).

Everything per function is decoded lazily and cached: building a Symtab only slices the
header and the function index, so it costs milliseconds even for large binaries.
"""
from __future__ import annotations

import bisect
import functools
import struct
from array import array
from dataclasses import dataclass
from typing import Callable, Iterator

from pytest_sideeye.errors import NotGoBinary, SideeyeError

MAGIC_GO118 = 0xFFFFFFF0
MAGIC_GO120 = 0xFFFFFFF1
OLDER_MAGICS = {0xFFFFFFFB: "1.2-1.15", 0xFFFFFFFA: "1.16-1.17"}

PCDATA_INL_TREE_INDEX = 2
FUNCDATA_INL_TREE = 3
_FUNC_HEADER = struct.Struct("<IiiIIIIIIiBBxB")   # runtime._func up to nfuncdata
_FUNC_HEADER_118 = struct.Struct("<IiiIIIIIIBBxB")  # Go 1.18/1.19: no startLine
_INLINED_CALL = struct.Struct("<B3xiii")          # runtime.inlinedCall, Go 1.21+
_NO_FUNCDATA = 0xFFFFFFFF
_FRAMES_CACHE_SIZE = 1 << 16
_MAX_INLINE_DEPTH = 256

# Functions that the runtime treats as injected calls: the frame below them was
# interrupted by a signal, so its PC is the trapping instruction, not a return address.
INJECTED_CALLS = frozenset({"runtime.sigpanic", "runtime.asyncPreempt", "runtime.debugCallV2"})
# A wrapper frame is elided from tracebacks unless it called one of these.
_KEEP_WRAPPER_BELOW = frozenset({"runtime.gopanic", "runtime.sigpanic", "runtime.panicwrap"})

ReadMem = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Func:
    """One physical function from the table (as the runtime's funcInfo)."""
    name: str        # raw table name, e.g. "main.Map[go.shape.int,go.shape.string]"
    entry: int
    end: int
    start_line: int
    func_id: int
    index: int       # position in the function table

    @property
    def print_name(self) -> str:
        """The name as a Go traceback prints it (`main.Map[...]`)."""
        return func_name_for_print(self.name)


@dataclass(frozen=True)
class SymFrame:
    """One logical frame: the physical function or one expanded from its inline tree."""
    function: str    # as printed by the runtime
    file: str
    line: int
    inlined: bool
    pc: int          # the PC this frame was resolved at (what the runtime calls uf.pc)
    entry: int       # entry of the physical function holding the code
    func_id: int = 0
    wrapper: bool = False   # a compiler-generated wrapper the runtime hides at level 1


def func_name_for_print(name: str) -> str:
    """Replace generic shape arguments with "[...]" as runtime.funcNameForPrint does
    (Go 1.24+ rules; they give the same result as 1.21's for everything but generic
    methods of generic types, where 1.24+ prints `pkg.T[...].M[...]`)."""
    i = name.find("[")
    if i < 0:
        return name
    j = name.rfind("]")
    if j <= i:
        return name
    interior = name[i + 1:j]
    if "[" not in interior:
        return name[:i] + "[...]" + name[j + 1:]
    depth, rbr, lbr = 1, -1, -1
    for k, c in enumerate(interior):
        if c == "[":
            depth += 1
            if depth != 1:
                continue
            lbr = k
            break
        if c == "]":
            depth -= 1
            if depth < 0:
                break
            if depth == 0:
                rbr = k
    if depth == 1:
        if rbr >= 0 and lbr > rbr:
            return name[:i] + "[...]" + interior[rbr + 1:lbr] + "[...]" + name[j + 1:]
        if rbr == -1 and lbr == -1:
            return name[:i] + "[...]" + name[j + 1:]
    return name


def _u32_array(raw) -> array:
    # array("I", memoryview) would copy byte by byte: load the raw little-endian words.
    out = array("I")
    out.frombytes(bytes(raw))
    return out


def _cstring(buf: bytes, off: int) -> str:
    end = buf.index(b"\0", off)
    return buf[off:end].decode("utf-8", "replace")


def uvarint(buf: bytes, off: int) -> tuple[int, int]:
    """Go's unsigned varint at buf[off]: (value, offset after it)."""
    v, shift = 0, 0
    while True:
        b = buf[off]
        off += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, off


def decode_pcvalue(pctab: bytes, off: int, entry: int, quantum: int) -> tuple[list[int], list[int]]:
    """Decode one pc-value table into (ends, values): values[i] holds for pc < ends[i].

    Each step is a zig-zag varint value delta then a varint pc delta (times the
    instruction quantum); a zero value delta after the first step ends the table."""
    ends: list[int] = []
    values: list[int] = []
    val, pc, first, n = -1, entry, True, len(pctab)
    while off < n:
        uv, off = uvarint(pctab, off)
        if uv == 0 and not first:
            break
        first = False
        val += -(uv >> 1) - 1 if uv & 1 else uv >> 1
        upc, off = uvarint(pctab, off)
        pc += upc * quantum
        ends.append(pc)
        values.append(val)
    return ends, values


class Symtab:
    """The function table of one Go module (one executable)."""

    def __init__(self, pclntab: bytes, text_start: int = 0, *, gofunc: int | None = None,
                 read_mem: ReadMem | None = None, pclntab_addr: int | None = None):
        """`pclntab`: the bytes of `.gopclntab` (starting at the pcHeader).
        `text_start`: runtime.text, the base of entry offsets; 0 means "take it from the
        header" (stored there by Go 1.18 to 1.26).
        `gofunc` + `read_mem`: address of `go:func.*` and a reader of the executable's
        static memory (link-time addresses); needed for inline trees only."""
        hdr = pclntab[:8 + 8 * 8]
        if len(hdr) < 72:
            raise NotGoBinary("the .gopclntab section is truncated")
        magic, _p1, _p2, self.quantum, self.ptr_size = struct.unpack_from("<IBBBB", hdr)
        if magic in OLDER_MAGICS:
            raise SideeyeError(f"Go {OLDER_MAGICS[magic]} is not supported; "
                               "supported: 1.21 and newer")
        if magic not in (MAGIC_GO118, MAGIC_GO120) or self.ptr_size != 8:
            raise SideeyeError(f"unknown Go function table (magic {magic:#x}, pointer size "
                               f"{self.ptr_size}); supported: Go 1.21 and newer on amd64")
        self.magic = magic
        self._fstruct = _FUNC_HEADER if magic == MAGIC_GO120 else _FUNC_HEADER_118
        (self.nfunc, self.nfiles, hdr_text, funcname_off, cu_off, filetab_off, pctab_off,
         pcln_off) = struct.unpack_from("<QQQQQQQQ", hdr, 8)
        self.text_start = text_start or hdr_text
        if not self.text_start:
            raise SideeyeError("the start of the text segment is unknown "
                               "(neither the symbol runtime.text nor a .text section)")
        mv = memoryview(pclntab)
        self._funcnametab = pclntab[funcname_off:cu_off]
        self._cutab = _u32_array(pclntab[cu_off:filetab_off])
        self._filetab = pclntab[filetab_off:pctab_off]
        self._pctab = pclntab[pctab_off:pcln_off]
        self._pcln = mv[pcln_off:]
        # ftab: nfunc+1 pairs (entryoff, funcoff); the last entry marks the end of text.
        ftab = _u32_array(self._pcln[:(self.nfunc + 1) * 8])
        self._entry_offs = ftab[0::2]
        self._func_offs = ftab[1::2]
        self.gofunc = gofunc
        self._read_mem = read_mem
        self.pclntab_addr = pclntab_addr
        self._by_name: dict[str, int] | None = None
        self._funcs: dict[int, Func] = {}
        self._tables: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._file_cache: dict[int, str] = {}
        self._inl_cache: dict[int, bytes | None] = {}
        self._frames_cache: dict[tuple[int, bool], list[SymFrame]] = {}
        self._raw_cache: dict[int, tuple] = {}

    # ---- functions ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.nfunc

    def _func_at(self, i: int) -> Func:
        f = self._funcs.get(i)
        if f is None:
            (_entry, name_off, _args, _defer, _pcsp, _pcfile, _pcln, _npc, _cu, start_line,
             func_id, _flag, _nfd) = self._raw(i)
            f = Func(_cstring(self._funcnametab, name_off), self.text_start + self._entry_offs[i],
                     self.text_start + self._entry_offs[i + 1], start_line, func_id, i)
            self._funcs[i] = f
        return f

    def funcs(self) -> Iterator[Func]:
        for i in range(self.nfunc):
            yield self._func_at(i)

    def _index_for_pc(self, pc: int) -> int:
        off = pc - self.text_start
        if off < 0 or off >= self._entry_offs[self.nfunc]:
            return -1
        return bisect.bisect_right(self._entry_offs, off, 0, self.nfunc) - 1

    def func_for_pc(self, pc: int) -> Func | None:
        i = self._index_for_pc(pc)
        return None if i < 0 else self._func_at(i)

    def func_by_name(self, name: str) -> Func | None:
        """Look up by raw table name or by printed name (first match)."""
        if self._by_name is None:
            by_name: dict[str, int] = {}
            for i, f in enumerate(self.funcs()):
                by_name.setdefault(f.name, i)
                by_name.setdefault(f.print_name, i)
            self._by_name = by_name
        i = self._by_name.get(name)
        return None if i is None else self._func_at(i)

    # ---- pc-value tables ------------------------------------------------------------

    def _raw(self, i: int) -> tuple:
        """runtime._func of function i, as the 1.20+ field tuple (startLine 0 before)."""
        raw = self._raw_cache.get(i)
        if raw is None:
            raw = self._fstruct.unpack_from(self._pcln, self._func_offs[i])
            if self._fstruct is _FUNC_HEADER_118:
                raw = raw[:9] + (0,) + raw[9:]
            self._raw_cache[i] = raw
        return raw

    def _table(self, i: int, which: int) -> tuple[list[int], list[int]]:
        """Decoded pc-value table of function i. which: 0 pcsp, 1 pcfile, 2 pcln, or
        3+k for pcdata[k]."""
        key = (i, which)
        t = self._tables.get(key)
        if t is None:
            raw = self._raw(i)
            if which < 3:
                off = raw[4 + which]
            else:
                k = which - 3
                npcdata = raw[7]
                off = 0 if k >= npcdata else struct.unpack_from(
                    "<I", self._pcln, self._func_offs[i] + self._fstruct.size + 4 * k)[0]
            t = ([], []) if off == 0 else decode_pcvalue(
                self._pctab, off, self.text_start + self._entry_offs[i], self.quantum)
            self._tables[key] = t
        return t

    def _value(self, i: int, which: int, pc: int) -> int:
        ends, values = self._table(i, which)
        k = bisect.bisect_right(ends, pc)
        return values[k] if k < len(values) else -1

    def sp_delta(self, pc: int) -> int:
        """Frame size (bytes below the return address) at pc, from the pcsp table."""
        i = self._index_for_pc(pc)
        if i < 0:
            raise KeyError(f"no Go function at {pc:#x}")
        return self._value(i, 0, pc)

    def _file(self, i: int, fileno: int) -> str:
        if fileno < 0:
            return "?"
        cu = self._raw(i)[8]
        off = self._cutab[cu + fileno]
        if off == _NO_FUNCDATA:
            return "?"
        name = self._file_cache.get(off)
        if name is None:
            name = self._file_cache[off] = _cstring(self._filetab, off)
        return name

    def _file_line(self, i: int, pc: int) -> tuple[str, int]:
        fileno, line = self._value(i, 1, pc), self._value(i, 2, pc)
        if fileno < 0 or line < 0:
            return "?", 0     # padding after the code: the runtime prints "?:0" too
        return self._file(i, fileno), line

    def file_line(self, pc: int) -> tuple[str, int] | None:
        """Innermost file:line at exactly pc, without inline expansion (as debug/gosym's
        PCToLine and `go tool addr2line` report it)."""
        i = self._index_for_pc(pc)
        return None if i < 0 else self._file_line(i, pc)

    def _inline_tree(self, i: int) -> bytes | None:
        if i in self._inl_cache:
            return self._inl_cache[i]
        tree = None
        raw = self._raw(i)
        npcdata, nfuncdata = raw[7], raw[12]
        # Inline tree entries before Go 1.20 had another layout: those binaries get no
        # inline expansion (binary.analyze refuses them anyway).
        if nfuncdata > FUNCDATA_INL_TREE and self.gofunc is not None and self._read_mem \
                and self.magic == MAGIC_GO120:
            at = self._func_offs[i] + _FUNC_HEADER.size + 4 * npcdata + 4 * FUNCDATA_INL_TREE
            off = struct.unpack_from("<I", self._pcln, at)[0]
            if off != _NO_FUNCDATA:
                _ends, idxs = self._table(i, 3 + PCDATA_INL_TREE_INDEX)
                n = max(idxs, default=-1) + 1
                # The tree's length is not stored; every entry, parents included, is
                # the PCDATA value of some PC (parentPc resolves through PCDATA too).
                if n > 0:
                    tree = self._read_mem(self.gofunc + off, n * _INLINED_CALL.size)
        self._inl_cache[i] = tree
        return tree

    def frames_for_pc(self, pc: int, *, is_call_site: bool, callee: str | None = None,
                      keep_wrappers: bool = False) -> list[SymFrame]:
        """Logical frames at pc, innermost first, as the runtime's traceback expands them.

        is_call_site=True for a PC the runtime reached through a call: every caller's
        return address and a parked goroutine's saved `sched.pc` (or `syscallpc`). The
        runtime then symbolises pc-1 (inside the CALL), unless pc is the function entry
        (runtime/traceback.go `symPC`). is_call_site=False for the PC of a thread stopped
        by a signal (registers of a running goroutine) or of a frame whose callee is an
        injected call (see `INJECTED_CALLS`, `is_injected_call`): that PC is used as is.

        Wrapper functions (autogenerated method wrappers etc.) are left out as the runtime
        does, unless they called runtime.gopanic/sigpanic/panicwrap: pass the raw name of
        the callee frame's function as `callee` (None for the innermost frame). A physical
        wrapper frame therefore yields []; `func_for_pc` still finds it. With
        keep_wrappers they are kept as GOTRACEBACK=system shows them, marked `wrapper`."""
        i = self._index_for_pc(pc)
        if i < 0:
            return []
        entry = self.text_start + self._entry_offs[i]
        sym_pc = pc - 1 if is_call_site and pc > entry else pc
        keep_wrapper = callee in _KEEP_WRAPPER_BELOW
        # Goroutines of one program sit at few distinct PCs: remember the answers.
        key = (sym_pc, keep_wrapper, keep_wrappers)
        frames = self._frames_cache.get(key)
        if frames is None:
            if len(self._frames_cache) >= _FRAMES_CACHE_SIZE:
                self._frames_cache.clear()
            frames = self._frames_cache[key] = self._expand(i, entry, sym_pc, keep_wrapper,
                                                            keep_wrappers)
        return list(frames)

    def _expand(self, i: int, entry: int, pc: int, keep_wrapper: bool,
                keep_wrappers: bool) -> list[SymFrame]:
        tree = self._inline_tree(i)
        frames: list[SymFrame] = []
        wrapper = self.wrapper_func_id
        while True:
            # Real inline trees are a few levels deep; a damaged one can make parentPc
            # cycle, which must end as a damaged-table error, not an endless list.
            if len(frames) > _MAX_INLINE_DEPTH:
                raise ValueError("inline tree deeper than any compiler makes (a cycle?)")
            idx = self._value(i, 3 + PCDATA_INL_TREE_INDEX, pc) if tree else -1
            file, line = self._file_line(i, pc)
            if idx < 0 or tree is None or (idx + 1) * _INLINED_CALL.size > len(tree):
                f = self._func_at(i)
                hidden = f.func_id == wrapper and not keep_wrapper
                if not hidden or keep_wrappers:
                    frames.append(SymFrame(f.print_name, file, line, inlined=False, pc=pc,
                                           entry=entry, func_id=f.func_id, wrapper=hidden))
                return frames
            func_id, name_off, parent_pc, _start = _INLINED_CALL.unpack_from(
                tree, idx * _INLINED_CALL.size)
            name = _cstring(self._funcnametab, name_off)
            # Inlined wrappers are elided like the runtime does (elideWrapperCalling):
            # kept only when they called gopanic/sigpanic/panicwrap.
            hidden = func_id == wrapper and not keep_wrapper
            if not hidden or keep_wrappers:
                frames.append(SymFrame(func_name_for_print(name), file, line, inlined=True,
                                       pc=pc, entry=entry, func_id=func_id, wrapper=hidden))
            keep_wrapper = name in _KEEP_WRAPPER_BELOW
            pc = entry + parent_pc

    def _inliners(self) -> dict[str, list[int]]:
        """Function name (as printed) -> the indexes of the functions whose inline trees
        name it, built in one pass (a capture of many functions, such as a context rule's,
        asked each name of every tree again: seconds)."""
        index = self.__dict__.get("_inliners_index")
        if index is None:
            by_off: dict[int, set[int]] = {}
            for i in range(len(self)):
                tree = self._inline_tree(i)
                for j in range(len(tree) // _INLINED_CALL.size if tree else 0):
                    off = _INLINED_CALL.unpack_from(tree, j * _INLINED_CALL.size)[1]
                    by_off.setdefault(off, set()).add(i)
            index = {}
            for off, funcs in by_off.items():
                index.setdefault(func_name_for_print(_cstring(self._funcnametab, off)),
                                 set()).update(funcs)
            index = self.__dict__["_inliners_index"] = {k: sorted(v) for k, v in index.items()}
        return index

    def inlined_ranges(self, name: str) -> list[tuple[int, int]]:
        """The pc ranges where function `name` (as printed) runs inlined into another
        function, itself or something inlined into it: every function's inline tree is
        looked at once (the answer is kept)."""
        cache = self.__dict__.setdefault("_inlined_ranges_cache", {})
        if name in cache:
            return cache[name]
        out: list[tuple[int, int]] = []
        for i in self._inliners().get(name, ()):
            tree = self._inline_tree(i)
            calls = [_INLINED_CALL.unpack_from(tree, j * _INLINED_CALL.size)
                     for j in range(len(tree) // _INLINED_CALL.size)]
            mine = [func_name_for_print(_cstring(self._funcnametab, c[1])) == name
                    for c in calls]
            if not any(mine):
                continue
            entry = self.text_start + self._entry_offs[i]
            parent = [self._value(i, 3 + PCDATA_INL_TREE_INDEX, entry + c[2]) for c in calls]

            def inside(j: int) -> bool:
                for _ in range(_MAX_INLINE_DEPTH):
                    if j < 0 or j >= len(calls):
                        return False
                    if mine[j]:
                        return True
                    j = parent[j]
                return False

            ends, idxs = self._table(i, 3 + PCDATA_INL_TREE_INDEX)
            start = entry
            for end, idx in zip(ends, idxs):
                if idx >= 0 and inside(idx):
                    if out and out[-1][1] == start:
                        out[-1] = (out[-1][0], end)
                    else:
                        out.append((start, end))
                start = end
        cache[name] = out
        return out

    # ---- special function IDs -------------------------------------------------------

    @property
    def wrapper_func_id(self) -> int:
        """abi.FuncIDWrapper: the enum differs between versions, but systemstack_switch
        is its last member before FuncIDWrapper in every supported release."""
        cached = self.__dict__.get("_wrapper_id")
        if cached is None:
            f = self.func_by_name("runtime.systemstack_switch")
            cached = f.func_id + 1 if f else -1
            self.__dict__["_wrapper_id"] = cached
        return cached

    def is_injected_call(self, func: Func) -> bool:
        """True when the caller of `func` was interrupted by a signal (its PC is not a
        return address: pass is_call_site=False for it)."""
        return func.name in INJECTED_CALLS


# ---- damaged tables --------------------------------------------------------------------
# A truncated or corrupt .gopclntab (a damaged file, memory that changed under us) makes
# the decoders index past the end or unpack garbage. Every public entry point turns that
# into one clear NotGoBinary line instead of a traceback. (KeyError stays: sp_delta
# documents it for PCs outside Go code.)

_DAMAGE = (struct.error, IndexError, ValueError, ArithmeticError, TypeError, RecursionError)


def _guarded(fn):

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _DAMAGE as e:
            raise NotGoBinary(f"damaged Go function table (.gopclntab): {type(e).__name__} "
                              f"in {fn.__name__}") from None
    return wrapper


for _name in ("__init__", "_func_at", "func_for_pc", "func_by_name", "sp_delta", "file_line",
              "frames_for_pc", "wrapper_func_id"):
    _attr = Symtab.__dict__[_name]
    if isinstance(_attr, property):
        setattr(Symtab, _name, property(_guarded(_attr.fget)))
    else:
        setattr(Symtab, _name, _guarded(_attr))
