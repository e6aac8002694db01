"""Context rules: `context:KEYTYPE` captures, in every frame of the program's own code
(main and third-party packages) holding a live `context.Context` variable, the top-most
value stored in that context under a key of type KEYTYPE (what `ctx.Value(k)` returns for
such a key: the nearest WithValue layer), named `ctx[KEYTYPE]`, and for every context so
captured its deadline and whether it is done: `ctx.Deadline()` (RFC 3339, null when it
has none) and `ctx.Err()` ("context canceled", "context deadline exceeded", or null).

Planned before the pause like a function spec (`expand`): the functions holding a
context.Context variable come from DWARF (the program's own packages only), and each gets
expressions whose single step is a context step (CONTEXT_OPS). The plan's Python rounds
read them (the BPF templates leave any step they do not know to Python): `variable`
walks the chain from the frame's interface value, layer by layer, in as many rounds as it
has layers, through the standard types (valueCtx, cancelCtx, timerCtx, afterFuncCtx,
withoutCancelCtx, stopCtx, the empty ones) and any other struct holding an embedded (or
first) context.Context field, such as a program's own wrapper.

Which layer answers what, as Go's own methods do: a value is the nearest valueCtx's whose
key has the type; the deadline is the nearest timerCtx's (WithDeadline keeps an earlier
parent deadline by making no timer of its own), the error the nearest cancelCtx's (a
cancel reaches every child); a withoutCancelCtx hides its parent's deadline and error but
not its values.
"""
from __future__ import annotations

from pytest_sideeye.binary import has_runtime_type, package_of
from pytest_sideeye.capture import typerules
from pytest_sideeye.capture.interfaces import is_direct_iface
from pytest_sideeye.capture.memory import PENDING, Cut
from pytest_sideeye.capture.rtypes import (
    RTYPE_HEADER,
    RTYPE_STR,
    RTYPE_TFLAG,
    TFLAG_EXTRA_STAR,
    abi_name,
)
from pytest_sideeye.capture.spec import CaptureSpec, Expr, Step
from pytest_sideeye.capture.values import ValueDecoder
from pytest_sideeye.snapshot import Variable

CONTEXT_TYPE = "context.Context"
OP_VALUE, OP_DEADLINE, OP_ERR = "context", "context.deadline", "context.err"
CONTEXT_OPS = (OP_VALUE, OP_DEADLINE, OP_ERR)
MAX_LAYERS = 64        # a longer chain is cut (a note on the variable says so)
ERRORS = {"context.deadlineExceededError": "context deadline exceeded"}


def is_context_expr(e: Expr) -> bool:
    return len(e.steps) == 1 and e.steps[0].op in CONTEXT_OPS


def context_exprs(var: str, keys: tuple[str, ...]) -> list[Expr]:
    """The expressions a context variable named var is captured with."""
    out = [Expr(f"{var}[{k}]", var, (Step(OP_VALUE, k),)) for k in keys]
    return out + [Expr(f"{var}.Deadline()", var, (Step(OP_DEADLINE),)),
                  Expr(f"{var}.Err()", var, (Step(OP_ERR),))]


def expand(spec: CaptureSpec, debug) -> CaptureSpec:
    """The spec with each context rule's expressions added to every function of the
    program's own code holding a context.Context variable."""
    keys = tuple(getattr(spec, "contexts", ()))
    if not keys:
        return spec
    out = CaptureSpec({fn: list(exprs) for fn, exprs in spec.functions.items()},
                      dict(spec.types), keys)
    warm_types(debug, keys)
    for fn, names in context_variables(debug).items():
        bucket = out.functions.setdefault(fn, [])
        for name in names:
            bucket += [e for e in context_exprs(name, keys) if e not in bucket]
    return out


# The standard library's context types a chain is made of (and the *T an interface holds).
STANDARD_TYPES = ("valueCtx", "cancelCtx", "timerCtx", "afterFuncCtx", "withoutCancelCtx",
                  "stopCtx", "backgroundCtx", "todoCtx", "emptyCtx", "deadlineExceededError")


def warm_types(debug, keys: tuple[str, ...]) -> None:
    """Build the chain's DWARF types before the pause: the first snapshot would otherwise
    parse each (a few ms) when its nodes meet them, in the pause."""
    for name in STANDARD_TYPES:
        for full in (f"context.{name}", f"*context.{name}"):
            debug.type_by_name(full)
    for key in keys:
        debug.type_by_name(key)
        debug.type_by_name("*" + key)


def knows_key_type(info, key: str) -> bool:
    """Whether the program (a BinaryInfo) has the key type: a DWARF type, or only a runtime
    type descriptor (a type used only in conversions to `any`, as keys are, often has no
    DWARF entry: ctxzoo's main.traceKey), matched by name as the walk matches keys."""
    debug = info.debug
    return (debug.type_by_name(key) is not None
            or debug.type_by_name("*" + key) is not None
            or has_runtime_type(info.path, key))


