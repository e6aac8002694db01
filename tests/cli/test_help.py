"""`sideeye snapshot --help` names every capture spec form the README shows (it left out
context rules, 'context:main.userKey')."""
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
