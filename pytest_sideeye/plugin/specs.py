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
    a context rule 'context:pkg.K' keys itself, with no expressions."""
    from pytest_sideeye.capture import CONTEXT_PREFIX, split_spec_line
    spec: dict[str, list[str]] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(CONTEXT_PREFIX):
            merge_capture(spec, {_context_rule_line(line): []})
            continue
        func, exprs = split_spec_line(line)
        rule = func.startswith("type:") and len(func) > len("type:")
        if not func or not (exprs or rule) or ":" not in line:
            raise pytest.UsageError(
                f"sideeye_capture line {line!r}: want 'pkg.Func: var, var', "
                "'type:pkg.Type: field, field' or 'context:pkg.KeyType'")
        merge_capture(spec, {func: exprs})
    return spec


def _context_rule_line(line: str) -> str:
    """'context: pkg.K' -> 'context:pkg.K', checked now (a usage error, one line)."""
    from pytest_sideeye.capture import CONTEXT_PREFIX, parse_context_rule
    try:
        return CONTEXT_PREFIX + parse_context_rule(line)
    except CaptureSpecError as e:
        raise pytest.UsageError(f"sideeye_capture line {line!r}: {e}") from None


def merge_capture(into: dict[str, list[str]], more: dict[str, Any] | None) -> dict[str, list[str]]:
    """Union of capture specs, first-seen order; a value may be a list or 'a, b' text."""
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
