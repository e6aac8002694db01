"""capture/templates.py: what the BPF capture reads in the pause.

A BPF capture read copies at most CAP_READ_MAX bytes (bpf/snapshot.bpf.c cap_read); the
decoder wants a pointee, a string or a slice's data whole, so a read that could be longer
must not be a template's: it would come back cut ("rounds", its frame never read again).
Such frames are left to the Python rounds (TPL_PYTHON). Checked on varzoo's real DWARF."""
from __future__ import annotations

import pytest

from pytest_sideeye import capture
from pytest_sideeye.binary import analyze
from pytest_sideeye.capture.templates import TPL_PYTHON, _read_size

CONST = {"CAP_OPS": 16, "CAP_READ_MAX": 2048, "CAP_TEMPLATES": 64, "CAPTAB_MAX": 1024}


@pytest.fixture(scope="module")
def varzoo(go_build):
    return analyze(go_build("varzoo", "1.24.11"))


def longest_read(tables) -> int:
    """The most bytes any op of the tables' templates may copy (0: no reads at all)."""
    return max((_read_size(kind, size, limit, count)
                for ops in tables.templates for kind, _src, count, _off, size, limit in ops),
               default=0)


def in_bpf(tables) -> bool:
    """Some pc range is read by a BPF template with reads in it."""
    return any(t != TPL_PYTHON and tables.templates[t] for _lo, _hi, t in tables.ranges)


def in_python(tables) -> bool:
    return any(t == TPL_PYTHON for _lo, _hi, t in tables.ranges)


def test_a_pointee_longer_than_one_bpf_read_goes_to_the_python_rounds(varzoo):
    order = varzoo.debug.type_by_name("main.Order").size
    short = capture.Limits(string_bytes=16, slice_bytes=16)     # the Order is the longest
    plan = capture.make_plan(varzoo, {"main.settle": ["*o"]}, short)
    fits = capture.compile_plan(plan, 0, CONST, varzoo.symtab)
    assert fits is not None and in_bpf(fits) and not in_python(fits)
    assert longest_read(fits) == order                          # *o in one read
    small = dict(CONST, CAP_READ_MAX=order - 8)
    cut = capture.compile_plan(plan, 0, small, varzoo.symtab)
    assert cut is not None and not in_bpf(cut) and in_python(cut)
    assert longest_read(cut) <= order - 8


def test_a_string_limit_longer_than_one_bpf_read_goes_to_the_python_rounds(varzoo):
    spec = {"main.settle": ["o.Customer.Name"]}
    within = capture.compile_plan(capture.make_plan(varzoo, spec), 0, CONST, varzoo.symtab)
    assert within is not None and in_bpf(within) and not in_python(within)
    beyond = capture.make_plan(varzoo, spec, capture.Limits(string_bytes=4096))
    tables = capture.compile_plan(beyond, 0, CONST, varzoo.symtab)
    assert tables is not None and not in_bpf(tables) and in_python(tables)
