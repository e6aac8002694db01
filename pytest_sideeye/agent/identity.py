"""Which code a sideeye process runs: a digest of the package's files (its Python, the BPF
C, the layout table, the report's templates) as they were when it was first asked.

The agent lives for weeks; the package under it can be upgraded (pip) or checked out anew
(a CI machine's next clone) meanwhile. Its answers then come from the code it started
with, which may read and name things differently from the caller's. The agent states its
identity in its health document and compares it with each request's: a snapshot taken by
other code says so in a note, and the set-up restarts an agent that is not current.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# In a checkout the C lives at the top (bpf/); in a wheel it ships in the package.
CHECKOUT_BPF = PACKAGE.parent / "bpf"
CODE_SUFFIXES = (".py", ".c", ".json", ".j2", ".css", ".js")


def code_id_of(package: Path, bpf: Path | None = None) -> str:
    """A digest of every code file under `package` (and the C in `bpf`), by relative path:
    16 hex digits, the same for the same files wherever they are installed."""
    h = hashlib.sha256()
    for root in (package, bpf):
        if root is None or not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*")
                           if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts):
            h.update(f"{path.relative_to(root)}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_id() -> str:
    """This process's code, read once: an agent answers for what it loaded at start."""
    return code_id_of(PACKAGE, CHECKOUT_BPF)
