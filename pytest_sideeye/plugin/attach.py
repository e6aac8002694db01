"""Attachment stage of the pytest plugin: write a snapshot's files (HTML, JSON, text) and hang
their paths on everything that shows a test result: junit properties and ATTACHMENT lines,
pytest-html links, report sections, the terminal summary.

Only paths and plain data go on reports, because pytest-xdist serialises report attributes
from its workers to the controller.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_sideeye.errors import one_line
from pytest_sideeye.report import write_diff_html, write_report, write_sqlite
from pytest_sideeye.snapshot import Snapshot
from pytest_sideeye.snapshot import render_text as render

PROPERTY = "sideeye.report"
TOOK_PROPERTY = "sideeye.report_s"     # Written.took_s
REPORTS_ATTR = "sideeye_reports"       # list[dict] on TestReport, read by the controller
_MAX_DIR_NAME = 120


@dataclass
class Written:
    """The files of one snapshot, as written for one test."""
    nodeid: str
    phase: str
    html: Path | None
    json: Path
    txt: Path | None
    problems: list[str]
    stem: str = ""        # timeout, setup, call, snapshot-N: the files' name
    # Seconds from the moment that asked for it (a timeout's timer firing) to its files
    # written: junit property sideeye.report_s (benchmarks/report_bench.py --timeout-runs).
    took_s: float | None = None

    @property
    def main(self) -> Path:
        """The file a person should open: the HTML when it could be written."""
        return self.html or self.json

    def to_data(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "phase": self.phase, "path": str(self.main),
                "json": str(self.json), "problems": list(self.problems)}


def sanitise(nodeid: str) -> str:
    """A directory name for a test id: readable, filesystem-safe, bounded and unique.

    Parametrised ids can be long and contain any character; a hash suffix keeps two
    ids that sanitise to the same text apart."""
    plain = nodeid.replace("::", "__").replace("/", "_")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", plain).strip("._") or "test"
    if name != plain or len(name) > _MAX_DIR_NAME:
        digest = hashlib.sha1(nodeid.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_DIR_NAME]}-{digest}"
    return name


def test_dir(base: Path, nodeid: str) -> Path:
    return base / sanitise(nodeid)


def write_files(snap: Snapshot, base: Path, nodeid: str, stem: str, *,
                sqlite: bool = False) -> Written:
    """Write <base>/<test>/<stem>.{json,txt,html}. The JSON goes first: it is the record
    the other two are rendered from, and it must exist even when a renderer fails."""
    folder = test_dir(base, nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    json_path = folder / f"{stem}.json"
    snap.save(json_path)
    txt_path = _write_text(snap, folder / f"{stem}.txt", problems)
    html_path = _write_html(snap, folder / f"{stem}.html", problems)
    if sqlite:   # --sideeye-sqlite: the same snapshot as tables, next to the JSON
        try:
            write_sqlite(snap, folder / f"{stem}.db")
        except Exception as e:
            problems.append(f"SQLite tables failed: {one_line(e)}")
    return Written(nodeid, snap.test.get("phase", stem) if snap.test else stem,
                   html_path, json_path, txt_path, problems, stem)


def write_leak_report(verdict, base: Path, nodeid: str, *, sqlite: bool = False) -> Written:
    """<test>/leaks.{json,txt,html} (the snapshot after the test) and leaks-diff.html, the
    page to open first: what the test left behind, grouped."""
    written = write_files(verdict.after, base, nodeid, "leaks", sqlite=sqlite)
    diff_page = written.json.with_name("leaks-diff.html")
    try:
        write_diff_html(verdict.diff, "before the test", "after the test", diff_page)
        written.html = diff_page
    except Exception as e:   # the snapshot's own report is still there
        written.problems.append(f"leak diff page failed: {one_line(e)}")
    return written


def _write_text(snap: Snapshot, path: Path, problems: list[str]) -> Path | None:
    try:
        path.write_text(_test_header(snap) + render(snap), encoding="utf-8")
        return path
    except Exception as e:  # a renderer bug must not hide the snapshot itself
        problems.append(f"text rendering failed: {one_line(e)}")
        return None


def _test_header(snap: Snapshot) -> str:
    """'#' lines are the text format's own comments: name the test the dump belongs to."""
    if not snap.test:
        return ""
    t = snap.test
    head = f"# test {t.get('nodeid')} ({t.get('phase')}, {t.get('outcome')})"
    message = (t.get("message") or "").strip().splitlines()
    return head + (f": {message[0]}" if message else "") + "\n"


