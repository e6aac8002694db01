"""Stage 2, the capture plan: which variables to read in which frames, and how.

Takes capture specs (`parse_specs`: "main.settle: o, o.ID") and a BinaryInfo; gives a
`Plan` validated against the binary's DWARF (`make_plan`, CaptureSpecError on anything
wrong, before any pause), its compilation into BPF read templates (`compile_plan` ->
ReadTemplates, run by the engine's programs in the pause), the frame jobs of the Python
path (`run_rounds`), and the decoding of the bytes read into JSON-ready values
(values.ValueDecoder) after the resume.
"""
from pytest_sideeye.capture.contexts import knows_key_type
from pytest_sideeye.capture.contexts import no_value_note as no_context_value_note
from pytest_sideeye.capture.contexts import prune as prune_contexts
from pytest_sideeye.capture.memory import Budget, Limits, Memory
from pytest_sideeye.capture.plan import FrameJob, Plan, make_plan, run_rounds
from pytest_sideeye.capture.prewalk import Kept, PreWalk
from pytest_sideeye.capture.spec import (
    CONTEXT_PREFIX,
    CaptureSpec,
    Expr,
    TypeRule,
    UserLink,
    parse_context_rule,
    parse_expr,
    parse_link,
    parse_links,
    parse_specs,
    parse_type_rule,
    split_exprs,
    split_spec_line,
    with_links,
)
from pytest_sideeye.capture.templates import (
    C_FORMATS,
    CaptureOutput,
    ReadTemplates,
    compile_plan,
    parse_output,
    read_as_bpf,
)
from pytest_sideeye.capture.typerules import known as knows_type

__all__ = ["CONTEXT_PREFIX", "C_FORMATS", "Budget", "CaptureOutput", "CaptureSpec", "Expr", "FrameJob", "Limits", "Memory",
           "prune_contexts", "Kept", "PreWalk", "knows_key_type", "no_context_value_note",
           "knows_type",
           "Plan", "ReadTemplates", "UserLink", "compile_plan", "make_plan", "parse_context_rule", "parse_expr", "parse_link",
           "parse_links", "parse_output", "parse_specs", "parse_type_rule", "read_as_bpf", "run_rounds",
           "split_exprs",
           "split_spec_line", "TypeRule", "with_links"]
