"""The capture plan: a capture spec (spec.py) validated against one binary's DWARF, and
the frame jobs that read and decode the variables during the pause.

`make_plan` checks everything that can be checked before the target is paused (unknown
function, unknown variable, a field the type does not have -> CaptureSpecError, one line)
and warms the DWARF indexes. During the pause the engine runs:

    job = plan.start_frame(function, pc, cfa, is_call_site=True)    # one per matching frame
    run_rounds(jobs, read_batch)                                      # reads in batched rounds
    job.variables()                                                   # -> [snapshot.Variable]

Per target process, pass `budget=plan.process_budget()` (one Budget shared by all of that
process's jobs: Limits.total_bytes is per process), and for a PIE target build the plan
with `make_plan(..., load_bias=bias)`.

A job never raises on bad memory: unreadable pointers, values cut by limits or by the
round limit come back as Variable.error / truncated (see values.py for the JSON mapping).
"""
from __future__ import annotations

import os
import time
from typing import Callable

import pytest_sideeye.capture.contexts as ctxrules
from pytest_sideeye.binary import (
    BinaryInfo,
    DebugInfo,
    GoType,
    Piece,
    ReadOnlyData,
    Scope,
    VarDIE,
    analyze,
)
from pytest_sideeye.capture import reach, typerules
from pytest_sideeye.capture.chainwalk import WALK_ROUNDS, ChainWalk
from pytest_sideeye.capture.interfaces import is_direct_iface
from pytest_sideeye.capture.memory import PENDING, SYNTHETIC_BASE, Budget, Cut, Limits, Memory, u
from pytest_sideeye.capture.spec import CaptureSpec, Expr, Step, TypeRule, parse_specs
from pytest_sideeye.capture.values import ValueDecoder
from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.snapshot import Variable

ReadBatch = Callable[[list[tuple[int, int]]], dict[tuple[int, int], "bytes | None"]]


# --- the plan ----------------------------------------------------------------------------

_UINT8 = GoType(-1, "uint8", "uint", 1)
_CFA_PROBE = 1 << 40


