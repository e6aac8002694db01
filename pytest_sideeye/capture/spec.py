"""Capture specs: which functions, and which expressions over their parameters and
locals, to capture. Parsing only; nothing here looks at a binary.

    parse_specs(["main.settle:o,o.ID,attempt"])          # CLI form, repeatable
    parse_specs({"main.settle": ["o", "o.ID", "attempt"]})

Expressions: `name`, fields `a.b.c` (pointers and interfaces followed implicitly, as Go
does), `*p`, indexes `xs[0]`, map keys `m["key"]` / `m[42]`, type assertions
`conn.(*net.TCPConn).fd` (the value is an error when the dynamic type is another; unlike a
field through an interface, an assertion lets the BPF reads follow it, and the plan checks
the steps after it). A malformed spec is a CaptureSpecError, one line.

Type rules, `type:main.Order: ID, Customer` (or `type:main.Order`, the whole value), name a
type instead of functions: every variable of that type or a pointer to it, and every value
of it reached through a captured expression (capture/typerules.py, capture/reach.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable

from pytest_sideeye.errors import CaptureSpecError

# --- specs and expressions -------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    op: str            # "field", "index", "deref", "assert" (arg: a Go type name)
    arg: object = None


@dataclass(frozen=True)
class Expr:
    text: str
    root: str
    steps: tuple[Step, ...]
    # The type rule (its TYPE as written) this expression was planned for: a variable of
    # that type found in the function's DWARF (capture/typerules.py); None for the spec's own.
    rule: str | None = None


@dataclass(frozen=True)
class TypeRule:
    """`type:main.Order: ID, Customer`: every value of TYPE (or *TYPE) in a frame, and every
    one reached through a captured expression, captured as these expressions relative to
    the value (`steps` of each; an empty tuple of exprs: the whole value)."""
    type: str
    exprs: tuple[Expr, ...] = ()

    @property
    def text(self) -> str:
        return f"type:{self.type}" + (": " + ", ".join(e.text for e in self.exprs)
                                      if self.exprs else "")


@dataclass
class CaptureSpec:
    functions: dict[str, list[Expr]] = field(default_factory=dict)
    types: dict[str, TypeRule] = field(default_factory=dict)   # TYPE -> its rule
    # Context rules, `context:KEYTYPE`: the key types (capture/contexts.py).
    contexts: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.functions) or bool(self.types) or bool(self.contexts)


_IDENT = re.compile(r"[A-Za-z_\u00c0-\uffff][\w\u00c0-\uffff]*")
_INDEX = re.compile(r"\[\s*(-?\d+|0x[0-9a-fA-F]+|\"(?:[^\"\\]|\\.)*\")\s*\]")


def parse_expr(text: str) -> Expr:
    """`**a.b[0]["k"]` -> Expr; a Go-like precedence: `*` applies to the whole rest."""
    s = text.strip()
    derefs = 0
    while s.startswith("*"):
        derefs += 1
        s = s[1:].lstrip()
    m = _IDENT.match(s)
    if not m:
        raise CaptureSpecError(f"bad capture expression {text!r}: expected a variable name")
    root, pos, steps = m.group(0), m.end(), []
    while pos < len(s):
        if s.startswith(".(", pos):
            end = _closing_paren(s, pos + 1)
            if end is None or not s[pos + 2:end].strip():
                raise CaptureSpecError(f"bad capture expression {text!r}: a type assertion "
                                       f"is .(TYPE), e.g. .(*net.TCPConn) (column {pos + 1})")
            steps.append(Step("assert", s[pos + 2:end].strip()))
            pos = end + 1
        elif s[pos] == ".":
            m = _IDENT.match(s, pos + 1)
            if not m:
                raise CaptureSpecError(f"bad capture expression {text!r}: expected a field "
                                       f"name after '.' at column {pos + 1}")
            steps.append(Step("field", m.group(0)))
            pos = m.end()
        elif s[pos] == "[":
            m = _INDEX.match(s, pos)
            if not m:
                raise CaptureSpecError(f"bad capture expression {text!r}: an index must be an "
                                       f"integer or a \"string\" literal (column {pos + 1})")
            lit = m.group(1)
            steps.append(Step("index", _string_literal(lit) if lit.startswith('"')
                              else int(lit, 0)))
            pos = m.end()
        else:
            raise CaptureSpecError(f"bad capture expression {text!r}: unexpected "
                                   f"{s[pos]!r} at column {pos + 1}")
    steps.extend(Step("deref") for _ in range(derefs))
    return Expr(text.strip(), root, tuple(steps))


def _closing_paren(s: str, start: int) -> int | None:
    """Index of the ')' closing the '(' at start (type names may nest: func(int))."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _string_literal(lit: str) -> str:
    try:
        return json.loads(lit)
    except ValueError:
        raise CaptureSpecError(f"bad string literal {lit}") from None


