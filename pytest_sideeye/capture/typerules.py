"""Type rules planned from DWARF: which functions hold a variable of a rule's type.

`type:main.Order: ID, Customer` asks for every value of main.Order. Before any pause,
`expand` turns the rule into ordinary function specs: for each function whose DWARF lists
a parameter or local of type main.Order or *main.Order, the rule's expressions on that
variable (`o.ID`, `o.Customer`), marked with the rule (Expr.rule). From there on they are
read like any function's: in BPF or by the Python rounds, only in the pc ranges where the
variable is live (a variable not live at a frame's pc is left out, not shown unavailable:
FrameJob.variables). Values of the type reached inside other captured values are found
after the resume (reach.py).

How TYPE matches a DWARF type name (`matches`):
- exactly: `main.Order`, `main.Box[int]`, `main.Box[go.shape.int]`;
- a generic type named without type arguments, `main.Box`, matches every instantiation:
  `main.Box[int]`, `main.Box[main.Order]`, and the shape instantiations the compiler gives
  the variables of generic function bodies (`main.Box[go.shape.int]`). Inside a generic
  body a value of a type *parameter* has only its shape's type (`go.shape.int`,
  `go.shape.struct { ... }`, shared by every type of that shape), so `type:main.Order`
  does not claim it; a rule on the generic type that holds it does.

Which packages can hold a variable of TYPE: only those that can name it. A standard
library package imports no other, so for a type outside the standard library only the
non-standard packages (main included) are read; for a standard one, all.
"""
from __future__ import annotations

import dataclasses
import weakref

from pytest_sideeye.binary import DebugInfo, GoType, package_of
from pytest_sideeye.capture.spec import CaptureSpec, Expr, TypeRule, rule_expr_for


def matches(rule_type: str, type_name: str) -> bool:
    """Whether a DWARF type name is the rule's type (see the module doc)."""
    if type_name == rule_type:
        return True
    return "[" not in rule_type and type_name.startswith(rule_type + "[")


def holds(t: GoType, rule_type: str) -> bool:
    """A variable of type t holds a value of the rule's type: TYPE or *TYPE."""
    if matches(rule_type, t.name):
        return True
    return t.kind == "ptr" and t.elem is not None and matches(rule_type, t.elem.name)


def is_standard(package: str) -> bool:
    """Go's rule of thumb: standard-library import paths have no dot in their first
    element (and main is the program's own)."""
    return "." not in package.split("/", 1)[0] and package != "main"


def type_package(rule_type: str) -> str:
    return package_of(rule_type.split("[", 1)[0])


def known(debug: DebugInfo, rule_type: str) -> bool:
    """The binary has a type the rule matches."""
    return any(matches(rule_type, n) for n in debug.type_names())


def example_type(debug: DebugInfo, rule_type: str) -> GoType | None:
    """A type the rule matches (to check the rule's expressions against): the exact one,
    else the first instantiation not of a shape."""
    t = debug.type_by_name(rule_type)
    if t is not None:
        return t
    names = sorted((n for n in debug.type_names() if matches(rule_type, n)),
                   key=lambda n: ("go.shape." in n, n))
    return debug.type_by_name(names[0]) if names else None


def close_types(debug: DebugInfo, rule_type: str) -> str:
    """Up to three type names ending like the rule's (a hint for a typo'd package)."""
    tail = rule_type.split("[", 1)[0].rsplit(".", 1)[-1]
    near = sorted(n for n in debug.type_names()
                  if n.split("[", 1)[0].endswith("." + tail) and not n.startswith(("*", "[")))
    return ", ".join(near[:3])


def packages_for(debug: DebugInfo, rules: list[TypeRule]) -> list[str]:
    everywhere = any(is_standard(type_package(r.type)) for r in rules)
    return [p for p in debug.packages() if everywhere or not is_standard(p)]


# Per binary (its DebugInfo, kept while the binary is): rule types -> frame_variables's
# answer. A snapshot plans its spec again each time; a rule on a standard type reads every
# package's functions (~0.3 s warm for net/http.Request in a small server).
_FOUND: "weakref.WeakKeyDictionary[DebugInfo, dict]" = weakref.WeakKeyDictionary()


def frame_variables(debug: DebugInfo, rules: list[TypeRule]) -> dict[str, list[tuple[str, TypeRule]]]:
    """function -> [(variable, rule)] for every parameter and local holding a rule's type
    (results, ~r0, compiler temporaries, .dict, and the pieces Go 1.26+ splits captured
    slices into, orders.ptr, are not the program's variables)."""
    key = tuple(rules)
    known = _FOUND.setdefault(debug, {})
    if key not in known:
        known[key] = _frame_variables(debug, rules)
    return known[key]


def _frame_variables(debug: DebugInfo, rules: list[TypeRule]) -> dict[str, list[tuple[str, TypeRule]]]:
    out: dict[str, list[tuple[str, TypeRule]]] = {}
    for package in packages_for(debug, rules):
        for fn, variables in debug.package_variables(package).items():
            if fn.startswith("type:"):
                continue   # the compiler's equality and hash functions
            for name, off in variables.items():
                if name.startswith(("~", ".")) or "." in name:
                    continue   # a result, the compiler's (.dict), or a piece (orders.ptr)
                t = debug.type_at(off)
                for rule in rules:
                    if holds(t, rule.type):
                        out.setdefault(fn, []).append((name, rule))
    return out


def expand(spec: CaptureSpec, debug: DebugInfo) -> CaptureSpec:
    """The spec with each type rule's expressions added to every function holding a
    variable of its type (marked with the rule); the rules stay in `types` for reach.py."""
    if not spec.types:
        return spec
    out = dataclasses.replace(spec, functions={fn: list(exprs)
                                               for fn, exprs in spec.functions.items()})
    for fn, found in frame_variables(debug, list(spec.types.values())).items():
        bucket = out.functions.setdefault(fn, [])
        for name, rule in found:
            for e in rule.exprs or (None,):
                planned: Expr = rule_expr_for(rule, e, name)
                if planned not in bucket:
                    bucket.append(planned)
    return out
