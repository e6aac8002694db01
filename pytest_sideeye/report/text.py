"""Text safety for everything the report shows: captured text from the target is
untrusted and may hold control characters and unpaired surrogates (how Python carries
bytes that were not UTF-8). `clean` makes any text safe to encode and visible; `go_quote`
prints a string as an unambiguous Go literal. HTML escaping is the template's job."""
from __future__ import annotations

from typing import Any


def _control_table() -> dict[int, str]:
    """Control characters shown as their Unicode 'control picture' (NUL -> U+2400) so they
    are visible and cannot confuse a terminal or the HTML parser; lone surrogates (how
    Python carries undecodable bytes) become U+FFFD, the replacement character."""
    table = {c: chr(0x2400 + c) for c in range(32) if c not in (9, 10)}
    table[0x7F] = "\u2421"
    table.update({c: "\ufffd" for c in range(0xD800, 0xE000)})
    return table


_CONTROL = _control_table()


def clean(text: Any) -> str:
    """Any captured text -> a string that is safe to encode as UTF-8 and shows every
    character. HTML escaping is the template's job, not this function's."""
    if text is None:
        return ""
    return str(text).translate(_CONTROL)


# Characters a literal shows escaped although they are valid text, as Go's strconv.Quote
# does (they are not printable): line and paragraph separators, the byte-order mark, and
# the bidirectional controls, which would reorder what a reader sees around them.
_INVISIBLE = frozenset([0x2028, 0x2029, 0xFEFF, 0x200E, 0x200F, *range(0x202A, 0x202F),
                        *range(0x2066, 0x206A)])


def go_quote(s: str) -> str:
    """A Go-style double-quoted string literal: quotes, backslashes and control characters
    escaped; bytes that were not valid UTF-8 (surrogate escapes) shown as \\xNN, other
    unpaired surrogates, separators and bidi controls as \\uXXXX. Unambiguous, so a
    value reads back exactly."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\x{c:02x}")
        elif 0xDC80 <= c <= 0xDCFF:
            out.append(f"\\x{c - 0xDC00:02x}")
        elif 0xD800 <= c <= 0xDFFF or c in _INVISIBLE:
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
