"""Type rules' values in the reports (issue 29.4): the HTML report and the SQLite file
give each rule a table, a row per value found (its frame, and the name of the value: the
variable or the path to it), a column per expression of the rule; the per-function tables
keep what a function's spec asked. Hostile strings in names and values stay text."""
from __future__ import annotations

import json
import sqlite3

from html_text import parse_html
from samples import END_SCRIPT, XSS_ATTR, XSS_SCRIPT

from pytest_sideeye import report
from pytest_sideeye.report import view, write_sqlite
from pytest_sideeye.report.embed import snapshot_from_report
from pytest_sideeye.snapshot import Frame, Goroutine, Process, Snapshot, Variable
from pytest_sideeye.snapshot.godump import parse_dump
from pytest_sideeye.snapshot.textdump import render

RULE = "main.Order"


def rule_vars(of: str, order_id: int, customer) -> list[Variable]:
    return [Variable(f"{of}.ID", "int", order_id, rule=RULE, of=of),
            Variable(f"{of}.Customer", "string", customer, rule=RULE, of=of)]


def typed_snapshot() -> Snapshot:
    gs = [Goroutine(10, "waiting", "chan receive", frames=[
              Frame("runtime.gopark", "/go/src/runtime/proc.go", 435),
              Frame("main.byPointer", "/src/main.go", 40, variables=rule_vars("o", 101, "ada"))]),
          Goroutine(11, "waiting", "chan receive", frames=[
              Frame("runtime.gopark", "/go/src/runtime/proc.go", 435),
              Frame("main.hold", "/src/main.go", 50, variables=[
                  Variable("h", "*main.Holder", {"Name": "holder"}),
                  *rule_vars("h.Ptr", 105, XSS_SCRIPT),
                  *rule_vars("h." + XSS_ATTR, 106, END_SCRIPT)])]),
          Goroutine(12, "waiting", "chan receive", frames=[
              Frame("main.box", "/src/main.go", 60, variables=[
                  Variable("b", "*main.Box[int]", {"Item": 7}, rule="main.Box" + XSS_SCRIPT,
                           of="b")])])]
    return Snapshot([Process(pid=4242, goroutines=gs)], "2026-12-06T00:00:00Z")


def test_a_rule_has_a_table_with_a_row_per_value():
    snap = typed_snapshot()
    labels = ["p"]
    [order, box] = sorted(view.rules_view(snap, labels, view.Options()),
                          key=lambda t: t["type"] != RULE)
    assert order["type"] == RULE and order["total"] == 3
    assert [c["name"] for c in order["columns"]] == ["ID", "Customer"]
    assert [(r["function"], r["of"], [c["text"] for c in r["cells"]]) for r in order["rows"]] == [
        ("main.byPointer", "o", ["101", '"ada"']),
        ("main.hold", "h.Ptr", ["105", json.dumps(XSS_SCRIPT)]),
        ("main.hold", "h." + XSS_ATTR, ["106", '"' + END_SCRIPT + '"'])]
    assert [c["name"] for c in box["columns"]] == ["(value)"]
    # The per-function tables keep the functions' own expressions only.
    tables = view.captures_view(snap, labels, view.Options())
    assert [(t["function"], [c["name"] for c in t["columns"]]) for t in tables] == \
        [("main.hold", ["h"])]


def test_rule_tables_in_the_page_escape_hostile_strings():
    page = report.render_html(typed_snapshot())
    p = parse_html(page)
    assert [t for t, _ in p.tags if t == "script"] == ["script", "script"]   # the page's own
    assert "img" not in [t for t, _ in p.tags]
    text = "".join(p.text)
    assert "Type main.Order" in " ".join(text.split())
    assert "main.Box" + XSS_SCRIPT in text                 # a hostile rule name is text
    for s in ("h." + XSS_ATTR, json.dumps(XSS_SCRIPT), '"' + END_SCRIPT + '"'):
        assert s in text, s


def test_sqlite_has_a_table_per_rule(tmp_path):
    db = sqlite3.connect(write_sqlite(typed_snapshot(), tmp_path / "t.db"))
    rows = db.execute('SELECT pid, goroutine, depth, function, "of", ID, Customer '
                      'FROM "type:main.Order" ORDER BY goroutine, "of"').fetchall()
    assert rows == [(4242, 10, 1, "main.byPointer", "o", "101", '"ada"'),
                    (4242, 11, 1, "main.hold", "h." + XSS_ATTR, "106", json.dumps(END_SCRIPT)),
                    (4242, 11, 1, "main.hold", "h.Ptr", "105", json.dumps(XSS_SCRIPT))]
    assert db.execute('SELECT "of", value FROM "type:main.Box' + XSS_SCRIPT.replace('"', '""')
                      + '"').fetchall() == [("b", '{"Item":7}')]
    assert db.execute('SELECT h FROM "main.hold"').fetchall() == [('{"Name":"holder"}',)]
    assert [c[1] for c in db.execute('PRAGMA table_info("main.hold")')] == \
        ["pid", "goroutine", "depth", "h"]
    assert db.execute("SELECT count(*) FROM variables WHERE rule = 'main.Order' "
                      "AND \"of\" = 'h.Ptr'").fetchone() == (2,)


def test_rule_marks_round_trip_in_the_json():
    snap = typed_snapshot()
    back = Snapshot.from_json(json.loads(snap.dumps()))
    v = back.processes[0].goroutines[1].frames[1].variables[1]
    assert (v.name, v.rule, v.of) == ("h.Ptr.ID", RULE, "h.Ptr")
    assert back.processes[0].goroutines[1].frames[1].variables[0].rule is None
    assert "rule" not in snap.processes[0].goroutines[1].frames[1].variables[0].to_json()


def test_rule_marks_survive_the_report_embedding():
    """`sideeye report THIS.html` reads the snapshot back from the page: a rule's values
    keep their marks (the embedding's values-only shortcut has no room for them)."""
    snap = typed_snapshot()
    back = snapshot_from_report(report.render_html(snap))
    assert back.to_json() == snap.to_json()


def test_the_text_lists_each_rules_values_after_the_goroutines():
    snap = typed_snapshot()
    snap.processes[0].goroutines[2].frames[0].variables[0].rule = "main.Box\ngoroutine 99 [x]:"
    text = render(snap)
    tail = text[text.index("# type "):].splitlines()
    assert tail == [
        "# type main.Box\\ngoroutine 99 [x]:: 1 value",      # one line, whatever its name
        "#   pid 4242 goroutine 12 main.box b: {\"Item\":7}",
        "# type main.Order: 3 values",
        "#   pid 4242 goroutine 10 main.byPointer o: ID = 101, Customer = \"ada\"",
        "#   pid 4242 goroutine 11 main.hold h.Ptr: ID = 105, Customer = "
        + json.dumps(XSS_SCRIPT, ensure_ascii=False),
        "#   pid 4242 goroutine 11 main.hold h." + XSS_ATTR + ": ID = 106, Customer = "
        + json.dumps(END_SCRIPT, ensure_ascii=False)]
    # A debug=2 reader sees the same goroutines as without the sections.
    assert [g.id for g in parse_dump(text)] == [10, 11, 12]
