"""What a test's report gets once a phase ends: the snapshot a timeout left (re-rendered
with how the test ended), or one taken now for a failure, and the fixture's snapshots of
the phase; each attached to the report (attach.py), never a traceback from us."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_sideeye.plugin import attach
from pytest_sideeye.plugin.on_timeout import disarm_own_timeout, wait_for_pre_timeout
from pytest_sideeye.plugin.options import Settings, settings_of
from pytest_sideeye.plugin.state import ItemState, state_of
from pytest_sideeye.plugin.taking import snapshot_item
from pytest_sideeye.plugin.targets import services_of
from pytest_sideeye.snapshot import Snapshot


def after_report(item: pytest.Item, report: pytest.TestReport) -> None:
    settings = settings_of(item.config)
    st = state_of(item)
    if report.failed:
        if report.when != "teardown":
            disarm_own_timeout(item)
        wait_for_pre_timeout(st, settings.budget_s)
        if st.timeout_written is not None:
            _attach_timeout(item, report, st, settings)
        elif settings.on_failure and report.when in ("setup", "call"):
            _failure_snapshot(item, report, settings)
        elif st.timeout_problem:
            attach.add_section(report, "sideeye", f"no snapshot: {st.timeout_problem}")
            st.timeout_problem = None
    elif report.when == "call" and st.timeout_written is not None:
        # The test finished in the margin between our snapshot and pytest-timeout firing.
        attach.discard(st.timeout_written)
        st.timeout_written = None
    _flush_pending(item, report, st, settings)


def _attach_timeout(item: pytest.Item, report: pytest.TestReport, st: ItemState,
                    settings: Settings) -> None:
    written = st.timeout_written
    st.timeout_written = None
    assert written is not None
    _refresh_outcome(written, report)
    _record(item, report, written, settings)


def _failure_snapshot(item: pytest.Item, report: pytest.TestReport,
                      settings: Settings) -> None:
    services = services_of(item)
    if not services:
        return
    message = _failure_line(report)
    _, written, _ = snapshot_item(item, report.when, report.when, "failed", message,
                                  services=services)
    _record(item, report, written, settings)


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


def _refresh_outcome(written: attach.Written, report: pytest.TestReport) -> None:
    """The timeout snapshot was written before the test failed: record how it ended and
    re-render, so the report says what the user saw."""
    snap = Snapshot.load(written.json)
    assert snap.test is not None
    snap.test["outcome"] = "timeout"
    line = _failure_line(report)
    if line:
        snap.test["message"] = line
    fresh = attach.write_files(snap, written.json.parent.parent, snap.test["nodeid"],
                               written.json.stem, sqlite=written.json.with_suffix(".db").exists())
    rendering = ("text rendering failed", "HTML report failed")
    written.problems = [p for p in written.problems if not p.startswith(rendering)] + \
        fresh.problems
    written.html = fresh.html
    written.txt = fresh.txt


def _record(item: pytest.Item, report: pytest.TestReport, written: attach.Written,
            settings: Settings) -> None:
    attach.record_on_item(item, written, report.when, settings.start_dir,
                          settings.junit_attachments)
    attach.record_on_report(report, written, settings.start_dir, settings.html_report,
                            junit_attachments=settings.junit_attachments)
    _describe(report, written, settings.start_dir)


def _describe(report: pytest.TestReport, written: attach.Written, start: Path) -> None:
    """Sections shown with the failure: where the report is, why it may lack goroutines,
    and each service's container logs."""
    lines = [f"report: {attach.display_path(written.main, start)}"] + written.problems
    attach.add_section(report, "sideeye", "\n".join(lines))
    attach.add_log_sections(report, Snapshot.load(written.json))


def _flush_pending(item: pytest.Item, report: pytest.TestReport, st: ItemState,
                   settings: Settings) -> None:
    """Fixture snapshots taken during this phase reach this phase's report."""
    while st.pending:
        attach.record_on_report(report, st.pending.pop(0), settings.start_dir,
                                settings.html_report, junit_attachments=False)
