"""Files written atomically (reports, caches: a reader, or a concurrent pytest-xdist
worker, never sees half a file), and the disk caches (binary analysis, DWARF indexes,
compiled BPF programs): JSON documents in a folder per kind (settings.cache_dir), keyed by
build id or layout.

A cache is only ever a shortcut: a file that cannot be read or written costs time, never
correctness, so both directions swallow OSError and bad JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pytest_sideeye import settings


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o600) -> Iterator[Path]:
    """A temporary path beside `path` to write the new file at; on success it replaces
    `path` in one rename, on any error it is removed. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` so that no reader ever sees half of it. Raises OSError
    (callers that cache ignore it)."""
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


class JsonCache:
    """One kind of cached document: `load(key)` / `store(key, doc)`. `schema` is stored in
    each document; a document of another schema reads as absent."""

    def __init__(self, kind: str, schema: int):
        self.kind, self.schema = kind, schema

    @property
    def folder(self) -> Path:
        return settings.cache_dir(self.kind)  # read each time: tests and users may move it

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> Any | None:
        try:
            doc = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("$schema") != self.schema:
            return None
        return doc.get("data")

    def store(self, key: str, data: Any) -> None:
        try:
            atomic_write(self.path(key), json.dumps({"$schema": self.schema, "data": data}))
        except OSError:
            pass  # a cache we cannot write only costs the next process time
