"""Stage 4, the report: a snapshot as one self-contained HTML page that explains a hang.

Takes a snapshot.Snapshot; gives HTML (`render_html`, `write_report`): a view model of
grouped stacks and captured variables (view.py), a flame graph per process
(flamegraph.py), the jinja2 templates (templates/), and the snapshot embedded in the page
so that a report is also its own data (embed.py: `snapshot_from_report`, `load_snapshot`);
the page of a snapshot diff (diff.py) and the snapshot as SQLite tables (sqlite.py).
"""
from pytest_sideeye.report.diff import render_diff_html, write_diff_html
from pytest_sideeye.report.embed import load_snapshot, snapshot_from_report
from pytest_sideeye.report.html import render_html, write_report
from pytest_sideeye.report.sqlite import write_sqlite

__all__ = ["load_snapshot", "render_diff_html", "render_html", "snapshot_from_report",
           "write_diff_html", "write_report", "write_sqlite"]