def split_exprs(s: str) -> list[str]:
    """'a, m["x,y"], s[1:2]' -> the expressions: commas inside brackets or quotes (", ',
    `; backslash escapes inside "...") stay. Shared by every place a spec is written as
    text: the CLI, the ini option, the marker."""
    out, cur, depth, quote, esc = [], [], 0, "", False
    for ch in s:
        if quote:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\" and quote == '"':
                esc = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def parse_specs(specs: "Iterable[str] | dict[str, Iterable[str]] | CaptureSpec | None") -> CaptureSpec:
    """CLI strings `function:expr,expr` (repeatable) or a {function: [expr]} dict."""
    if specs is None:
        return CaptureSpec()
    if isinstance(specs, CaptureSpec):
        return specs
    pairs: list[tuple[str, str]] = []
    rules: list[TypeRule] = []
    keys: list[str] = []
    if isinstance(specs, dict):
        for fn, exprs in specs.items():
            if isinstance(exprs, str):
                exprs = split_exprs(exprs)
            if str(fn).strip().startswith(CONTEXT_PREFIX):
                keys.append(parse_context_rule(str(fn)))
                continue
            if str(fn).strip().startswith(TYPE_PREFIX):
                rules.append(parse_type_rule(f"{str(fn).strip()}: {', '.join(exprs)}"
                                             if exprs else str(fn)))
                continue
            pairs += [(str(fn).strip(), e) for e in exprs]
    else:
        if isinstance(specs, str):
            specs = [specs]
        for item in specs:
            if item.strip().startswith(CONTEXT_PREFIX):
                keys.append(parse_context_rule(item))
                continue
            if item.strip().startswith(TYPE_PREFIX):
                rules.append(parse_type_rule(item))
                continue
            fn, sep, rest = item.partition(":")
            if not sep or not fn.strip() or not rest.strip():
                raise CaptureSpecError(f"bad capture spec {item!r}: expected "
                                       "FUNCTION:EXPR[,EXPR...] (e.g. main.settle:o.ID,attempt)")
            pairs += [(fn.strip(), e) for e in split_exprs(rest)]
    out = CaptureSpec()
    for fn, e in pairs:
        if not fn:
            raise CaptureSpecError("bad capture spec: empty function name")
        expr = parse_expr(e)
        bucket = out.functions.setdefault(fn, [])
        if expr not in bucket:
            bucket.append(expr)
    for rule in rules:
        old = out.types.get(rule.type)
        if old is not None:   # the same TYPE twice: one rule with both expression lists
            rule = TypeRule(rule.type, old.exprs + tuple(e for e in rule.exprs
                                                         if e not in old.exprs))
        out.types[rule.type] = rule
    out.contexts = tuple(dict.fromkeys(keys))
    return out


# --- context rules: `context:KEYTYPE` (capture/contexts.py) --------------------------------

CONTEXT_PREFIX = "context:"


def parse_context_rule(item: str) -> str:
    """`context:main.userKey` -> the key type, "main.userKey"."""
    key = item.strip()[len(CONTEXT_PREFIX):].strip().rstrip(":").strip()
    if not key or any(c.isspace() or c in ",:" for c in key):
        raise CaptureSpecError(f"bad capture spec {item!r}: expected context:KEYTYPE "
                               "(e.g. context:main.userKey)")
    return key


# --- type rules: `type:TYPE: EXPR, EXPR` or `type:TYPE` (the whole value) -----------------

TYPE_PREFIX = "type:"
# Rule expressions are relative to the value; they are parsed on this stand-in root.
RULE_ROOT = "\u2218"


def parse_type_rule(item: str) -> TypeRule:
    """`type:main.Order: ID, Customer.Name` -> TypeRule; the type may have type arguments
    (`main.Box[int]`, whose brackets may hold colons no more than commas matter)."""
    body = item.strip()[len(TYPE_PREFIX):]
    end = _head_end(body)
    type_name, rest = body[:end].strip().lstrip("*").strip(), body[end + 1:]
    if not type_name or any(c.isspace() for c in type_name.split("[", 1)[0]):
        raise CaptureSpecError(f"bad capture spec {item!r}: expected type:TYPE or "
                               "type:TYPE: EXPR[,EXPR...] (e.g. type:main.Order: ID, Customer)")
    if end < len(body) and not rest.strip():
        raise CaptureSpecError(f"bad capture spec {item!r}: no expression after "
                               f"'type:{type_name}:' (write type:{type_name} for the whole value)")
    exprs: list[Expr] = []
    for text in split_exprs(rest):
        e = parse_rule_expr(text)
        if e not in exprs:
            exprs.append(e)
    return TypeRule(type_name, tuple(exprs))


