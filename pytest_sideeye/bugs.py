"""An unexpected exception (a bug, not bad input) as one line: its type and message, and
where its traceback was written (settings.bug_reports_dir()), so that the bug can still be
reported. The CLI prints this line for an exception of its own; the agent answers it for
one of the engine's, so both routes say the same (`sideeye: internal error: ...`)."""
from __future__ import annotations

import itertools
import os
import time
import traceback

from pytest_sideeye import settings
from pytest_sideeye.errors import one_line

INTERNAL = "internal error"
_numbers = itertools.count(1)   # two in one second of one process (the agent) stay apart


def report_line(e: BaseException) -> str:
    """`internal error: KeyError: 'x' (a bug: the traceback is in PATH)`, the traceback
    written to PATH (or, when it cannot be written, said so: the line stays one line)."""
    head = f"{INTERNAL}: {type(e).__name__}: {one_line(e)}"
    try:
        path = _write(e)
    except OSError as why:
        return f"{head} (a bug; its traceback could not be written: {why.strerror or why})"
    return f"{head} (a bug: the traceback is in {path})"


def _write(e: BaseException):
    folder = settings.bug_reports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_numbers)}.txt"
    path.write_text("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    return path