def _write_html(snap: Snapshot, path: Path, problems: list[str]) -> Path | None:
    try:
        write_report(snap, path)
        return path
    except Exception as e:
        problems.append(f"HTML report failed: {one_line(e)}")
        return None


def display_path(path: Path, start: Path) -> str:
    """Relative to the invocation directory when inside it: CI servers resolve attachment
    paths against the workspace, and relative paths survive moving the artifacts."""
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)


def record_on_item(item: pytest.Item, written: Written, phase: str, start: Path,
                   junit_attachments: bool) -> None:
    """Item-level attachment: junit takes properties and captured output from the teardown
    report, which pytest builds from the item later on."""
    shown = display_path(written.main, start)
    item.user_properties.append((PROPERTY, shown))
    if written.took_s is not None:
        item.user_properties.append((TOOK_PROPERTY, f"{written.took_s:.3f}"))
    if junit_attachments:
        item.add_report_section(phase, "stdout", attachment_line(written, start))


def attachment_line(written: Written, start: Path) -> str:
    return f"[[ATTACHMENT|{display_path(written.main, start)}]]\n"


def record_on_report(report: pytest.TestReport, written: Written, start: Path,
                     html_report: Path | None, *, junit_attachments: bool) -> None:
    """Report-level attachment: plain data for the terminal summary (also under xdist),
    a pytest-html link, and the junit bits when this report is the one junit writes."""
    reports = getattr(report, REPORTS_ATTR, None)
    if reports is None:
        reports = []
        setattr(report, REPORTS_ATTR, reports)
    data = written.to_data()
    data["shown"] = display_path(written.main, start)
    reports.append(data)
    if html_report is not None:
        _add_html_link(report, written, html_report)
    if report.when == "teardown":
        # Already created from the item: carry the property onto it directly.
        report.user_properties.append((PROPERTY, data["shown"]))
    if junit_attachments:
        title = f"Captured stdout {report.when}"
        report.sections.append((title, attachment_line(written, start)))


def _add_html_link(report: pytest.TestReport, written: Written, html_report: Path) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    # pytest-html links relative to its own file; data: links do not open in Chrome.
    href = os.path.relpath(written.main.resolve(), html_report.resolve().parent)
    links = getattr(report, "extras", None)
    if links is None:
        links = []
        report.extras = links
    links.append(extras.url(href, name=f"sideeye {written.stem or written.phase}"))


def add_section(report: pytest.TestReport, title: str, text: str) -> None:
    report.sections.append((title, text if text.endswith("\n") else text + "\n"))


def add_log_sections(report: pytest.TestReport, snap: Snapshot) -> None:
    seen: set[str] = set()
    for p in snap.processes:
        name = p.service or (p.container.name if p.container else None)
        if not name or name in seen or p.logs is None:
            continue
        seen.add(name)
        add_section(report, f"sideeye: {name} logs", p.logs or "(no output)")


def discard(written: Written) -> None:
    """Drop a snapshot's files (a timeout's whose test ended in the margin)."""
    for p in (written.html, written.json, written.txt):
        if p is not None:
            p.unlink(missing_ok=True)


class SummaryCollector:
    """Collects report paths from every report, workers' included (xdist sends the plain
    `sideeye_reports` attribute along), for the terminal summary."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.entries.extend(getattr(report, REPORTS_ATTR, None) or [])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.entries:
            return
        terminalreporter.section("sideeye reports")
        for e in self.entries:
            terminalreporter.line(f"{e['shown']}  ({e['nodeid']}, {e['phase']})")
            for problem in e.get("problems", []):
                terminalreporter.line(f"    {problem}")