def _head_end(body: str) -> int:
    """Where a rule's TYPE ends: its first ':' outside brackets (or the end)."""
    depth = 0
    for i, ch in enumerate(body):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == ":" and depth == 0:
            return i
    return len(body)


def split_spec_line(line: str) -> tuple[str, list[str]]:
    """One written spec -> (head, expressions), the head being what a dict spec's key is:
    'main.settle: o, o.ID' -> ('main.settle', ['o', 'o.ID']); 'type:main.Order: ID' ->
    ('type:main.Order', ['ID']); 'type:main.Order' -> ('type:main.Order', []) (the whole
    value). For the ini option's lines and anything else that merges specs as a dict."""
    line = line.strip()
    if line.startswith(CONTEXT_PREFIX):
        return line, []
    if line.startswith(TYPE_PREFIX):
        end = len(TYPE_PREFIX) + _head_end(line[len(TYPE_PREFIX):])
        return line[:end].strip(), split_exprs(line[end + 1:])
    head, _sep, rest = line.partition(":")
    return head.strip(), split_exprs(rest)


def parse_rule_expr(text: str) -> Expr:
    """A rule's expression, relative to the value: `ID`, `Customer.Name`, `Lines[0]`,
    `Any.(*main.T)`. Its root is RULE_ROOT; its steps apply to the value."""
    t = text.strip()
    if t.startswith("*"):
        raise CaptureSpecError(f"bad type rule expression {t!r}: it starts at the value, "
                               "with a field (ID), an index ([0]) or an assertion (.(T))")
    joined = RULE_ROOT + (t if t.startswith((".", "[")) else "." + t)
    try:
        e = parse_expr(joined)
    except CaptureSpecError as err:
        raise CaptureSpecError(str(err).replace(repr(joined), repr(t))
                               .replace(RULE_ROOT, "")) from None
    return Expr(t, RULE_ROOT, e.steps)


def rule_expr_for(rule: TypeRule, e: Expr | None, root: str) -> Expr:
    """The rule's expression `e` (None: the whole value) on a variable named root, marked
    with the rule: `o.ID`."""
    if e is None:
        return Expr(root, root, (), rule.type)
    sep = "" if e.text.startswith((".", "[")) else "."
    return Expr(f"{root}{sep}{e.text}", root, e.steps, rule.type)


# --- user-defined links: two captured expressions whose equal values link their frames ---

@dataclass(frozen=True)
class UserLink:
    """`gateway.handle:req.ID == main.place:o.ID`: a frame of the left function (the
    waiting side) links to a frame of the right one (the serving side) when the two
    expressions captured there hold equal values."""
    text: str
    client_function: str
    client_expr: Expr
    server_function: str
    server_expr: Expr


def parse_link(text: str) -> UserLink:
    left, sep, right = str(text).partition("==")
    sides = []
    for side in (left, right):
        fn, colon, expr = side.strip().partition(":")
        if not sep or not colon or not fn.strip() or not expr.strip() or "==" in right:
            raise CaptureSpecError(f"bad link {text!r}: expected FUNCTION:EXPR == FUNCTION:EXPR "
                                   "(e.g. gateway.handle:req.ID == main.place:o.ID)")
        sides.append((fn.strip(), parse_expr(expr)))
    (cf, ce), (sf, se) = sides
    return UserLink(f"{cf}:{ce.text} == {sf}:{se.text}", cf, ce, sf, se)


def parse_links(links: "Iterable[str] | str | None") -> list[UserLink]:
    """Link specs from the CLI (--link, repeatable), the ini option (one per line) or the
    marker's links= (a string or a list)."""
    if not links:
        return []
    if isinstance(links, str):
        links = [ln for ln in links.splitlines() if ln.strip()]
    out: list[UserLink] = []
    for item in links:
        ln = item if isinstance(item, UserLink) else parse_link(item)
        if ln not in out:
            out.append(ln)
    return out


def with_links(spec: CaptureSpec | None, links: list[UserLink]) -> CaptureSpec | None:
    """The capture spec plus every expression the links compare (they are shown on their
    frames like any captured variable)."""
    if not links:
        return spec
    out = CaptureSpec({fn: list(exprs) for fn, exprs in (spec.functions if spec else {}).items()},
                      dict(spec.types) if spec else {}, spec.contexts if spec else ())
    for ln in links:
        for fn, e in ((ln.client_function, ln.client_expr), (ln.server_function, ln.server_expr)):
            bucket = out.functions.setdefault(fn, [])
            if e not in bucket:
                bucket.append(e)
    return out
