"""The command as a newcomer first meets it: `sideeye snapshot --help` names every capture
spec form the README shows (it left out context rules, 'context:main.userKey'), and piping
its output into `head` ends quietly."""
from __future__ import annotations

from pytest_sideeye.cli import main


def test_snapshot_help_names_every_capture_form():
    parser = main.build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")
    text = " ".join(sub.choices["snapshot"].format_help().split())
    for form in ("'main.settle:o,o.ID'", "'type:main.Order: ID, Customer'",
                 "'context:main.userKey'"):
        assert form in text, form
    doc = main.__doc__
    assert "--capture 'context:" in doc and "--together" in doc and "--link" in doc


def test_a_reader_that_leaves_is_no_traceback(tmp_path):
    """`sideeye ... | head`: the reader closes the pipe before the command is done writing
    (a snapshot of 3,000 goroutines, `--text | head -1`, ended in a BrokenPipeError
    traceback). Here `sideeye diff` writes into a pipe whose reader is already gone."""
    import os
    import subprocess
    import sys

    from samples import RECORDED
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", "diff",
                            str(RECORDED), str(RECORDED)], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert r.stderr == "", r.stderr
    assert r.returncode == 141
