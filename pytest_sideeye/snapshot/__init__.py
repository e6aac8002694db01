"""The snapshot model: what a snapshot holds and its JSON contract (sideeye.snapshot/v1,
docs/snapshot-format.md), with what reads and writes that model without a process:
stack buckets (`buckets`), the debug=2-style text (`textdump`) and the parser of Go's own
goroutine dumps (`godump`, the tests' oracle).

Takes nothing of ours: every other stage imports it, it imports no other stage.
"""
from pytest_sideeye.snapshot import buckets
from pytest_sideeye.snapshot.contexts import DoneContext, done_context_text, done_contexts
from pytest_sideeye.snapshot.diff import (
                                          GoroutineGroup,
                                          ProcessDiff,
                                          SnapshotDiff,
                                          diff,
                                          group_goroutines,
                                          process_name,
)
from pytest_sideeye.snapshot.diff import render_text as render_diff_text
from pytest_sideeye.snapshot.godump import parse_dump
from pytest_sideeye.snapshot.links import Chain, Endpoint, Link
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
from pytest_sideeye.snapshot.textdump import (
                                          apart_text,
                                          chain_text,
                                          labels_text,
                                          own_frame,
                                          side_text,
                                          skew_text,
)
from pytest_sideeye.snapshot.textdump import render as render_text

__all__ = ["FORMAT", "STATUSES", "Chain", "Container", "Endpoint", "Link", "CreatedBy", "Frame", "Goroutine", "Process",
           "GoroutineGroup", "ProcessDiff", "Snapshot", "SnapshotDiff", "Variable", "buckets", "diff", "group_goroutines", "now_rfc3339", "parse_dump", "process_name",
           "render_diff_text", "render_text", "DoneContext", "done_contexts", "done_context_text", "chain_text", "labels_text", "own_frame", "side_text", "skew_text", "apart_text"]
