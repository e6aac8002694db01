"""Go strings as JSON values: valid UTF-8 as a string, anything else as its exact bytes
in base64 next to a readable text; a string cut by the length limit never ends mid-character."""
from __future__ import annotations

import base64
import re


def go_string(raw: bytes):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # $text follows Go's strings.ToValidUTF8(s, "\ufffd"): one U+FFFD per bad run.
        text = _BAD_RUN.sub("\ufffd", raw.decode("utf-8", errors="surrogateescape"))
        return {"$b64": base64.b64encode(raw).decode("ascii"), "$text": text}


_BAD_RUN = re.compile("[\udc80-\udcff]+")


def string_bytes(value) -> bytes:
    """The exact bytes of a decoded string value (inverse of go_string)."""
    if isinstance(value, dict):
        return base64.b64decode(value["$b64"])
    return value.encode("utf-8")


def trim_partial_utf8(raw: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence that the length limit cut at the end."""
    for back in range(1, min(4, len(raw)) + 1):
        c = raw[-back]
        if c & 0xC0 != 0x80:  # found the lead byte (or ASCII)
            need = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 1
            return raw[:-back] if need > back else raw
    return raw