class Plan:
    """Validated specs bound to one binary. Cheap to query from the engine's hot path."""

    def __init__(self, debug: DebugInfo, spec: CaptureSpec, limits: Limits, bias: int = 0,
                 constant: ReadOnlyData | None = None):
        self.debug = debug
        self.bias = bias
        # The target's read-only segments, read from its executable (string literals).
        self.constant = constant
        self.spec = spec
        self.limits = limits
        self._infos = {fn: debug.function(fn) for fn in spec.functions}
        # The instances of a generic function share one name in the pclntab, the name
        # frames have ("main.keepBox[...]"); DWARF names each by its shapes
        # ("main.keepBox[go.shape.int]"): a frame's is the one whose code holds its pc.
        self.instances: dict[str, list[str]] = _instances(debug, self._infos)
        self.functions: set[str] = set(spec.functions) | set(self.instances)
        # Type rules (already expanded into the functions above: typerules.expand), for
        # the values of their types reached inside captured values (reach.py).
        self.rules: list[TypeRule] = list(spec.types.values())
        # Per (function, pc): the variables in scope; per (variable, pc): its pieces at a
        # CFA of 0 (Go's locations are CFA-relative). The frames of 1,000 goroutines parked
        # at one pc then cost a dict lookup each in the pause, not a DWARF scope walk.
        self._bound: dict[tuple[str, int], "dict[str, tuple[VarDIE, int]] | str"] = {}
        self._pieces: dict[tuple[int, int], tuple] = {}
        self._has_contexts: dict[str, bool] = {}
        self._walk_only: dict[str, bool] = {}
        self._ctx_slots: dict[tuple[str, int], list] = {}

    def wants(self, function_name: str) -> bool:
        return function_name in self.functions

    def process_budget(self) -> Budget:
        """One per target process: the total-bytes limit is shared by all its frames."""
        return Budget(self.limits.total_bytes)

    def start_frame(self, function: str, pc: int, cfa: int, *, is_call_site: bool,
                    budget: Budget | None = None) -> "FrameJob":
        lookup_pc = pc - 1 if is_call_site else pc
        function = self._instance(function, lookup_pc) if self.instances else function
        bound = self._bound.get((function, lookup_pc))
        if bound is None:
            bound = self._bound[(function, lookup_pc)] = self._bindings(function, lookup_pc)
        return FrameJob(self, function, self.spec.functions.get(function, []), bound,
                        lookup_pc, cfa, budget or self.process_budget())

    def location(self, var: VarDIE, cu_off: int, pc: int, cfa: int) -> "list[Piece] | None":
        """debug.location, the expression evaluated once per variable and pc."""
        key = (var.die_offset or id(var), pc)
        got = self._pieces.get(key)
        if got is None:
            # Evaluated at two CFAs: a piece that moves with it is CFA-relative (fbreg,
            # call_frame_cfa), one that does not is absolute (DW_OP_addr).
            at0 = self.debug.location(var, cu_off, pc, 0)
            at1 = self.debug.location(var, cu_off, pc, _CFA_PROBE)
            moves = [p.kind == "mem" and q.addr != p.addr for p, q in zip(at0 or (), at1 or ())]
            got = self._pieces[key] = (at0, moves)
        pieces, moves = got
        if not pieces or not any(moves):
            return pieces
        return [Piece(p.kind, p.addr + cfa, p.size, p.why) if m else p
                for p, m in zip(pieces, moves)]

    # --- context variables (their chains walked by chainwalk.py) -------------------------
    def has_contexts(self, function: str) -> bool:
        got = self._has_contexts.get(function)
        if got is None:
            exprs = self.spec.functions.get(function, ())
            got = self._has_contexts[function] = any(map(ctxrules.is_context_expr, exprs))
        return got

    def walk_only(self, function: str) -> bool:
        """Every expression of the function's is a context expression."""
        got = self._walk_only.get(function)
        if got is None:
            exprs = self.spec.functions.get(function, ())
            got = self._walk_only[function] = all(map(ctxrules.is_context_expr, exprs))
        return got

    def context_slots(self, function: str, pc: int, bound) -> list:
        """The function's context variables in memory at pc: [(name, [(address at a CFA of
        0, size, moves with the CFA)], key types asked)], once per (function, pc). Those
        not in scope, not live or partly in registers are left to FrameJob._one
        (unavailable)."""
        key = (function, pc)
        got = self._ctx_slots.get(key)
        if got is not None:
            return got
        got = []
        exprs = self.spec.functions.get(function, ())
        names = dict.fromkeys(e.root for e in exprs if ctxrules.is_context_expr(e))
        for name in names if not isinstance(bound, str) else ():
            b = bound.get(name)
            if b is None:
                continue
            var, cu_off = b
            at0 = self.location(var, cu_off, pc, 0)
            at1 = self.location(var, cu_off, pc, _CFA_PROBE)
            if not at0 or any(p.kind != "mem" for p in at0):
                continue
            size = self.debug.type_at(var.type_offset).size
            parts, off = [], 0
            for p, q in zip(at0, at1):
                n = p.size if p.size is not None else size - off
                moves = q.addr != p.addr
                if parts and parts[-1][0] + parts[-1][1] == p.addr and parts[-1][2] == moves:
                    parts[-1] = (parts[-1][0], parts[-1][1] + n, moves)   # adjacent: one read
                else:
                    parts.append((p.addr, n, moves))
                off += n
            # A spec may also name the variable itself (`main.handle: ctx`): no step.
            keys = tuple(e.steps[0].arg for e in exprs
                         if e.root == name and e.steps and e.steps[0].op == ctxrules.OP_VALUE)
            got.append((name, parts, keys))
        self._ctx_slots[key] = got
        return got

    def _instance(self, function: str, pc: int) -> str:
        """The DWARF name of the generic instance a frame of `function` at pc runs."""
        for name in self.instances.get(function, ()):
            info = self._infos.get(name)
            if info is not None and info.concrete is not None and info.concrete.contains(pc):
                return name
        return function

    def _bindings(self, function: str, pc: int) -> dict[str, tuple[VarDIE, int]] | str:
        """Variables in scope at pc: name -> (VarDIE, CU offset); or why there are none."""
        info = self._infos.get(function) or self.debug.function(function)
        if info is None:
            return f"no DWARF for {function}"
        physical = self.debug.function_at(pc)
        if info.concrete is not None and (physical == function or info.concrete.contains(pc)):
            scope = info.concrete
        else:
            outer = self.debug.concrete_scope(physical) if physical else None
            scope = _inlined_instance(outer, info.abstract_offset, pc) if outer else None
            if scope is None:
                return f"{function} is not at pc {pc:#x} (in {physical or 'unknown code'})"
        bound: dict[str, tuple[VarDIE, int]] = {}
        _bind(scope, pc, bound, own=True)
        return bound


