"""Type rules in real snapshots (issue 29): the fixture `typerules` holds main.Order values
in a pointer parameter, a local value, a closure's local, generic instances of main.Box,
and behind a pointer, an interface and a slice of another captured value. On three Go
versions and both capture paths (in BPF during the pause, or the Python rounds), every
one is found and its values are what the program itself printed."""
from __future__ import annotations

import json
import sqlite3
import time

import markupsafe
import pytest
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye import engine, report
from pytest_sideeye.report import view, write_sqlite

pytestmark = pytest.mark.usefixtures("needs_root")

SPEC = ["type:main.Order: ID, Customer", "main.hold: h", "type:main.Box"]


def printed_values(app, timeout: float = 30.0) -> dict:
    """The `VALUES <json>` line the fixture prints after READY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(app.output):
            if line.startswith("VALUES "):
                return json.loads(line[len("VALUES "):])
        time.sleep(0.02)
    raise AssertionError(f"no VALUES line from the fixture: {app.output[:3]}")


def rule_rows(snap, rule: str) -> list[tuple[tuple[str, str], dict]]:
    """((function, of), {expression relative to the value: value}) per value of one rule,
    sorted."""
    rows = []
    for g in snap.processes[0].goroutines:
        for f in g.frames:
            mine: dict[str, dict] = {}
            for v in f.variables:
                if v.rule != rule:
                    continue
                assert v.available and not v.error, (f.function, v)
                rel = v.name[len(v.of):].lstrip(".") or "(value)"
                mine.setdefault(v.of, {})[rel] = v.value
            rows += [((f.function, of), values) for of, values in mine.items()]
    return sorted(rows, key=json.dumps)


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("bpf_capture", ["1", "0"])
def test_a_type_rule_finds_every_value_of_its_type(go_build, version, bpf_capture,
                                                   monkeypatch):
    exe = go_build("typerules", version)
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    # What is under test is what is found, not the pause budget of a loaded machine.
    monkeypatch.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "500")
    with start_app(exe) as app:
        printed = printed_values(app)
        snap = engine.take_snapshot([app.pid], capture=SPEC)
    assert snap.processes[0].error is None
    orders, boxes = printed["orders"], printed["boxes"]
    want = {("main.byPointer", "o"): orders[0],          # a pointer parameter
            ("main.byValue", "o"): orders[1],            # a local value
            ("main.start.func1", "local"): orders[2],    # an unnamed function's local
            ("main.hold", "h.Ptr"): orders[4],           # reached through a pointer field
            ("main.hold", "h.Any"): orders[5],           # ... behind an interface
            ("main.hold", "h.Many[0]"): orders[6]}       # ... in a slice
    assert rule_rows(snap, "main.Order") == sorted(
        ((k, {"ID": o["ID"], "Customer": o["Customer"]}) for k, o in want.items()),
        key=json.dumps)
    # main.Box without type arguments: every instantiation, the generic function's shape
    # instances (one frame each) and a Box[int] behind an interface.
    got = rule_rows(snap, "main.Box")
    assert sorted(k for k, _v in got) == [("main.hold", "h.Boxed"), ("main.keepBox[...]", "b"),
                                          ("main.keepBox[...]", "b")]
    assert sorted((v["(value)"] for _k, v in got), key=json.dumps) == \
        sorted(boxes, key=json.dumps)
    # The function spec's own variable is there, unmarked.
    [(_g, hold)] = snap.frames("main.hold")
    assert [(v.name, v.rule) for v in hold.variables][0] == ("h", None)


def test_the_reports_show_a_rules_values_with_hostile_strings_escaped(go_build, tmp_path):
    """The fixture's order 102 has a customer made to break a page (a script tag, an
    entity, a bidi override, an escape sequence, a NUL): the report's per-type table shows
    it as text, the SQLite per-type table holds it exactly."""
    with start_app(go_build("typerules", GO_VERSIONS[-1])) as app:
        hostile = printed_values(app)["orders"][1]["Customer"]
        snap = engine.take_snapshot([app.pid], capture=["type:main.Order: ID, Customer"])
    assert "<script>" in hostile
    page = report.render_html(snap)
    assert page.count("<script") == 2        # the page's own: the data and the enhancer
    [table] = [t for t in view.rules_view(snap, ["p"], view.Options())
               if t["type"] == "main.Order"]
    cells = {r["of"] + "@" + r["function"]: [c["text"] for c in r["cells"]]
             for r in table["rows"]}
    # Go-quoted, as strconv.Quote would: quotes, controls and the bidi override escaped.
    want = '"<script>alert(\\"o\\")</script>&amp;\\u202e\\x1b[31m\\x00end"'
    assert cells["o@main.byValue"] == ["102", want]
    assert str(markupsafe.escape(want)) in page
    db = sqlite3.connect(write_sqlite(snap, tmp_path / "t.db"))
    [(text,)] = db.execute('SELECT Customer FROM "type:main.Order" '
                           "WHERE function = 'main.byValue'").fetchall()
    assert json.loads(text) == hostile    # (json_extract would stop at its NUL)