def context_variables(debug) -> dict[str, list[str]]:
    """function -> its context.Context parameters and locals, in the packages of the
    program's own code (the standard library's are not read: most of a binary's DWARF)."""
    out: dict[str, list[str]] = {}
    for package in debug.packages():
        if typerules.is_standard(package):
            continue
        for fn, variables in debug.package_variables(package).items():
            if fn.startswith("type:") or package_of(fn) != package:
                # The compiler's equality and hash functions; another package's function
                # inlined here (found in its own package's units, if it has a body there:
                # one with none would be looked for through the whole DWARF, seconds).
                continue
            names = [name for name, off in variables.items()
                     if not name.startswith(("~", ".")) and "." not in name
                     and debug.type_at(off).name == CONTEXT_TYPE]
            if names:
                out[fn] = names
    return out


def context_texts(spec: CaptureSpec) -> set[str]:
    """The names of the variables context rules add (left out where not live: `prune`)."""
    return {e.text for exprs in spec.functions.values() for e in exprs if is_context_expr(e)}


def prune(goroutines, spec: CaptureSpec) -> list[str]:
    """A rule asks for the contexts there are, not for every frame's: its variables that
    were not live at a frame's pc are left out, as are values no layer holds. Returns the
    rules' key types no captured context held a value under (a snapshot note: the type
    exists, but nothing was found under it, which an empty result alone does not say)."""
    texts = context_texts(spec)
    if not texts:
        return list(getattr(spec, "contexts", ()))
    found: set[str] = set()
    for g in goroutines:
        for f in g.frames:
            if f.variables:
                f.variables = [v for v in f.variables
                               if v.name not in texts or (v.available and not _absent(v))]
                found.update(v.name for v in f.variables if v.name in texts)
    return [k for k in getattr(spec, "contexts", ())
            if not any(t.endswith(f"[{k}]") for t in found)]


def no_value_note(key: str) -> str:
    return f"capture: no context held a value under a key of type {key}"


def _absent(v: Variable) -> bool:
    return v.value is None and v.error == NOT_FOUND


NOT_FOUND = "no value under a key of this type"


# --- reading a chain (in the plan's rounds) -------------------------------------------------

def variable(dec: ValueDecoder, e: Expr, t, addr: int) -> Variable:
    """The Variable of a context expression on the interface value at addr (type t);
    its value None (not final) while memory is pending."""
    step = e.steps[0]
    walk = _walk(dec, t, addr, step.arg if step.op == OP_VALUE else None)
    if walk is PENDING:
        return Variable(e.text, "", None)
    found, deadline, err, why = walk
    if step.op == OP_DEADLINE:
        return Variable(e.text, "time.Time", deadline, truncated=bool(why), error=why)
    if step.op == OP_ERR:
        return Variable(e.text, "error", err, truncated=bool(why), error=why)
    if found is None:
        return Variable(e.text, "", None, truncated=bool(why), error=why or NOT_FOUND)
    type_name, value = found
    return Variable(e.text, type_name, value, truncated=dec.truncated or bool(why),
                    error=why or (dec.errors[0] if dec.errors else None))


def _walk(dec: ValueDecoder, t, addr: int, key: str | None):
    """(found (type, value) or None, deadline or None, err text or None, why cut or None),
    or PENDING."""
    raw = dec.read(addr, 16)
    if raw is PENDING:
        return PENDING
    if isinstance(raw, Cut):
        return None, None, None, f"cannot read the context at {addr:#x} ({raw.why})"
    iface_t, b, off = t, raw, 0
    why = None
    found = deadline = err = None
    seen_deadline = seen_err = False   # the nearest timer / cancel layer answers
    # A deadline's zone or an error's text may wait for the file (constant data is read
    # after the resume): the walk goes on meanwhile, so that every layer is read in the pause.
    waits = False
    for _layer in range(MAX_LAYERS):
        dyn, data = dec.dynamic_type(iface_t, b, off)
        if dyn is None:
            break                                # a nil Context: the chain's end
        if dyn is PENDING:
            return PENDING
        if isinstance(dyn, Cut):
            why = f"unknown context type at {dyn.addr:#x}"
            break
        if dyn.kind == "ptr" and dyn.elem is not None:
            st = dyn.elem                    # *valueCtx, *cancelCtx, ...
        elif dyn.kind == "struct" and not is_direct_iface(dyn):
            st = dyn                         # a struct stored by value: data points to it
        else:
            break                                # backgroundCtx, todoCtx: the end
        base = data
        if not st.size or not base:
            break
        sb = dec.read(base, st.size)
        if sb is PENDING:
            return PENDING
        if isinstance(sb, Cut):
            why = f"cannot read a {st.name} at {base:#x} ({sb.why})"
            break
        if key is not None and found is None and st.name == "context.valueCtx":
            got = _value_if_key(dec, st, sb, base, key)
            if got is PENDING:
                return PENDING
            found = got
            if found is not None:
                break
        standard = st.name.startswith("context.")
        if standard and not seen_deadline and (d := _field(st, "deadline")) is not None:
            seen_deadline = True
            deadline = dec.value(d[0], sb, d[1], base + d[1])
            waits = waits or deadline is PENDING
        if standard and not seen_err and (ef := _field(st, "err")) is not None:
            seen_err = True
            err = _error_text(dec, ef[0], sb, ef[1])
            waits = waits or err is PENDING
        if st.name == "context.withoutCancelCtx":
            # WithoutCancel: no deadline, never done, whatever its parent says.
            seen_deadline = seen_err = True
        parent = _parent(st)
        if parent is None:
            break                                # a context type holding no other
        iface_t, b, off = parent[0], sb, parent[1]
        if key is None and seen_deadline and seen_err:
            break
    else:
        why = f"more than {MAX_LAYERS} layers"
    if waits or found is PENDING:
        return PENDING
    return found, deadline, err, why