def _instances(debug: DebugInfo, infos: dict) -> dict[str, list[str]]:
    """pclntab name -> the DWARF names of the generic instances it stands for."""
    out: dict[str, list[str]] = {}
    for name, info in infos.items():
        if "[" not in name or info is None or info.concrete is None or not info.concrete.ranges:
            continue
        f = debug.symtab.func_for_pc(info.concrete.ranges[0][0])
        frame_name = f.print_name if f is not None else None   # as frames are named
        if frame_name and frame_name != name:
            out.setdefault(frame_name, []).append(name)
    return out


def _shown_type(t: GoType) -> str:
    """A type's name as shown: a generic body's parameter is typed by a typedef named
    `.param0`; what it stands for says more (*main.Box[go.shape.int])."""
    if t.name.startswith(".") and t.kind == "ptr" and t.elem is not None:
        return "*" + t.elem.name
    return t.name


def _inlined_instance(scope: Scope, origin: int | None, pc: int) -> Scope | None:
    """The innermost inlined call of `origin` containing pc."""
    if origin is None:
        return None
    found = None
    for c in scope.children:
        if c.contains(pc):
            if c.tag == "DW_TAG_inlined_subroutine" and c.origin == origin:
                found = c
            deeper = _inlined_instance(c, origin, pc)
            if deeper is not None:
                found = deeper
    return found


def _bind(scope: Scope, pc: int, out: dict, own: bool) -> None:
    """Bind the scope's variables; inner lexical blocks shadow outer ones; variables of
    functions inlined into this one fill names that are still unbound."""
    for v in scope.variables:
        if own or v.name not in out:
            out[v.name] = (v, scope.cu_offset)
    for c in scope.children:
        if not c.contains(pc):
            continue
        if c.tag == "DW_TAG_lexical_block":
            _bind(c, pc, out, own)
    for c in scope.children:
        if c.contains(pc) and c.tag == "DW_TAG_inlined_subroutine":
            _bind(c, pc, out, own=False)


def _program_name(path: str) -> str:
    """The program's own name: /proc/PID/exe says nothing, its link target does."""
    try:
        if os.path.basename(path) == "exe" and path.startswith("/proc/"):
            return os.path.basename(os.readlink(path)) or path
    except OSError:
        pass
    return os.path.basename(path)


def make_plan(binary: "str | os.PathLike | BinaryInfo", spec, limits: Limits | None = None,
              load_bias: int = 0) -> Plan:
    """Validate `spec` against the binary's DWARF (CaptureSpecError on any problem).

    load_bias: for a PIE target, runtime minus link-time addresses. start_frame still takes
    link-time PCs and runtime CFAs; the bias maps the runtime type and code addresses
    found in memory (interfaces, func values) back to the binary. The binary's read-only
    segments (string literals) are read from its file at that bias: a BinaryInfo of
    /proc/PID/exe, as the engine passes, is the very file process PID runs."""
    debug = _debug_info(binary)
    spec = ctxrules.expand(parse_specs(spec), debug)
    limits = limits or Limits()
    _check_rules(debug, spec)
    spec = typerules.expand(spec, debug)
    for fn, exprs in spec.functions.items():
        info = debug.function(fn)
        if info is None:
            hint = _close_names(fn, debug)
            raise CaptureSpecError(f"unknown function {fn!r} in {_program_name(debug.path)}"
                                   + (f" (did you mean {hint}?)" if hint else ""))
        for e in list(exprs):
            if e.root not in info.variables:
                have = ", ".join(sorted(n for n in info.variables
                                        if n[0].isalpha() or n[0] == "_")) or "none"
                raise CaptureSpecError(f"unknown variable {e.root!r} in {fn} "
                                       f"(parameters and locals: {have})")
            try:
                _check_steps(debug, fn, e, debug.type_at(info.variables[e.root]))
            except CaptureSpecError:
                if e.rule is None:
                    raise
                # A rule's expression checked against one instantiation of a generic type
                # need not apply to another (Box[Order].Item.ID, Box[int].Item.ID).
                exprs.remove(e)
        if info.concrete is not None:
            debug.warm_scope(info.concrete)
        debug.warm_inliners(fn)
    debug.warm()
    path = binary.path if isinstance(binary, BinaryInfo) else binary
    return Plan(debug, spec, limits, load_bias, ReadOnlyData.open(path, load_bias))


