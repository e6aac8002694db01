"""Type rules (issue 29): `type:TYPE: EXPR, EXPR` or `type:TYPE` in a capture spec.

The parsing here; the capture of a fixture's values on three Go versions and both capture
paths in test_type_rules_capture.py."""
from __future__ import annotations

import pytest

from pytest_sideeye import capture
from pytest_sideeye.capture.spec import RULE_ROOT, Step, rule_expr_for
from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.plugin import hooks as plugin


def test_type_rules_parse_next_to_function_specs():
    spec = capture.parse_specs(["type:main.Order: ID, Customer.Name, Lines[0]", "main.f: x",
                                "type:*main.Box[int]", "type:main.Pair[int, map[string]int]: A"])
    assert list(spec.functions) == ["main.f"]
    assert list(spec.types) == ["main.Order", "main.Box[int]", "main.Pair[int, map[string]int]"]
    order = spec.types["main.Order"]
    assert [e.text for e in order.exprs] == ["ID", "Customer.Name", "Lines[0]"]
    assert order.exprs[1].steps == (Step("field", "Customer"), Step("field", "Name"))
    assert all(e.root == RULE_ROOT for e in order.exprs)
    assert spec.types["main.Box[int]"].exprs == ()        # the whole value; '*' dropped
    assert order.text == "type:main.Order: ID, Customer.Name, Lines[0]"


def test_a_rule_expression_on_a_variable_is_named_by_the_variable():
    rule = capture.parse_type_rule("type:main.Order: Lines[0], ID")
    e = rule_expr_for(rule, rule.exprs[0], "o")
    assert (e.text, e.root, e.rule) == ("o.Lines[0]", "o", "main.Order")
    assert e.steps == (Step("field", "Lines"), Step("index", 0))
    assert rule_expr_for(rule, None, "local").text == "local"


def test_the_dict_form_and_repeated_rules_merge():
    spec = capture.parse_specs({"type:main.Order": ["ID"], "type:main.Box": []})
    assert [e.text for e in spec.types["main.Order"].exprs] == ["ID"]
    assert spec.types["main.Box"].exprs == ()
    spec = capture.parse_specs(["type:main.Order: ID", "type:main.Order: ID, Customer"])
    assert [e.text for e in spec.types["main.Order"].exprs] == ["ID", "Customer"]
    assert bool(capture.parse_specs(["type:main.Order"]))


@pytest.mark.parametrize("bad, words", [
    ("type:", "expected type:TYPE"),
    ("type:main.Order:", "no expression after 'type:main.Order:'"),
    ("type:main.Order: *x", "bad type rule expression '*x'"),
    ("type:main.Order: ID.", "bad capture expression 'ID.'"),
    ("type:two words: x", "expected type:TYPE"),
])
def test_bad_type_rules_are_one_line_errors(bad, words):
    with pytest.raises(CaptureSpecError, match=None) as err:
        capture.parse_specs([bad])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_spec_lines_split_at_the_rules_own_colon():
    assert capture.split_spec_line("type:main.Order: ID, Customer") == \
        ("type:main.Order", ["ID", "Customer"])
    assert capture.split_spec_line("type:main.Box[int]") == ("type:main.Box[int]", [])
    assert capture.split_spec_line("main.settle: o, o.ID") == ("main.settle", ["o", "o.ID"])


def test_ini_lines_take_type_rules():
    spec = plugin.parse_capture_lines(["type:main.Order: ID", "main.f: x", "type:main.Box",
                                       "type:main.Order: Customer"])
    assert spec == {"type:main.Order": ["ID", "Customer"], "main.f": ["x"],
                    "type:main.Box": []}
    assert list(capture.parse_specs(spec).types) == ["main.Order", "main.Box"]
