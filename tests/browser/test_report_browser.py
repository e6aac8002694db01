"""The HTML report in real headless Chromium (Debian's /usr/bin/chromium through python
playwright): hostile captured strings never run, the page never touches the network, the
script's filters and sorting work under the page's own CSP, and the page reads without
JavaScript. Under CI a missing Chromium or playwright fails these tests."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from samples import (
    BAD_UTF8,
    END_SCRIPT,
    HOSTILE_FUNC,
    HOSTILE_TITLE,
    NUL,
    XSS_ATTR,
    XSS_SCRIPT,
    hostile_snapshot,
    load_bench,
    recorded,
    recorded_links,
)
from support import ROOT, missing

from pytest_sideeye import report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Records CSP violations from before the page's own code runs (init scripts are not
# subject to the page's CSP), so a blocked style or script of our own is caught.
WATCH_CSP = ("window.__csp = [];"
             "document.addEventListener('securitypolicyviolation',"
             " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        missing("Chromium is not installed at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("python playwright is not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.add_init_script(WATCH_CSP)
    pg.dialogs = []
    pg.requests = []
    pg.errors = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Report files: the recorded hang (with a monotonic reference, so wait durations
    show), a two-process synthetic load, and the hostile snapshot."""
    d = tmp_path_factory.mktemp("reports")
    real = recorded()
    real.processes[0].monotonic_ns = 86_400_000_000_000
    out = {"recorded": report.write_report(real, d / "recorded.html"),
           "synthetic": report.write_report(load_bench().synthetic_snapshot(2000, processes=2),
                                            d / "synthetic.html"),
           "hostile": report.write_report(hostile_snapshot(), d / "hostile.html"),
           "links": report.write_report(recorded_links(), d / "links.html")}
    return out


def _open(pg, path: Path) -> None:
    pg.goto(path.as_uri(), wait_until="load")


def _visible_groups(pg) -> list[str]:
    return pg.eval_on_selector_all(
        "details.group:not(.is-hidden) > summary .head", "els => els.map(e => e.textContent)")


def test_hostile_strings_do_not_run_and_show_as_text(page, reports):
    _open(page, reports["hostile"])
    page.click("#expand-all")
    page.eval_on_selector_all("details", "ds => ds.forEach(d => d.open = true)")
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.__pwned") is None
    assert page.title() == "sideeye: " + HOSTILE_TITLE
    assert page.dialogs == [] and page.errors == []
    assert page.evaluate("() => document.querySelectorAll('img, iframe, object').length") == 0
    # The one SVG is the flame graph, and the hostile function name is text in it.
    assert page.evaluate("() => document.querySelectorAll('svg').length") == 1
    assert page.evaluate("() => [...document.querySelectorAll('svg.fg *')].every("
                         "e => ['g', 'title', 'rect', 'text'].includes(e.localName))")
    titles = page.evaluate("() => [...document.querySelectorAll('svg.fg title')].map(t => t.textContent)")
    assert any(t.startswith(HOSTILE_FUNC) for t in titles), titles
    assert page.evaluate("() => document.scripts.length") == 2
    text = page.evaluate("() => document.body.innerText")
    for s in (HOSTILE_FUNC, "AssertionError: " + XSS_SCRIPT, END_SCRIPT, "svc" + XSS_ATTR,
              "serving \u2190 " + XSS_ATTR, "/x?" + END_SCRIPT, json.dumps(XSS_SCRIPT),
              '"' + END_SCRIPT + '"', '"nul\\x00byte"', "nul\u2400byte", "bad\ufffdbytes\ufffd"):
        assert s in text, s
    # The embedded snapshot parses back to the exact captured strings.
    doc = page.evaluate("() => JSON.parse(document.getElementById('sideeye-snapshot').textContent)")
    values = doc["processes"][0]["goroutines"][0]["variables"]["3"]
    by_name = {v["name"]: v["value"] for v in values}
    assert by_name["s"] == END_SCRIPT and by_name["nul"] == NUL
    assert by_name["req"]["A"] == XSS_SCRIPT
    assert json.dumps(by_name["bad"]) == json.dumps(BAD_UTF8)   # the lone surrogates survive
    assert page.evaluate("() => window.__csp") == []


def test_page_makes_no_network_request(page, reports):
    for name in ("recorded", "synthetic", "hostile"):
        page.requests.clear()
        _open(page, reports[name])
        page.click("#expand-all")
        page.fill("#f-text", "main")
        page.click("table.sortable th >> nth=1")
        page.wait_for_timeout(100)
        assert page.requests == [reports[name].as_uri()], name


def test_own_style_and_script_run_under_the_pages_csp(page, reports):
    _open(page, reports["recorded"])
    assert page.evaluate("() => window.__csp") == []
    assert page.is_visible("#controls")                      # the script un-hid it
    assert page.text_content("#f-count") == "17 goroutines in 14 groups"
    font = page.eval_on_selector("ol.stack", "e => getComputedStyle(e).fontFamily")
    assert "mono" in font.lower()                           # the stylesheet applied
    assert page.errors == []


