"""The capture specs and user links a test's snapshots use, as written in the ini file, the
`sideeye` markers and the fixture's arguments: parsed and merged here, checked now so that a
bad one is a usage error before any test runs."""
from __future__ import annotations

from typing import Any, Iterable

import pytest

from pytest_sideeye.errors import CaptureSpecError


def parse_capture_lines(lines: Iterable[str]) -> dict[str, list[str]]:
    """'pkg.Func: a, b.c' lines (ini sideeye_capture) -> {"pkg.Func": ["a", "b.c"]};
    a type rule 'type:pkg.T: a, b' (or 'type:pkg.T', the whole value) keys 'type:pkg.T';
    a context rule 'context:pkg.K' keys itself, with no expressions. Each line is checked
    as the engine will parse it: a bad one is a usage error, before any test runs."""
    try:
        return spec_lines(lines, "sideeye_capture line")
    except CaptureSpecError as e:
        raise pytest.UsageError(str(e)) from None


def spec_lines(lines: Iterable[str], where: str) -> dict[str, list[str]]:
    """Written capture specs (the ini's lines, a marker's or the fixture's list) as the
    dict that merges them; CaptureSpecError naming `where` for a bad one."""
    from pytest_sideeye.capture import CONTEXT_PREFIX, parse_specs, split_spec_line
    spec: dict[str, list[str]] = {}
    for line in lines:
        if not isinstance(line, str):
            raise CaptureSpecError(f"{where} {line!r}: want text such as 'main.settle: o, o.ID'")
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        func, exprs = split_spec_line(line)
        context = line.startswith(CONTEXT_PREFIX)
        rule = context or (func.startswith("type:") and len(func) > len("type:"))
        if not func or not (exprs or rule) or ":" not in line:
            raise CaptureSpecError(
                f"{where} {line!r}: want 'pkg.Func: var, var', "
                "'type:pkg.Type: field, field' or 'context:pkg.KeyType'")
        try:
            parsed = parse_specs([line])   # what the engine will make of it
        except CaptureSpecError as e:
            raise CaptureSpecError(f"{where} {line!r}: {e}") from None
        merge_capture(spec, {CONTEXT_PREFIX + parsed.contexts[0] if context else func: exprs})
    return spec


def merge_capture(into: dict[str, list[str]], more: dict[str, Any] | list | str | None
                  ) -> dict[str, list[str]]:
    """Union of capture specs, first-seen order; a value may be a list or 'a, b' text.
    `more` may also be written specs, as the CLI takes them (a marker's
    capture=["main.settle: o", "context:main.userKey"])."""
    if isinstance(more, (str, list, tuple)):
        more = spec_lines([more] if isinstance(more, str) else more, "capture spec")
    for func, exprs in (more or {}).items():
        if isinstance(exprs, str):
            from pytest_sideeye.capture import split_exprs
            exprs = split_exprs(exprs)
        if not isinstance(func, str) or not all(isinstance(e, str) for e in exprs):
            raise CaptureSpecError(f"capture spec for {func!r}: want a list of expressions")
        have = into.setdefault(func, [])
        have.extend(e for e in exprs if e not in have)
    return into


def checked_links(lines: Iterable[str] | str | None, where: str) -> list[str]:
    """Link specs as text, each checked now (CaptureSpecError naming where it was
    written)."""
    from pytest_sideeye.capture import parse_link
    if not lines:
        return []
    if isinstance(lines, str):
        lines = [lines]
    out = []
    for line in lines:
        try:
            out.append(parse_link(line).text)
        except CaptureSpecError as e:
            raise CaptureSpecError(f"{where}: {e}") from None
    return out
