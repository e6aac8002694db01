"""Values of a type rule's type reached inside other captured values.

`type:main.Order: ID` with `main.hold: h` captures h, and in it `h.Ptr` (a *main.Order),
`h.Any` (an interface holding one), `h.Many[0]`...: each is a value of the rule's type,
shown as the rule's expressions on it (`h.Ptr.ID`), marked with the rule and `of` the path
to it. They are found after the resume, in the decoded JSON value, walked with its DWARF
type: nothing more is read from the target, so only what the usual limits let the
capture read is reached. A nested interface's JSON is just its value; its dynamic type is
remembered while decoding (`WatchingDecoder.dynamic`, by the identity of the decoded
object: structs, slices and maps, which is what a rule's type is behind an interface).
"""
from __future__ import annotations

import json

from pytest_sideeye.binary import GoType
from pytest_sideeye.capture.spec import Expr, TypeRule
from pytest_sideeye.capture.typerules import matches
from pytest_sideeye.capture.values import ValueDecoder
from pytest_sideeye.snapshot import Variable

MAX_FOUND = 64        # values of rule types reached in one captured expression
MAX_DEPTH = 24        # nesting levels walked


class WatchingDecoder(ValueDecoder):
    """A ValueDecoder remembering the dynamic type of every interface whose value decoded
    to a JSON object or list (the decoded object's id -> GoType; the objects are kept)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.dynamic: dict[int, GoType] = {}
        self._kept: list = []

    def interface(self, t: GoType, b: bytes, off: int, addr: int, depth: int):
        name, value = super().interface(t, b, off, addr, depth)
        if name and isinstance(value, (dict, list)):
            dyn, _data = self.dynamic_type(t, b, off)
            if isinstance(dyn, GoType):
                self.dynamic[id(value)] = dyn
                self._kept.append(value)
        return name, value


def _is_cut(v) -> bool:
    return isinstance(v, dict) and "$cut" in v


def _settle(t: GoType | None, v, dynamic: dict[int, GoType]):
    """Through pointers (transparent in the JSON) and interfaces (their dynamic type):
    (type, value), the type None when it cannot be known."""
    for _ in range(16):
        if t is None or v is None or _is_cut(v):
            return t, v
        if t.kind == "ptr":
            t = t.elem
        elif t.kind in ("iface", "eface"):
            t = dynamic.get(id(v))
        else:
            break
    return t, v


def find(t: GoType, value, path: str, rules: list[TypeRule], dynamic: dict[int, GoType],
         skip: str | None = None) -> list[tuple[str, TypeRule, GoType, object]]:
    """(path, rule, type, value) of every value of a rule's type in `value` (of type t),
    the root included unless its rule is `skip` (the rule that captured it already)."""
    out: list[tuple[str, TypeRule, GoType, object]] = []
    _walk(t, value, path, rules, dynamic, out, skip, 0)
    return out


def _walk(t, v, path, rules, dynamic, out, skip, depth) -> None:
    t, v = _settle(t, v, dynamic)
    if t is None or v is None or _is_cut(v) or len(out) >= MAX_FOUND:
        return
    for rule in rules:
        if matches(rule.type, t.name) and not (depth == 0 and rule.type == skip):
            out.append((path, rule, t, v))
    if depth >= MAX_DEPTH:
        return
    if t.kind == "struct" and t.name != "time.Time" and isinstance(v, dict):
        for f in t.fields:
            if f.name in v:
                _walk(f.type, v[f.name], f"{path}.{f.name}", rules, dynamic, out, skip,
                      depth + 1)
    elif t.kind in ("slice", "array") and isinstance(v, list) and t.elem is not None:
        for i, x in enumerate(v):
            _walk(t.elem, x, f"{path}[{i}]", rules, dynamic, out, skip, depth + 1)
    elif t.kind == "map" and t.elem is not None:
        for k, x in _entries(v):
            _walk(t.elem, x, f"{path}[{json.dumps(k, ensure_ascii=False)}]", rules, dynamic,
                  out, skip, depth + 1)


def _entries(v) -> list[tuple[object, object]]:
    """A decoded map's (key, value) pairs (string keys: an object; others: [k, v] pairs);
    keys that could not be read ("$cut:...") are left out."""
    if isinstance(v, dict):
        return [(k, x) for k, x in v.items() if not k.startswith("$")]
    if isinstance(v, list):
        return [(p[0], p[1]) for p in v if isinstance(p, list) and len(p) == 2]
    return []


class _Miss(Exception):
    """The rule's expression does not apply to this value (nil, out of range, cut...)."""


def evaluate(e: Expr, t: GoType, v, dynamic: dict[int, GoType]) -> tuple[GoType | None, object]:
    """A rule's expression on a decoded value: (its type, its value); _Miss when a step
    cannot be taken."""
    for st in e.steps:
        t, v = _settle(t, v, dynamic)
        if _is_cut(v):
            raise _Miss(f"cut ({v['$cut']})")
        if v is None:
            raise _Miss("nil")
        if t is None:
            raise _Miss("unknown dynamic type")
        if st.op == "field":
            f = t.field(st.arg) if t.kind == "struct" else None
            if f is None or not isinstance(v, dict) or st.arg not in v:
                raise _Miss(f"{t.name} has no field {st.arg!r}")
            t, v = f.type, v[st.arg]
        elif st.op == "index":
            t, v = _index(t, v, st.arg)
        elif st.op == "assert":
            if t.name != st.arg:
                raise _Miss(f"holds a {t.name}, not a {st.arg}")
    return t, v


def _index(t: GoType, v, key):
    if t.kind in ("slice", "array") and isinstance(v, list):
        if not isinstance(key, int) or not 0 <= key < len(v):
            raise _Miss(f"index {key} out of range [0:{len(v)}]")
        return t.elem, v[key]
    if t.kind == "map":
        for k, x in _entries(v):
            if k == key:
                return t.elem, x
        raise _Miss(f"key {key!r} not in map")
    raise _Miss(f"cannot index a {t.name}")


def _has_cut(v, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(v, dict):
        return "$cut" in v or any(_has_cut(x, depth + 1) for x in v.values())
    if isinstance(v, list):
        return any(_has_cut(x, depth + 1) for x in v)
    return False


def reached_variables(t: GoType, value, name: str, rules: list[TypeRule],
                      dynamic: dict[int, GoType], skip: str | None) -> list[Variable]:
    """The rule values found in one captured expression's value (named `name`), as
    Variables: `h.Ptr.ID` of `h.Ptr`, marked with the rule."""
    out = []
    for path, rule, rt, rv in find(t, value, name, rules, dynamic, skip):
        for e in rule.exprs or (None,):
            if e is None:
                out.append(Variable(path, rt.name, rv, truncated=_has_cut(rv), rule=rule.type,
                                    of=path))
                continue
            sep = "" if e.text.startswith((".", "[")) else "."
            try:
                et, ev = evaluate(e, rt, rv, dynamic)
            except _Miss as why:
                out.append(Variable(f"{path}{sep}{e.text}", "", None, error=str(why),
                                    rule=rule.type, of=path))
                continue
            type_name = et.name if et is not None else ""
            if et is not None and et.kind in ("iface", "eface"):
                dyn = dynamic.get(id(ev))
                if dyn is not None:
                    type_name = f"{et.name} = {dyn.name}"
            out.append(Variable(f"{path}{sep}{e.text}", type_name, ev, truncated=_has_cut(ev),
                                rule=rule.type, of=path))
    return out