def test_state_filter_updates_counts(page, reports):
    _open(page, reports["synthetic"])
    total = page.eval_on_selector_all("details.group", "gs => gs.length")
    page.select_option("#f-state", "sync.Mutex.Lock")
    shown = _visible_groups(page)
    assert shown == ["github.com/acme/shop/orders.(*Service).Checkout"] * 2   # per process
    mutex = sum(1 for p in load_bench().synthetic_snapshot(2000, processes=2).processes
                for g in p.goroutines if g.wait_reason == "sync.Mutex.Lock")
    assert page.text_content("#f-count") == (
        f"Showing {mutex:,} of 2,000 goroutines in 2 of {total} groups")
    counts = page.eval_on_selector_all("section.proc .pcount", "cs => cs.map(c => c.textContent)")
    assert all(c.endswith(" of 1,000") for c in counts)
    assert sum(int(c.split(" of ")[0].replace(",", "")) for c in counts) == mutex
    page.select_option("#f-state", "")
    assert len(_visible_groups(page)) == total
    assert page.text_content("#f-count") == f"2,000 goroutines in {total} groups"


def test_function_filter_matches_anywhere_on_the_stack(page, reports):
    _open(page, reports["synthetic"])
    page.fill("#f-func", "pgconn")                          # a frame deep in the stack
    shown = _visible_groups(page)
    assert shown and set(shown) == {"github.com/acme/shop/orders.(*Service).Checkout"}
    fns = page.eval_on_selector_all("details.group:not(.is-hidden) .bucket:not(.is-hidden)",
                                    "bs => bs.map(b => b.dataset.fns)")
    assert all("pgconn" in f for f in fns)
    page.fill("#f-func", "no.such.function")
    assert _visible_groups(page) == []
    assert page.text_content("#f-count").startswith("Showing 0 of 2,000")


def test_free_text_filter(page, reports):
    _open(page, reports["recorded"])
    page.fill("#f-text", "net/http.(*persistconn).readloop")   # case-insensitive
    assert _visible_groups(page) == ["net/http.(*persistConn).readLoop"]
    assert page.text_content("#f-count") == "Showing 1 of 17 goroutines in 1 of 14 groups"
    page.fill("#f-text", "")
    assert len(_visible_groups(page)) == 14


def test_a_group_expands_and_expand_collapse_all(page, reports):
    _open(page, reports["recorded"])
    closed = page.query_selector("details.group:not([open])")
    frame = closed.query_selector("ol.stack li")
    assert not frame.is_visible()
    closed.query_selector("summary").click()
    assert closed.evaluate("d => d.open") and frame.is_visible()
    page.click("#collapse-all")
    assert page.eval_on_selector_all("details.group[open]", "ds => ds.length") == 0
    page.click("#expand-all")
    assert page.eval_on_selector_all("details.group:not([open])", "ds => ds.length") == 0


def test_captured_variable_tables_sort(page, reports):
    _open(page, reports["synthetic"])
    table = page.locator("table.sortable").first
    table.scroll_into_view_if_needed()
    col = "rows => rows.map(r => Number(r.cells[1].textContent))"
    table.locator("th").nth(1).click()
    ids = table.locator("tbody tr").evaluate_all(col)
    assert ids == sorted(ids) and len(ids) > 100
    table.locator("th").nth(1).click()
    assert table.locator("tbody tr").evaluate_all(col) == sorted(ids, reverse=True)
    # Numeric, not lexicographic: o.ID column (values 10,0xx .. 12,0xx).
    table.locator("th").nth(5).click()
    vals = table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.cells[5].textContent))")
    assert vals == sorted(vals)


def test_readable_without_javascript(browser, reports):
    ctx = browser.new_context(java_script_enabled=False)
    try:
        pg = ctx.new_page()
        _open(pg, reports["recorded"])
        assert not pg.is_visible("#controls")               # no dead controls
        text = pg.text_content("body")
        for s in ("tests/test_orders.py::test_checkout_completes", "main.worker",
                  "runtime.chanrecv2", "$GOROOT/src/runtime/chan.go:511", "created by main.main",
                  "Captured variables", "orders: worker pool started"):
            assert s in text, s
        assert pg.locator("details.group").count() == 14
        assert pg.locator("details.group > summary").first.is_visible()
        pg.locator("details.group:not([open]) > summary").first.click()   # native <details>
        assert pg.locator("details.group[open]").count() == 4
        assert pg.locator("table.sortable tbody tr").count() > 0
    finally:
        ctx.close()