def _check_rules(debug: DebugInfo, spec: CaptureSpec) -> None:
    """Every type rule names a type of the program, and its expressions apply to it."""
    for rule in spec.types.values():
        t = typerules.example_type(debug, rule.type)
        if t is None:
            hint = typerules.close_types(debug, rule.type)
            raise CaptureSpecError(f"unknown type {rule.type!r} in {_program_name(debug.path)}"
                                   + (f" (did you mean {hint}?)" if hint else ""))
        for e in rule.exprs:
            _check_steps(debug, f"type {rule.type}", e, t)


def _debug_info(binary: "str | os.PathLike | BinaryInfo") -> DebugInfo:
    """The DWARF side of a binary given by path or BinaryInfo (MissingDebugInfo without)."""
    info = binary if isinstance(binary, BinaryInfo) else analyze(binary, need_layout=False)
    return info.debug


def _close_names(fn: str, debug: DebugInfo) -> str:
    tail = fn.rsplit(".", 1)[-1]
    near = sorted(n for n in debug.func_names if n.endswith("." + tail))[:3]
    return ", ".join(near)


def _check_steps(debug: DebugInfo, fn: str, e: Expr, t: GoType) -> None:
    """Static check of an expression against DWARF types (interfaces stop the check:
    their dynamic type is only known at run time)."""
    if ctxrules.is_context_expr(e):
        return   # a context rule's: planned on a context.Context variable, walked at run time
    where = f"{e.text!r} in {fn}"
    for st in e.steps:
        if st.op == "assert":
            while t.kind == "ptr" and t.elem is not None and t.elem.kind in ("iface", "eface"):
                t = t.elem
            if t.kind not in ("iface", "eface"):
                raise CaptureSpecError(f"bad type assertion in {where}: {t.name} is not an "
                                       "interface")
            asserted = debug.type_by_name(st.arg)
            if asserted is None:
                raise CaptureSpecError(f"bad type assertion in {where}: no type {st.arg!r} "
                                       "in the program")
            t = asserted
            continue
        if t.kind in ("iface", "eface"):
            return
        if st.op == "deref":
            if t.kind != "ptr":
                raise CaptureSpecError(f"cannot dereference {where}: {t.name} is not a pointer")
            t = t.elem
        elif st.op == "field":
            while t.kind == "ptr":
                t = t.elem
            if t.kind in ("iface", "eface"):
                return
            f = t.field(st.arg) if t.kind == "struct" else None
            if f is None:
                raise CaptureSpecError(f"bad field in {where}: {t.name} has no field {st.arg!r}")
            t = f.type
        elif st.op == "index":
            if t.kind == "ptr" and t.elem is not None and t.elem.kind == "array":
                t = t.elem
            if t.kind == "map":
                want_str = t.key is not None and t.key.kind == "string"
                if want_str != isinstance(st.arg, str) or (t.key is not None and t.key.kind
                                                           not in ("string", "int", "uint")):
                    raise CaptureSpecError(f"bad map key in {where}: keys are "
                                           f"{t.key.name if t.key else '?'}")
                t = t.elem
            elif t.kind in ("slice", "array", "string"):
                if not isinstance(st.arg, int):
                    raise CaptureSpecError(f"bad index in {where}: {t.name} needs an integer")
                t = _UINT8 if t.kind == "string" else t.elem
            else:
                raise CaptureSpecError(f"cannot index {where}: {t.name} is not a slice, "
                                       "array, string or map")


# --- per-frame jobs ---------------------------------------------------------------------

class _Fail(Exception):
    """An expression step cannot go on (nil pointer, index out of range, ...)."""