def _field(st, name: str, depth: int = 0):
    """(type, offset) of a field of st by name, looking into embedded structs (timerCtx's
    cancelCtx), or None."""
    for f in st.fields:
        if f.name == name:
            return f.type, f.offset
    if depth < 3:
        for f in st.fields:
            if f.type.kind == "struct" and f.name == f.type.name.rsplit(".", 1)[-1]:
                got = _field(f.type, name, depth + 1)
                if got is not None:
                    return got[0], f.offset + got[1]
    return None


def _parent(st):
    """(interface type, offset) of the context a layer wraps: its `Context` field (also
    inside an embedded cancelCtx), withoutCancelCtx's `c`, or a custom type's first field
    of type context.Context."""
    for name in ("Context", "c"):
        got = _field(st, name)
        if got is not None and got[0].name == CONTEXT_TYPE:
            return got
    for f in st.fields:
        if f.type.name == CONTEXT_TYPE:
            return f.type, f.offset
    return None


def _value_if_key(dec: ValueDecoder, st, sb: bytes, base: int, key: str):
    """(type name, value) of a valueCtx's val when its key's dynamic type is `key` (or a
    pointer to it), else None; or PENDING."""
    kf, vf = st.field("key"), st.field("val")
    if kf is None or vf is None:
        return None
    kname = _type_name(dec, kf.type, sb, kf.offset)
    if kname is PENDING:
        return PENDING
    if kname not in (key, "*" + key):
        return None
    name, value = dec.interface(vf.type, sb, vf.offset, base + vf.offset, 0)
    if value is PENDING:
        return PENDING
    return name or "", value


def _type_name(dec: ValueDecoder, t, b: bytes, off: int):
    """The dynamic type's name of the interface value at b[off:]: from DWARF, else from the
    runtime's type descriptor itself (a key type used only in conversions to `any`, such as
    `traceKey("t")`, has no DWARF type), or None; or PENDING."""
    dyn, _data = dec.dynamic_type(t, b, off)
    if dyn is PENDING or dyn is None:
        return dyn
    if not isinstance(dyn, Cut):
        return dyn.name
    return _rtype_name(dec, dyn.addr)


def _rtype_name(dec: ValueDecoder, rtype: int):
    """A runtime type descriptor's name (abi.Name: flags, varint length, bytes)."""
    raw = dec.read(rtype, RTYPE_HEADER)
    if raw is PENDING or isinstance(raw, Cut):
        return raw if raw is PENDING else None
    name_off = int.from_bytes(raw[RTYPE_STR:RTYPE_STR + 4], "little", signed=True)
    got = abi_name(dec.read, dec.b.types_base + dec.bias + name_off)
    if got is None or got is PENDING:
        return got
    name = got[0]
    return name[1:] if raw[RTYPE_TFLAG] & TFLAG_EXTRA_STAR and name.startswith("*") else name


def _error_text(dec: ValueDecoder, t, sb: bytes, off: int):
    """A cancelCtx's err as text: an `error` (Go <= 1.26) or an atomic.Value holding one
    (1.27); None while not done."""
    if t.kind == "struct":   # atomic.Value{v any}
        inner = t.field("v")
        if inner is None:
            return None
        t, off = inner.type, off + inner.offset
    dyn, data = dec.dynamic_type(t, sb, off)
    if dyn is None:
        return None
    if dyn is PENDING:
        return PENDING
    if isinstance(dyn, Cut):
        return "unknown error"
    if dyn.name in ERRORS:
        return ERRORS[dyn.name]
    if dyn.name == "*errors.errorString" and dyn.elem is not None:
        raw = dec.read(data, dyn.elem.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return "unknown error"
        s = dec.value(dyn.elem, raw, 0, data)
        if s is PENDING:
            return PENDING
        return s.get("s") if isinstance(s, dict) else str(s)
    return dyn.name