def test_screenshot_of_a_realistic_report(page, reports):
    """Writes sideeye-reports/report.png (gitignored) for a person to look at."""
    _open(page, reports["recorded"])
    out = ROOT / "sideeye-reports" / "report.png"
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=False)
    assert out.stat().st_size > 10_000


# Jenkins' default Content-Security-Policy for archived artifacts.
JENKINS_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'self';"


def test_readable_when_served_like_jenkins_serves_artifacts(browser, reports):
    """No script and no inline style (the server's CSP header blocks both): the page still
    reads as headings, summaries, ordered stacks and tables."""
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        body = reports["recorded"].read_bytes()
        # A routed URL is answered here, in the test: nothing goes to a network.
        pg.route("http://jenkins.invalid/**", lambda route: route.fulfill(
            status=200, body=body, headers={"Content-Type": "text/html; charset=utf-8",
                                            "Content-Security-Policy": JENKINS_CSP}))
        pg.goto("http://jenkins.invalid/job/x/1/artifact/report.html")
        assert not pg.is_visible("#controls")                       # the script did not run
        font = pg.eval_on_selector("ol.stack", "e => getComputedStyle(e).fontFamily")
        assert "mono" not in font.lower()                           # nor did the stylesheet
        assert pg.locator("h1").inner_text().startswith("sideeye snapshot")
        assert pg.locator("h2").all_inner_texts()[:2] == ["Processes", "orders pid 4242, go1.24.11 \u2014 17 goroutines"]
        first = pg.locator("details.group[open]").first
        assert "main.waiter" in first.inner_text() and "runtime.selectgo" in first.inner_text()
        assert pg.locator("table.procs td").all_inner_texts()[2] == "4242"
        out = ROOT / "sideeye-reports" / "report-no-css.png"
        out.parent.mkdir(exist_ok=True)
        pg.screenshot(path=str(out))
    finally:
        ctx.close()


def test_captured_variable_tables_filter_rows(page, reports):
    _open(page, reports["synthetic"])
    sec = page.locator("section.capture").first
    sec.scroll_into_view_if_needed()
    rows = sec.locator("tbody tr")
    total = rows.count()
    assert total > 100 and sec.locator(".tfilter").is_visible()
    first_id = rows.first.locator("td").nth(1).text_content()
    sec.locator(".rowfilter").fill(first_id)
    visible = sec.locator("tbody tr:not(.is-hidden)")
    assert 1 <= visible.count() < total
    assert all(first_id in t for t in visible.evaluate_all("rs => rs.map(r => r.textContent)"))
    assert sec.locator(".rowcount").text_content() == f"{visible.count()} of {total:,} rows"
    sec.locator(".rowfilter").fill("no such text anywhere")
    assert visible.count() == 0
    sec.locator(".rowfilter").fill("")
    assert visible.count() == total and sec.locator(".rowcount").text_content() == ""



def test_wait_chain_opens_the_goroutine_it_names(page, reports):
    """The chains head the page; a step is a link that opens the groups around that
    goroutine (closed <details> included) and marks its line; the other side's line links
    back."""
    _open(page, reports["links"])
    chains = page.eval_on_selector_all("#chains li.chain", "els => els.map(e => e.innerText)")
    assert len(chains) == 3, chains
    assert sum("[chan receive] in main.parkHandler" in c for c in chains) == 2
    assert any("GET /park?order=42" in c for c in chains)
    page.eval_on_selector_all("details", "ds => ds.forEach(d => d.open = false)")
    first = page.query_selector_all("#chains li.chain")[0]
    href = first.query_selector_all("a.golink")[-1].get_attribute("href")
    first.query_selector_all("a.golink")[-1].click()
    page.wait_for_timeout(200)
    target = page.query_selector(href)
    assert target is not None and target.is_visible()
    assert "hit" in target.get_attribute("class")
    assert "serving \u2190" in target.inner_text()
    assert page.evaluate("(id) => { let n = document.getElementById(id); let shut = 0;"
                         " for (; n; n = n.parentElement) if (n.tagName === 'DETAILS' && !n.open)"
                         " shut++; return shut; }", href[1:]) == 0
    # Back along the link: the serving line names the waiting goroutine, whose line exists.
    back = target.query_selector("a.golink").get_attribute("href")
    assert page.query_selector(back) is not None and "waiting on" in page.text_content(back)
    assert page.errors == [] and page.evaluate("() => window.__csp") == []


def test_links_table_and_chains_read_without_javascript(browser, reports):
    ctx = browser.new_context(java_script_enabled=False)
    try:
        pg = ctx.new_page()
        pg.goto(reports["links"].as_uri())
        text = pg.inner_text("body")
        assert "Wait chains" in text and "Links" in text
        rows = pg.eval_on_selector_all("#links tbody tr", "els => els.map(e => e.innerText)")
        assert len(rows) == 3 and sum(r.startswith("http") for r in rows) == 2
    finally:
        ctx.close()
