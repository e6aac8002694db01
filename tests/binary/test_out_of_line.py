"""A function inlined somewhere and also called out of line (through an interface or a
func value: net/http.HandlerFunc.ServeHTTP, called by ServeMux for every handler) has two
DWARF DIEs: the abstract one, named, and the out-of-line body, unnamed (only its
DW_AT_abstract_origin). The body is found by the function's entry: its frames' variables
are captured, instead of "net/http.HandlerFunc.ServeHTTP is not at pc 0x652908"."""
from __future__ import annotations

import pytest
from support import GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.capture import make_plan

FN = "net/http.HandlerFunc.ServeHTTP"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_an_inlined_function_called_out_of_line_binds_its_variables(go_build, version):
    info = analyze(go_build("h2peers", version), need_layout=False)
    f = info.symtab.func_by_name(FN)
    assert f is not None and info.debug.function(FN).abstract_offset is not None
    plan = make_plan(info, {FN: ["w", "r"]})
    bound = plan._bindings(FN, f.entry + 1)
    assert isinstance(bound, dict) and {"f", "w", "r"} <= set(bound), bound
