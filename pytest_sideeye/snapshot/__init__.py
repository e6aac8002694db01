"""The snapshot model: what a snapshot holds and its JSON contract (sideeye.snapshot/v1,
docs/snapshot-format.md), with what reads and writes that model without a process:
stack buckets (`buckets`), the debug=2-style text (`textdump`) and the parser of Go's own
goroutine dumps (`godump`, the tests' oracle).

Takes nothing of ours: every other stage imports it, it imports no other stage.
"""
from pytest_sideeye.snapshot import buckets
from pytest_sideeye.snapshot.godump import parse_dump
from pytest_sideeye.snapshot.model import (
                                           FORMAT,
                                           STATUSES,
                                           Container,
                                           CreatedBy,
                                           Frame,
                                           Goroutine,
                                           Process,
                                           Snapshot,
                                           Variable,
                                           now_rfc3339,
)
from pytest_sideeye.snapshot.textdump import render as render_text

__all__ = ["FORMAT", "STATUSES", "Container", "CreatedBy", "Frame", "Goroutine", "Process",
           "Snapshot", "Variable", "now_rfc3339", "buckets", "render_text", "parse_dump"]
