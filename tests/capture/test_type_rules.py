"""Type rules (issue 29): `type:TYPE: EXPR, EXPR` or `type:TYPE` in a capture spec.

The parsing here; the capture of a fixture's values on three Go versions and both capture
paths in test_type_rules_capture.py."""
from __future__ import annotations

import pytest

from pytest_sideeye import capture
from pytest_sideeye.capture.spec import RULE_ROOT, Step, rule_expr_for
from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.plugin import specs


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
    spec = specs.parse_capture_lines(["type:main.Order: ID", "main.f: x", "type:main.Box",
                                       "type:main.Order: Customer"])
    assert spec == {"type:main.Order": ["ID", "Customer"], "main.f": ["x"],
                    "type:main.Box": []}
    assert list(capture.parse_specs(spec).types) == ["main.Order", "main.Box"]


# --- matching types, and finding values in decoded ones (reach.py) ----------------------

def test_a_type_matches_itself_and_a_generic_name_every_instantiation():
    from pytest_sideeye.capture.typerules import matches
    assert matches("main.Order", "main.Order")
    assert not matches("main.Order", "main.OrderLine")
    assert matches("main.Box", "main.Box[int]")
    assert matches("main.Box", "main.Box[go.shape.struct { ID int }]")
    assert matches("main.Box[int]", "main.Box[int]")
    assert not matches("main.Box[int]", "main.Box[go.shape.int]")
    assert not matches("main.Box", "main.Boxes[int]")


def _types():
    from pytest_sideeye.binary import GoType
    from pytest_sideeye.binary.dwarf import Field
    int_t = GoType(1, "int", "int", 8)
    str_t = GoType(2, "string", "string", 16)
    order = GoType(3, "main.Order", "struct", 24,
                   fields=[Field("ID", 0, int_t), Field("Customer", 8, str_t)])
    ptr = GoType(4, "*main.Order", "ptr", 8, elem=order)
    eface = GoType(5, "interface {}", "eface", 16)
    by_id = GoType(6, "map[int]*main.Order", "map", 8, key=int_t, elem=ptr)
    holder = GoType(7, "main.Holder", "struct", 40,
                    fields=[Field("Any", 0, eface), Field("ByID", 16, by_id),
                            Field("Self", 24, ptr)])
    return order, ptr, eface, holder


def test_values_of_a_rule_are_found_behind_interfaces_and_in_maps():
    from pytest_sideeye.capture import reach
    order, ptr, _eface, holder = _types()
    rule = capture.parse_type_rule("type:main.Order: ID, Customer")
    boxed = {"ID": 1, "Customer": "in any"}
    value = {"Any": boxed, "ByID": [[7, {"ID": 7, "Customer": "seven"}]],
             "Self": {"$ptr": "0x10", "$cut": "depth"}}
    got = reach.reached_variables(holder, value, "h", [rule], {id(boxed): ptr}, skip=None)
    assert [(v.name, v.value, v.of, v.rule) for v in got] == [
        ("h.Any.ID", 1, "h.Any", "main.Order"),
        ("h.Any.Customer", "in any", "h.Any", "main.Order"),
        ("h.ByID[7].ID", 7, "h.ByID[7]", "main.Order"),
        ("h.ByID[7].Customer", "seven", "h.ByID[7]", "main.Order")]
    # An interface whose dynamic type was not seen, and a cut pointer, lead nowhere.
    assert reach.reached_variables(holder, value, "h", [rule], {}, skip=None)[0].of == "h.ByID[7]"


def test_a_rules_own_value_is_not_found_again_and_bad_steps_are_errors():
    from pytest_sideeye.capture import reach
    order, ptr, _eface, _holder = _types()
    whole = capture.parse_type_rule("type:main.Order")
    assert reach.reached_variables(ptr, {"ID": 1, "Customer": "x"}, "o", [whole], {},
                                   skip="main.Order") == []
    bad = capture.parse_type_rule("type:main.Order: Customer[9]")
    [v] = reach.reached_variables(order, {"ID": 1, "Customer": "x"}, "o", [bad], {},
                                  skip=None)
    assert (v.name, v.error, v.rule) == ("o.Customer[9]", "cannot index a string",
                                         "main.Order")
