"""Capture specs: which functions, and which expressions over their parameters and
locals, to capture. Parsing only; nothing here looks at a binary.

    parse_specs(["main.settle:o,o.ID,attempt"])          # CLI form, repeatable
    parse_specs({"main.settle": ["o", "o.ID", "attempt"]})

Expressions: `name`, fields `a.b.c` (pointers and interfaces followed implicitly, as Go
does), `*p`, indexes `xs[0]`, map keys `m["key"]` / `m[42]`, type assertions
`conn.(*net.TCPConn).fd` (the value is an error when the dynamic type is another; unlike a
field through an interface, an assertion lets the BPF reads follow it, and the plan checks
the steps after it). A malformed spec is a CaptureSpecError, one line.
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


@dataclass
class CaptureSpec:
    functions: dict[str, list[Expr]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.functions)


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
    if isinstance(specs, dict):
        for fn, exprs in specs.items():
            if isinstance(exprs, str):
                exprs = split_exprs(exprs)
            pairs += [(str(fn).strip(), e) for e in exprs]
    else:
        if isinstance(specs, str):
            specs = [specs]
        for item in specs:
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
    return out


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
    out = CaptureSpec({fn: list(exprs) for fn, exprs in (spec.functions if spec else {}).items()})
    for ln in links:
        for fn, e in ((ln.client_function, ln.client_expr), (ln.server_function, ln.server_expr)):
            bucket = out.functions.setdefault(fn, [])
            if e not in bucket:
                bucket.append(e)
    return out
