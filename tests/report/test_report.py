"""The HTML report and the stack buckets, without a browser (see test_report_browser.py).

Data: a snapshot recorded from a real Go 1.24 program (tests/data/snapshots/, converted
from its GOTRACEBACK=all dump), synthetic snapshots built from the same frames
(benchmarks/report_bench.py), and a hostile snapshot whose every captured string tries to
break out of the page.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from html_text import parse_html
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import (  # noqa: F401
    BAD_UTF8,
    COMMENT,
    END_SCRIPT,
    HOSTILE_FUNC,
    HOSTILE_TITLE,
    LINE_SEPS,
    NUL,
    RECORDED,
    REPLACED,
    ROOT,
    XSS_ATTR,
    XSS_SCRIPT,
    XSS_SQUOTE,
    hostile_snapshot,
    load_bench,
    recorded,
)

from pytest_sideeye import report
from pytest_sideeye.cli.main import main as sideeye
from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.report import view
from pytest_sideeye.snapshot import buckets as bk
from pytest_sideeye.snapshot.model import (
    Container,
    CreatedBy,
    Frame,
    Goroutine,
    Process,
    Snapshot,
    Variable,
)

# --------------------------------------------------------------------------- buckets

@pytest.mark.parametrize("function,file,expected", [
    ("main.main", "/src/main.go", bk.MAIN),
    ("main.(*Pool).worker.func1", "/src/pool.go", bk.MAIN),
    ("runtime.gopark", "/go/src/runtime/proc.go", bk.RUNTIME),
    ("internal/runtime/syscall.Syscall6", "/go/src/internal/runtime/syscall/asm.s", bk.RUNTIME),
    ("net/http.(*conn).serve", "/go/src/net/http/server.go", bk.STDLIB),
    ("sync.(*Mutex).Lock", "/go/src/sync/mutex.go", bk.STDLIB),
    ("internal/poll.(*FD).Read", "/go/src/internal/poll/fd_unix.go", bk.STDLIB),
    ("github.com/acme/shop/orders.(*Service).Checkout", "/src/shop/orders/service.go", bk.USER),
    ("github.com/jackc/pgx/v5.(*Conn).Query",
     "/root/go/pkg/mod/github.com/jackc/pgx/v5@v5.7.2/conn.go", bk.DEPENDENCY),
    ("gopkg.in/yaml%2ev3.Unmarshal", "/src/vendor/gopkg.in/yaml.v3/yaml.go", bk.DEPENDENCY),
])
def test_origin_of_a_frame(function, file, expected):
    assert bk.origin(function, file) == expected


@pytest.mark.parametrize("function,path", [
    ("net/http.(*conn).serve", "net/http"),
    ("github.com/x/y.(*T).M", "github.com/x/y"),
    ("main.main.func1", "main"),
    ("runtime.gopark", "runtime"),
    ("example.com/a/b.v2.F", "example.com/a/b"),
])
def test_package_path(function, path):
    assert bk.package_path(function) == path


def _g(gid, frames, status="waiting", reason="chan receive", values=None):
    fs = [Frame(f, file, line) for f, file, line in frames]
    if values is not None:
        fs[-1].variables = [Variable("x", "int", values)]
    return Goroutine(gid, status, reason, None, None, fs)


WORKER_AT_22 = [("runtime.gopark", "/go/src/runtime/proc.go", 435),
                ("runtime.chanrecv2", "/go/src/runtime/chan.go", 511),
                ("main.worker", "/src/main.go", 22)]
WORKER_AT_31 = WORKER_AT_22[:2] + [("main.worker", "/src/main.go", 31)]
HTTP_IDLE = [("runtime.gopark", "/go/src/runtime/proc.go", 435),
             ("net/http.(*conn).serve", "/go/src/net/http/server.go", 2137)]
GC_WORKER = [("runtime.gopark", "/go/src/runtime/proc.go", 435),
             ("runtime.gcBgMarkWorker", "/go/src/runtime/mgc.go", 1423)]


def test_flame_graph_merges_stacks_from_their_roots():
    from pytest_sideeye.report import flamegraph
    gs = [_g(1, WORKER_AT_22), _g(2, WORKER_AT_31), _g(3, HTTP_IDLE), _g(4, GC_WORKER)]
    bars, height = flamegraph.layout(flamegraph.merge(gs), width=400)
    by_name = {}
    for b in bars:
        by_name.setdefault(b.title.split(" \u2014 ")[0], []).append(b)
    assert by_name["all goroutines"][0].w == 400 and height == 4 * flamegraph.ROW
    # Roots first: the two workers share main.worker -> chanrecv2 -> gopark (lines differ,
    # functions do not), so main.worker is one bar half as wide as everything.
    [worker] = by_name["main.worker"]
    assert (worker.y, worker.w, worker.origin) == (flamegraph.ROW, 200, "main")
    assert "2 goroutines (50%)" in worker.title
    # runtime.gopark ends three stacks: under main.worker, under serve and under the GC.
    assert sorted(b.w for b in by_name["runtime.gopark"]) == [100, 100, 200]
    assert all(b.origin == "runtime" for b in by_name["runtime.gopark"])
    # Children sit inside their parent, left to right by name.
    [serve] = by_name["net/http.(*conn).serve"]
    assert serve.origin == "stdlib" and serve.x == worker.x + worker.w
    assert flamegraph.layout(flamegraph.merge([]))[0] == []


def test_flame_graph_leaves_out_what_is_too_narrow_to_see():
    from pytest_sideeye.report import flamegraph
    gs = [_g(i, WORKER_AT_22) for i in range(1, 2001)] + [_g(9999, GC_WORKER)]
    bars, _h = flamegraph.layout(flamegraph.merge(gs))
    names = {b.title.split(" \u2014 ")[0] for b in bars}
    assert "main.worker" in names and "runtime.gcBgMarkWorker" not in names
    assert all(b.w >= flamegraph.MIN_WIDTH for b in bars)


def test_buckets_group_identical_stacks_ignoring_variable_values():
    gs = [_g(i, WORKER_AT_22, values=i) for i in range(1, 6)] + [_g(9, WORKER_AT_31, values=0)]
    bs = bk.bucketize(gs)
    assert [b.count for b in bs] == [5, 1]
    assert bs[0].ids() == [1, 2, 3, 4, 5]
    assert bs[0].key == tuple(WORKER_AT_22)


def test_groups_merge_stacks_that_differ_only_in_lines():
    gs = [_g(i, WORKER_AT_22) for i in range(3)] + [_g(10 + i, WORKER_AT_31) for i in range(2)]
    groups = bk.group(gs)
    assert len(groups) == 1
    assert groups[0].count == 5
    assert [b.count for b in groups[0].buckets] == [3, 2]


def test_groups_ordered_user_code_first_then_stdlib_then_runtime_biggest_first():
    gs = ([_g(100 + i, GC_WORKER, reason="GC worker (idle)") for i in range(50)]
          + [_g(200 + i, HTTP_IDLE, reason="IO wait") for i in range(20)]
          + [_g(1, WORKER_AT_22)]
          + [_g(300 + i, [("runtime.gopark", "/go/src/runtime/proc.go", 435),
                          ("github.com/acme/x.Run", "/src/x/run.go", 9)]) for i in range(4)])
    order = [(gr.tier, gr.count) for gr in bk.group(gs)]
    assert order == [(bk.TIER_USER, 4), (bk.TIER_USER, 1), (bk.TIER_STDLIB, 20),
                     (bk.TIER_RUNTIME, 50)]


def test_within_a_tier_goroutines_blocked_on_synchronisation_come_first():
    """In a hang the goroutines stuck on a lock or a channel are the story: a bigger group
    idling in IO (an accept loop, keep-alive reads) must not push them down the page."""
    idle_io = [("runtime.gopark", "/go/src/runtime/proc.go", 435),
               ("main.serve", "/src/main.go", 40)]
    locked = [("runtime.gopark", "/go/src/runtime/proc.go", 435),
              ("sync.(*Mutex).Lock", "/go/src/sync/mutex.go", 46),
              ("main.(*service).cancel", "/src/main.go", 88)]
    gs = ([_g(10 + i, idle_io, reason="IO wait") for i in range(30)]
          + [_g(1, locked, reason="sync.Mutex.Lock"), _g(2, locked, reason="sync.Mutex.Lock")])
    order = [(gr.functions[-1], gr.count) for gr in bk.group(gs)]
    assert order == [("main.(*service).cancel", 2), ("main.serve", 30)]


def test_bucket_states_and_wait_since():
    gs = [_g(1, WORKER_AT_22), _g(2, WORKER_AT_22, status="runnable", reason=""),
          _g(3, WORKER_AT_22)]
    gs[0].wait_since_ns, gs[2].wait_since_ns = 5, 0   # 0 is "unknown" in the runtime
    b = bk.bucketize(gs)[0]
    assert b.states() == {"chan receive": 2, "runnable": 1}
    assert b.wait_since() == [5]


def test_headline_frame_prefers_the_users_code():
    frames = [Frame(f, file, line) for f, file, line in WORKER_AT_22]
    assert bk.headline_frame(frames).function == "main.worker"
    http = [Frame(f, file, line) for f, file, line in HTTP_IDLE]
    assert bk.headline_frame(http).function == "net/http.(*conn).serve"
    assert bk.headline_frame([]) is None
    serve = [Frame(f, "/go/src/x.go", 1) for f in (
        "runtime.gopark", "internal/poll.runtime_pollWait", "net.(*conn).Read",
        "bufio.(*Reader).Peek", "net/http.(*conn).serve", "net/http.(*Server).Serve.gowrap3",
        "runtime.goexit")]
    assert bk.headline_frame(serve).function == "net/http.(*conn).serve"
    sweep = [Frame(f, "/go/src/runtime/x.go", 1) for f in (
        "runtime.gopark", "runtime.bgsweep", "runtime.gcenable.gowrap1", "runtime.goexit")]
    assert bk.headline_frame(sweep).function == "runtime.bgsweep"
    driver = [Frame("runtime.gopark", "/go/src/runtime/proc.go", 435),
              Frame("github.com/jackc/pgx/v5.(*Conn).Query", "/go/pkg/mod/github.com/jackc/pgx/v5@v5.7.2/conn.go", 761),
              Frame("github.com/acme/shop/orders.(*Service).Checkout", "/src/orders/service.go", 9)]
    assert bk.headline_frame(driver).function.endswith("(*Service).Checkout")
    assert bk.headline_frame(driver[:2]).function.endswith("(*Conn).Query")


# --------------------------------------------------------------------------- formatting

def test_go_quote_escapes_quotes_controls_and_invalid_bytes():
    assert view.go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert view.go_quote("x\n\t\x00\x7f") == '"x\\n\\t\\x00\\x7f"'
    assert view.go_quote(BAD_UTF8) == '"bad\\xffbytes\\x80"'
    assert view.go_quote("\ud800") == '"\\ud800"'
    assert view.go_quote(LINE_SEPS) == '"line\\u2028sep\\u2029para"'


def test_format_value_reads_like_go():
    assert view.format_value(None) == "nil"
    assert view.format_value({"ID": 1, "Name": "a", "Tags": []}, "main.Job") == \
        '{ID: 1, Name: "a", Tags: []}'
    assert view.format_value({"k": 1}, "map[string]int") == 'map["k": 1]'
    assert view.format_value([True, 2.5], "[]any") == "[true, 2.5]"
    long = {"Items": [{"SKU": f"SKU-{i:03d}", "Qty": i} for i in range(6)], "Owner": "x" * 10}
    text = view.format_value(long, "*orders.Order")
    assert text.splitlines()[0] == "{"
    assert '    {SKU: "SKU-000", Qty: 0},' in text.splitlines()
    assert text.endswith("}")


def test_struct_keys_that_are_not_identifiers_are_quoted():
    assert view.format_value({'x"><b>': 1}, "T") == '{"x\\"><b>": 1}'


def test_fmt_ids_compresses_ranges_and_caps():
    assert view.fmt_ids([1, 2, 3, 7, 9, 10]) == "1\u20133, 7, 9\u201310"
    ids = list(range(0, 200, 2))
    assert view.fmt_ids(ids, 3) == "0, 2, 4 \u2026 +97 more"


@pytest.mark.parametrize("ns,text", [(400_000, "0.40 ms"), (12_000_000, "12 ms"),
                                     (9_040_000_000, "9.0 s"), (125 * 10**9, "2m05s"),
                                     (3 * 3600 * 10**9 + 60 * 10**9, "3h01m")])
def test_fmt_duration(ns, text):
    assert view.fmt_duration(ns) == text


def test_clean_makes_controls_and_surrogates_visible():
    assert view.clean(NUL) == "nul\u2400byte"
    assert view.clean(BAD_UTF8) == "bad\ufffdbytes\ufffd"
    assert view.clean("a\tb\nc") == "a\tb\nc"
    assert view.clean(None) == ""


# --------------------------------------------------------------------------- the page

def test_report_of_a_recorded_hang_shows_test_processes_and_groups():
    page = report.render_html(recorded())
    p = parse_html(page)
    text = "".join(p.text)
    assert "tests/test_orders.py::test_checkout_completes" in text
    assert "Timeout (>10.0s) from pytest-timeout." in text
    assert "failed" in text and "2026-11-26T10:40:00.000Z" in text
    # Process table: service, container, image, pid, Go version, goroutines, pause.
    row = re.search(r'<table class="procs">.*?</table>', page, re.S).group(0)
    for cell in ("orders", "sideeye-orders-1", "sideeye/orders:test", "4242", "go1.24.11",
                 ">17<", "0.61"):
        assert cell in row
    # User-code groups come first, runtime-only ones last.
    heads = re.findall(r'<details class="group t-(\w+)"', page)
    assert heads[0] == "user" and heads[-1] == "runtime"
    assert heads == sorted(heads, key=["user", "stdlib", "runtime"].index)
    summaries = re.findall(r'<code class="head">(.*?)</code>', page)
    assert summaries[0] == "main.waiter"         # 3 goroutines: the biggest user group
    assert "3 goroutines" not in summaries
    assert "goroutines 27\u201329" in text
    assert "created by main.main at /tmp/hang/main.go:50 in goroutine 1" in " ".join(text.split())
    # Frames: origin classes, inlined marks, shortened GOROOT paths (full path in title).
    assert '<li class="f o-main"><code class="fn"><strong>main.waiter</strong></code> <span class="inl">[inlined]</span>' in page
    assert 'title="/opt/sideeye/toolchains/go1.24.11/go/src/runtime/proc.go:435">$GOROOT/src/runtime/proc.go:435<' in page
    # Captured variables inline, and the per-function table.
    assert '<code class="vn">j</code> <span class="ty">main.Job</span> = <code class="vp">{ID: 1, Name: &#34;a&#34;, Tags: []}</code>' in page
    assert "&lt;unavailable at this PC&gt;" in page
    assert "orders: worker pool started (4 workers)" in text
    assert "Container logs (3 lines)" in text


def test_wait_durations_need_a_monotonic_reference():
    snap = recorded()
    page = report.render_html(snap)
    assert "Wait durations unknown" in page and "\u2265" not in page
    # The proposed engine field: CLOCK_MONOTONIC at the pause.
    snap.processes[0].monotonic_ns = 86_400_000_000_000
    page = report.render_html(snap)
    assert "Wait durations unknown" not in page
    # Goroutine 22 parked 9 s - 22 ms before the pause, 27-29 9 s - 27..29 ms.
    assert '<span class="wait">blocked \u2265 9.0 s</span>' in page


def test_captured_variable_tables_have_a_row_per_frame_and_a_column_per_expression():
    bench = load_bench()
    snap = bench.synthetic_snapshot(600, processes=2)
    frames = [(g, f) for p in snap.processes for g in p.goroutines for f in g.frames
              if f.function.endswith("(*Service).Checkout")]
    page = report.render_html(snap)
    section = re.search(r'<section class="capture" id="c\w+">\n<h3><code>github.com/acme/shop/'
                        r'orders.\(\*Service\).Checkout</code>.*?</section>', page, re.S).group(0)
    rows = re.findall(r"<tr><td>(orders-\d) \(\d+\)</td><td class=\"num\">(\d+)</td>", section)
    assert len(rows) == len(frames) > 100
    assert {r[0] for r in rows} == {"orders-1", "orders-2"}
    heads = re.findall(r'<th scope="col"><code>(.*?)</code>', section)
    assert heads == ["o", "o.ID", "s.mu.state"]


def test_captured_variable_tables_are_capped_but_say_so():
    snap = load_bench().synthetic_snapshot(400)
    page = report.render_html(snap, max_table_rows=10)
    assert re.search(r"\(\d+ frames, the first 10 shown; all are in the embedded JSON\)", page)


def test_inline_variables_show_distinct_value_sets_with_their_goroutines():
    gs = [_g(i, WORKER_AT_22, values=i % 2) for i in range(1, 8)]
    page = report.render_html(Snapshot([Process(1, goroutines=gs)]))
    assert "goroutines 1, 3, 5, 7:" in page and "goroutines 2, 4, 6:" in page
    gs = [_g(i, WORKER_AT_22, values=42) for i in range(1, 4)]
    page = report.render_html(Snapshot([Process(1, goroutines=gs)]))
    assert '<code class="vp">42</code>' in page and "goroutines 1\u20133:" not in page


def test_csp_forbids_network_and_pins_the_inline_style_and_script_by_hash():
    page = report.render_html(recorded())
    csp = next(attrs["content"] for tag, attrs in parse_html(page).tags
               if attrs.get("http-equiv") == "Content-Security-Policy")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for tag in ("style", "script"):
        body = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert len(body) == 1
        digest = base64.b64encode(hashlib.sha256(body[0].encode()).digest()).decode()
        assert directives[f"{tag}-src"] == f"'sha256-{digest}'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_page_references_nothing_outside_itself():
    page = report.render_html(load_bench().synthetic_snapshot(300))
    tags = parse_html(page).tags
    for tag, attrs in tags:
        assert "src" not in attrs, tag
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)
    assert not re.search(r"url\(|@import|https?://", page)
    assert not any(k.startswith("on") for _, attrs in tags for k in attrs)
    assert not any("style" in attrs for _, attrs in tags)   # inline style attrs break CSP


def test_hostile_strings_are_escaped_and_show_as_text():
    snap = hostile_snapshot()
    page = report.render_html(snap)
    page.encode("utf-8")                        # no lone surrogates left anywhere
    p = parse_html(page)
    assert [t for t, _ in p.tags if t == "script"] == ["script", "script"]
    assert [t for t, _ in p.tags if t in ("img", "b", "i")] == []
    # The only SVGs are the flame graphs (one per process with goroutines), made of our
    # own elements: hostile names are their text and tooltips.
    assert [t for t, _ in p.tags if t == "svg"] == ["svg"] * sum(1 for q in snap.processes
                                                                if q.goroutines)
    assert {t for t, _ in p.tags} & {"foreignobject", "use", "image", "iframe"} == set()
    assert "<!--" not in page
    assert not any(k.startswith("on") for _, attrs in p.tags for k in attrs)
    text = "".join(p.text)
    # Free text shows exactly (controls made visible, invalid bytes as U+FFFD).
    for s in (HOSTILE_FUNC, HOSTILE_TITLE, "error: " + XSS_SCRIPT, "AssertionError: " + XSS_SCRIPT,
              END_SCRIPT, COMMENT, "name" + XSS_SCRIPT, "img" + END_SCRIPT, "svc" + XSS_ATTR,
              "chan receive" + XSS_SQUOTE, "/src/" + XSS_ATTR + ".go:12", "nul\u2400byte",
              "bad\ufffdbytes\ufffd"):
        assert s in text, s
    # Captured values show Go-quoted: exact and unambiguous.
    for s in ('"' + END_SCRIPT + '"', '"nul\\x00byte"', '"bad\\xffbytes\\x80" \u2026(truncated)',
              '"line\\u2028sep\\u2029para"', '"repl\ufffdchar"', '"\\"><img src=x onerror=\\"window.__pwned=2;alert(2)\\">": ',
              "<unavailable at this PC>", "<error: " + XSS_SCRIPT + ">"):
        assert s in text, s


def test_embedded_snapshot_is_inert_and_round_trips_exactly():
    snap = hostile_snapshot()
    page = report.render_html(snap)
    raw = re.search(r'<script type="application/json" id="sideeye-snapshot">(.*?)</script>',
                    page, re.S).group(1)
    assert not set(raw) & {"<", ">", "&", "\u2028", "\u2029"}
    assert not re.search(r"[\ud800-\udfff]", raw)
    assert report.snapshot_from_report(page).to_json() == snap.to_json()
    real = recorded()
    assert report.snapshot_from_report(report.render_html(real)).to_json() == real.to_json()


def test_the_embedded_snapshot_keeps_the_settings_it_was_taken_with():
    snap = recorded()
    snap.settings = {"SIDEEYE_CAPTURE_PAUSE_MS": 2.5, "SIDEEYE_LINKS": False}
    again = report.snapshot_from_report(report.render_html(snap))
    assert again.settings == snap.settings and again.to_json() == snap.to_json()


ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(function=ANY_TEXT, text=ANY_TEXT, value=JSON_VALUES, type_=ANY_TEXT)
def test_any_captured_text_stays_text_and_round_trips(function, text, value, type_):
    frames = [Frame("runtime.gopark", "/go/src/runtime/proc.go", 435),
              Frame(function, text, 7, variables=[Variable(text, type_, value)])]
    g = Goroutine(1, "waiting", text, None, CreatedBy(function, text, 1, None), frames)
    snap = Snapshot([Process(1, text, text, Container(text, text, text), text, 1, {}, text,
                             [text], [g], text)], text,
                    {"nodeid": text, "phase": "call", "outcome": text, "message": text})
    page = report.render_html(snap)
    page.encode("utf-8")
    p = parse_html(page)
    assert [t for t, _ in p.tags if t in ("script", "style")] == ["style", "script", "script"]
    assert not any(k.startswith("on") for _, attrs in p.tags for k in attrs)
    assert report.snapshot_from_report(page).to_json() == snap.to_json()


def test_edge_cases_render():
    empty = report.render_html(Snapshot())
    assert "0 in 0 processes" in empty and "No variables were captured." in empty
    failed = Process(77, error="cannot read memory: process exited", goroutines=[])
    odd = Goroutine(5, "running", "", None, None, [], thread=4711, truncated="depth limit")
    page = report.render_html(Snapshot([failed, Process(78, goroutines=[odd])]))
    assert "Error: cannot read memory: process exited" in page
    assert "(no stack)" in page and "on thread 4711" in page
    assert "stack cut short: depth limit" in page


def test_ten_thousand_goroutines_fit_in_three_megabytes():
    page = report.render_html(load_bench().synthetic_snapshot(10_000))
    size = len(page.encode("utf-8"))
    assert size <= 3_000_000, size
    assert page.count('<details class="group') < 30


@pytest.mark.slow
def test_one_hundred_thousand_goroutines_still_render():
    snap = load_bench().synthetic_snapshot(100_000)
    page = report.render_html(snap)
    assert ">100,000</span> goroutines" in page
    raw = re.search(r'<script type="application/json" id="sideeye-snapshot">(.*?)</script>',
                    page, re.S).group(1)
    assert len(json.loads(raw)["processes"][0]["goroutines"]) == 100_000


# --------------------------------------------------------------------------- files and CLI

def test_write_report_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "out" / "report.html"
    assert report.write_report(recorded(), target) == target
    first = target.read_text("utf-8")
    report.write_report(hostile_snapshot(), target)
    assert target.read_text("utf-8") != first
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


@pytest.mark.parametrize("make_path", [
    lambda tmp: tmp / "a-file" / "report.html",     # parent is a regular file
    lambda tmp: tmp,                                # the target is a directory
])
def test_unwritable_report_path_is_one_line_error(tmp_path, make_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SideeyeError) as e:
        report.write_report(recorded(), make_path(tmp_path))
    assert "\n" not in str(e.value) and "cannot write report" in str(e.value)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sideeye_report_writes_the_page(tmp_path, capsys):
    src = tmp_path / "snap.json"
    src.write_text(RECORDED.read_text())
    assert sideeye(["report", str(src)]) == 0
    assert (tmp_path / "snap.html").exists()
    out = tmp_path / "x" / "r.html"
    assert sideeye(["report", str(src), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("r.html")
    # A report is accepted as input too: its embedded snapshot is read back.
    again = tmp_path / "again.html"
    assert sideeye(["report", str(out), "-o", str(again)]) == 0
    assert report.snapshot_from_report(again.read_text()).to_json() == recorded().to_json()


@pytest.mark.parametrize("content,message", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ('{"format": "other/v9"}', "is not a sideeye.snapshot/v1 snapshot"),
    ("<html><body>hello</body></html>", "not a sideeye report"),
])
def test_sideeye_report_errors_are_one_line(tmp_path, capsys, content, message):
    src = tmp_path / "in.json"
    if content is not None:
        src.write_text(content)
    assert sideeye(["report", str(src), "-o", str(tmp_path / "o.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.html").exists()