class FrameJob:
    """The reads and decoding for one frame's variables, driven in rounds."""

    def __init__(self, plan: Plan, function: str, exprs: list[Expr],
                 bound: "dict[str, tuple[VarDIE, int]] | str", pc: int, cfa: int, budget: Budget):
        self.plan = plan
        self.function = function
        self.exprs = exprs
        self.bound = bound
        self.pc = pc
        self.cfa = cfa
        self.budget = budget
        self._mem: Memory | None = None
        self._locations: dict[str, list[Piece] | None] = {}
        self._synthetic: dict[str, int] = {}
        self._holes: dict[str, list[tuple[int, int, str]]] = {}
        self._result: list[Variable] | None = None
        self._final: dict[int, Variable] = {}
        # For type rules: each expression's decoded (type, value, decoder), walked after
        # the resume for values of the rules' types inside it (reach.py).
        self._seen: dict[Expr, tuple] = {}
        self._shown: list[Variable] | None = None
        self._waits_for_file = False   # only constant data left: decoded after the resume
        self.rounds = 0
        # Context expressions are walked for all frames together (chainwalk.py): the
        # walk, and this frame's context variables it reads (name -> its Root).
        self.contexts = None
        self.context_roots: dict = {}
        self._walked = False           # every expression is the walk's: no rounds of its own

    @property
    def mem(self) -> Memory:
        """What this frame read (made when first needed: a frame whose variables are all
        context variables reads nothing of its own, and the pause makes 1,000 of them)."""
        if self._mem is None:
            self._mem = Memory(self.budget, self.plan.limits.merge_gap, self.plan.constant)
        return self._mem

    @property
    def has_contexts(self) -> bool:
        return self.plan.has_contexts(self.function)

    def attach_contexts(self, walk) -> None:
        """Leave this frame's context variables that are in memory to `walk`."""
        self.contexts = walk
        cfa = self.cfa
        for name, parts, keys in self.plan.context_slots(self.function, self.pc, self.bound):
            self.context_roots[name] = walk.add_root(
                [(a + cfa if moves else a, n) for a, n, moves in parts], keys)
        self._walked = self.plan.walk_only(self.function)

    def _walks(self, e: Expr) -> bool:
        return self.contexts is not None and e.root in self.context_roots and \
            ctxrules.is_context_expr(e)

    # --- the round protocol -------------------------------------------------------------
    def requests(self) -> list[tuple[int, int]]:
        """(addr, size) still needed; [] when done."""
        if self._walked:
            return []
        for _ in range(4):
            if self._result is not None or self._waits_for_file:
                return []
            self.mem.deferred = 0
            vars_, pending = self._pass()
            if not pending:
                self._result = vars_
                return []
            reqs = self.mem.take_requests()
            if reqs:
                return reqs
            if self.mem.deferred:
                # What is left is read from the binary's file by variables(), after the
                # resume (values.Memory.deferred).
                self._waits_for_file = True
                return []
            # Everything wanted was refused (budget): the next pass sees those as cut.
        self.mem.final = True
        self._result = self._pass()[0]
        return []

    def feed(self, results: dict[tuple[int, int], "bytes | None"]) -> None:
        self.rounds += 1
        self.mem.feed(results)

    @property
    def done(self) -> bool:
        """Every value decoded, or only constant data left to read from the file (no cut
        for lack of rounds)."""
        own = self._result is not None or self._waits_for_file or self._walked
        return own and (self.contexts is None or self.contexts.finished)

    def variables(self) -> list[Variable]:
        if self._result is None:
            self.mem.final = True
            self.mem.wanted.clear()
            self._result = self._pass()[0]
        if self._shown is None and self.context_roots:
            # The walk's answers are final only now (after the pause: chainwalk.finish).
            self._result = [self.contexts.variable(self.context_roots[e.root], e)
                            if self._walks(e) else v for e, v in zip(self.exprs, self._result)]
        if self._shown is None:
            self._shown = self._with_rules(self._result) if self.plan.rules else self._result
        return self._shown

    def _with_rules(self, found: list[Variable]) -> list[Variable]:
        """Type rules' part: their variables marked (those not live here left out: a rule
        asks for the values there are, not for every variable of the type), then the
        values of their types reached inside every captured value."""
        out = []
        for e, v in zip(self.exprs, found):
            if e.rule is not None:
                if not v.available:
                    continue
                v.rule, v.of = e.rule, e.root
            out.append(v)
        names = {v.name for v in out}
        for e, v in zip(self.exprs, found):
            seen = self._seen.get(e)
            if seen is None:
                continue
            t, value, dec = seen
            try:
                found_here = reach.reached_variables(t, value, e.text, self.plan.rules,
                                                     dec.dynamic,
                                                     skip=e.rule if not e.steps else None)
            except Exception as ex:  # noqa: BLE001 - a bug here must not lose the snapshot
                v.error = v.error or f"type rules failed: {type(ex).__name__}: {ex}"
                continue
            for r in found_here:
                if r.name not in names:
                    names.add(r.name)
                    out.append(r)
        return out

    # --- one decoding pass ----------------------------------------------------------------
    def _pass(self) -> tuple[list[Variable], bool]:
        """Decode every expression from what has been read so far; an expression whose
        pass needed no more memory is final and is not decoded again (passes run during
        the pause, so their Python time is pause time)."""
        out, pending = [], False
        for i, e in enumerate(self.exprs):
            v = self._final.get(i)
            if v is None and self._walks(e):
                v = Variable(e.text, "", None)     # the walk's, in variables()
            elif v is None:
                decoder = reach.WatchingDecoder if self.plan.rules else ValueDecoder
                dec = decoder(self.plan.debug, self.mem, self.plan.limits, self.plan.bias)
                v = self._one_safe(dec, e)
                if dec.pending:
                    pending = True
                else:
                    self._final[i] = v
            out.append(v)
        return out, pending

    def _one_safe(self, dec: ValueDecoder, e: Expr) -> Variable:
        """Never let a decoding bug escape into the engine's pause: it becomes this
        variable's error line."""
        try:
            return self._one(dec, e)
        except Exception as ex:  # noqa: BLE001 - the target must be resumed regardless
            return Variable(e.text, "", None, error=f"capture failed: {type(ex).__name__}: {ex}")

    def _one(self, dec: ValueDecoder, e: Expr) -> Variable:
        if isinstance(self.bound, str):
            return Variable(e.text, "", None, available=False, error=self.bound)
        b = self.bound.get(e.root)
        if b is None:  # declared in the function, but not in scope at this pc
            info = self.plan.debug.function(self.function)
            off = info.variables.get(e.root) if info else None
            return Variable(e.text, self.plan.debug.type_at(off).name if off else "", None,
                            available=False)
        var, cu_off = b
        t = self.plan.debug.type_at(var.type_offset)
        if e.root not in self._locations:
            self._locations[e.root] = self.plan.location(var, cu_off, self.pc, self.cfa)
        pieces = self._locations[e.root]
        if not pieces or all(p.kind != "mem" for p in pieces):
            return Variable(e.text, t.name, None, available=False)
        dec.truncated, dec.errors = False, []
        if len(pieces) == 1:
            addr = pieces[0].addr
        else:
            addr = self._assemble(dec, e.root, pieces, t)
            if addr is PENDING:
                return Variable(e.text, t.name, None)
            if isinstance(addr, Variable):
                addr.name = e.text
                return addr
        if ctxrules.is_context_expr(e):
            return ctxrules.variable(dec, e, t, addr)
        try:
            loc = self._walk(dec, t, addr, e.steps)
        except _Fail as why:
            cut = "(rounds)" in str(why) or "(budget)" in str(why)
            return Variable(e.text, t.name, None, truncated=cut, error=str(why))
        if loc is PENDING:
            return Variable(e.text, t.name, None)
        t, addr = loc
        type_name = _shown_type(t)
        if t.kind in ("iface", "eface"):
            raw = dec.read(addr, 16)
            if isinstance(raw, bytes):
                dyn_name, value = dec.interface(t, raw, 0, addr, 0)
                if dyn_name:
                    type_name = f"{t.name} = {dyn_name}"
            else:
                value = PENDING if raw is PENDING else dec._cut(raw)
        elif self._holes.get(e.root) and not e.steps:
            value = self._struct_with_holes(dec, t, addr, self._holes[e.root])
        else:
            value = dec.at(t, addr)
        if value is PENDING:
            return Variable(e.text, type_name, None)
        if self.plan.rules:
            self._seen[e] = (t, value, dec)
        return Variable(e.text, type_name, value, truncated=dec.truncated,
                        error=dec.errors[0] if dec.errors else None)

    def _assemble(self, dec: ValueDecoder, root: str, pieces: list[Piece], t: GoType):
        """A composite (DW_OP_piece) location: read the memory pieces and lay them out at a
        synthetic address, register pieces becoming holes."""
        if root in self._synthetic:
            return self._synthetic[root]
        buf, holes, off, waiting = bytearray(), [], 0, False
        base = SYNTHETIC_BASE + 0x100000 * len(self._synthetic)
        for p in pieces:
            size = p.size if p.size is not None else t.size - off
            if p.kind == "mem":
                raw = dec.read(p.addr, size)
                if raw is PENDING:
                    waiting = True
                    raw = bytes(size)
                elif isinstance(raw, Cut):
                    holes.append((base + off, base + off + size, "unreadable"))
                    raw = bytes(size)
                buf += raw
            else:
                holes.append((base + off, base + off + size, p.why or "in a register"))
                buf += bytes(size)
            off += size
        if waiting:
            return PENDING
        if holes and t.kind == "slice" and all(lo - base >= 16 for lo, _hi, _w in holes):
            # Only the capacity is gone (Go often keeps just ptr and len): show cap = len.
            buf[16:24] = buf[8:16]
            holes = []
        if holes and t.kind != "struct":
            return Variable(root, t.name, None, available=False,
                            error=f"partly {holes[0][2]} at this pc")
        self.mem.add_synthetic(base, bytes(buf), holes)
        self._synthetic[root] = base
        self._holes[root] = [(lo - base, hi - base, why) for lo, hi, why in holes]
        return base

    @staticmethod
    def _struct_with_holes(dec: ValueDecoder, t: GoType, addr: int, holes):
        """A struct partly in registers: the fields in memory, the others cut."""
        out, waiting = {}, False
        for f in t.fields:
            lo, hi = f.offset, f.offset + f.type.size
            gone = [why for hlo, hhi, why in holes if hlo < hi and lo < hhi]
            if gone:
                dec.truncated = True
                out[f.name] = {"$cut": gone[0]}
                continue
            out[f.name] = dec.at(f.type, addr + f.offset)
            waiting = waiting or out[f.name] is PENDING
        return PENDING if waiting else out

    def _walk(self, dec: ValueDecoder, t: GoType, addr: int, steps: tuple[Step, ...]):
        """Follow the expression's steps to the (type, address) of the value."""
        for st in steps:
            if st.op == "field":
                r = self._field(dec, t, addr, st.arg)
            elif st.op == "assert":
                r = self._assert(dec, t, addr, st.arg)
            else:
                if t.kind in ("iface", "eface"):
                    r = self._unbox(dec, t, addr)
                    if r is PENDING:
                        return PENDING
                    t, addr = r
                if st.op == "deref":
                    if t.kind != "ptr":
                        raise _Fail(f"cannot dereference a {t.name}")
                    r = self._deref(dec, t, addr)
                else:
                    r = self._index(dec, t, addr, st.arg)
            if r is PENDING:
                return PENDING
            t, addr = r
        return t, addr

    def _word(self, dec: ValueDecoder, addr: int, size: int = 8):
        raw = dec.read(addr, size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            raise _Fail(f"cannot read memory at {addr:#x} ({raw.why})")
        return raw

    def _deref(self, dec: ValueDecoder, t: GoType, addr: int):
        raw = self._word(dec, addr)
        if raw is PENDING:
            return PENDING
        ptr = u(raw, 0, 8)
        if ptr == 0:
            raise _Fail(f"nil pointer ({t.name})")
        return t.elem, ptr

    def _unbox(self, dec: ValueDecoder, t: GoType, addr: int):
        raw = self._word(dec, addr, 16)
        if raw is PENDING:
            return PENDING
        dyn, data = dec.dynamic_type(t, raw, 0)
        if dyn is None:
            raise _Fail(f"nil interface ({t.name})")
        if dyn is PENDING:
            return PENDING
        if isinstance(dyn, Cut):
            raise _Fail(f"unknown dynamic type in {t.name}")
        return (dyn, addr + 8) if is_direct_iface(dyn) else (dyn, data)

    def _assert(self, dec: ValueDecoder, t: GoType, addr: int, type_name: str):
        """`.(T)`: the interface's value as T, when its dynamic type is T."""
        while t.kind == "ptr" and t.elem is not None and t.elem.kind in ("iface", "eface"):
            r = self._deref(dec, t, addr)
            if r is PENDING:
                return PENDING
            t, addr = r
        r = self._unbox(dec, t, addr)
        if r is PENDING:
            return PENDING
        if r[0].name != type_name:
            raise _Fail(f"{t.name} holds a {r[0].name}, not a {type_name}")
        return r

    def _field(self, dec: ValueDecoder, t: GoType, addr: int, name: str):
        for _ in range(self.plan.limits.pointer_depth + 4):
            if t.kind == "ptr":
                r = self._deref(dec, t, addr)
                if r is PENDING:
                    return PENDING
                t, addr = r
            elif t.kind in ("iface", "eface"):
                r = self._unbox(dec, t, addr)
                if r is PENDING:
                    return PENDING
                t, addr = r
            else:
                break
        f = t.field(name) if t.kind == "struct" else None
        if f is None:
            raise _Fail(f"{t.name} has no field {name!r}")
        return f.type, addr + f.offset

    def _index(self, dec: ValueDecoder, t: GoType, addr: int, key):
        if t.kind == "ptr" and t.elem is not None and t.elem.kind == "array":
            r = self._deref(dec, t, addr)
            if r is PENDING:
                return PENDING
            t, addr = r
        if t.kind == "array":
            if not 0 <= key < t.count:
                raise _Fail(f"index {key} out of range [0:{t.count}]")
            return t.elem, addr + key * t.elem.size
        if t.kind in ("slice", "string"):
            raw = self._word(dec, addr, 16)
            if raw is PENDING:
                return PENDING
            ptr, n = u(raw, 0, 8), int.from_bytes(raw[8:16], "little", signed=True)
            if not isinstance(key, int) or not 0 <= key < n:
                raise _Fail(f"index {key} out of range [0:{n}]")
            elem = _UINT8 if t.kind == "string" else t.elem
            return elem, ptr + key * elem.size
        if t.kind == "map":
            return self._map_lookup(dec, t, addr, key)
        raise _Fail(f"cannot index a {t.name}")

    def _map_lookup(self, dec: ValueDecoder, t: GoType, addr: int, key):
        raw = self._word(dec, addr)
        if raw is PENDING:
            return PENDING
        ptr = u(raw, 0, 8)
        if ptr == 0:
            raise _Fail(f"key {key!r} not in nil map")
        # Search every entry the byte budget allows, not just the display limit.
        entries = dec.map_entries(t, ptr, limit=1 << 30)
        if entries is PENDING:
            return PENDING
        if isinstance(entries, dict):
            raise _Fail(f"cannot read map ({entries.get('$cut')})")
        waiting = False
        for kt, kb, koff, kaddr, vt, _vb, _voff, vaddr in entries:
            k = dec.value(kt, kb, koff, kaddr, 0)
            if k is PENDING:
                waiting = True
            elif k == key:
                return vt, vaddr
        if waiting:
            return PENDING
        raise _Fail(f"key {key!r} not in map")


def run_rounds(jobs: list[FrameJob], read_batch: ReadBatch, max_rounds: int = 8,
               deadline: float | None = None, kept=None) -> int:
    """Drive all jobs: each round reads every job's pending requests in one batch
    (shared requests read once). Returns the number of rounds used; after it,
    job.variables() is final for every job.

    `deadline` (time.monotonic()) bounds the time spent here, which is pause time: past
    it no more requests are gathered; unfinished jobs then decode what they have, the rest
    marked cut, when variables() is called (after the resume).

    `kept`: frames whose context chains were read before the pause (prewalk.Kept), whose
    answers the walk reads along with the jobs' own."""
    # The frames' context chains: walked together, a level a round (chainwalk.py), for
    # as many rounds as their depth asks.
    walk = ChainWalk.attach(jobs, kept)
    most = max(max_rounds, WALK_ROUNDS) if walk is not None else max_rounds
    rounds = 0
    active = list(jobs)     # a job that asks for nothing is done with its rounds
    while rounds < most:
        wanted = {}
        for job in active if rounds < max_rounds else ():
            if deadline is not None and time.monotonic() > deadline:
                break
            reqs = job.requests()
            if reqs:
                wanted[job] = reqs
        active = list(wanted)
        walking = walk.requests() if walk is not None else []
        union = sorted({r for reqs in wanted.values() for r in reqs}.union(walking))
        if not union:
            break
        results = read_batch(union)
        rounds += 1
        for job, reqs in wanted.items():
            if reqs:
                job.feed({r: results.get(r) for r in reqs})
        if walking:
            walk.feed(results)
        if deadline is not None and time.monotonic() > deadline:
            break
    return rounds
