"""The JSON object of a Go map with string keys: one shape, whatever could be read.

A map whose keys are strings is always a JSON object, so that a report and a test read it
the same way in every snapshot. A key is its string, with three exceptions, all starting
with "$" (JSON object keys from Go strings can start with "$" too, hence the first rule):

- a key that starts with "$" gets one more: "$HOME" -> "$$HOME";
- a key whose bytes could not be read -> "$cut:<why>@<address>", why as in a cut value
  ({"$ptr", "$cut"}: unreadable, budget, rounds, ...), e.g. "$cut:unreadable@0x760db8";
- a key that is not valid UTF-8 -> "$b64:<base64 of its bytes>".

Two keys that come out the same (two unreadable keys at one address, two long keys cut to
the same first bytes) are kept apart: the second is "$dup:2:<key>", the third "$dup:3:...".
"""
from __future__ import annotations


def key_text(key) -> str:
    """The object key for a decoded string key (a str, or a cut or $b64 dict)."""
    if isinstance(key, str):
        return "$" + key if key.startswith("$") else key
    if isinstance(key, dict) and "$cut" in key:
        return f"$cut:{key['$cut']}@{key.get('$ptr', '?')}"
    if isinstance(key, dict) and "$b64" in key:
        return f"$b64:{key['$b64']}"
    return f"$key:{key!r}"


def string_keyed(pairs) -> dict:
    """The JSON object of a string-keyed map's decoded (key, value) pairs, in order."""
    out: dict = {}
    for key, value in pairs:
        text = key_text(key)
        if text in out:
            n = 2
            while f"$dup:{n}:{text}" in out:
                n += 1
            text = f"$dup:{n}:{text}"
        out[text] = value
    return out
