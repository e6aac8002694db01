"""The HTML report: one self-contained file that explains a hang at a glance.

Snapshot -> view model (view.py) -> jinja2 template (templates/, autoescape on) -> one
HTML file, with the snapshot itself embedded (embed.py).

The page must read well where CI servers strip everything (Jenkins serves artifacts with a
CSP that blocks scripts and inline styles), so the structure is plain HTML: headings,
<details>/<summary>, <table>, <pre>. The inline style and script only enhance it; the
page's own Content-Security-Policy allows exactly them (by hash) and forbids every network
load.
"""
from __future__ import annotations

import base64
import hashlib
import os
from importlib import resources
from pathlib import Path

import jinja2

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.files import atomic_write
from pytest_sideeye.report.embed import EMBED_ID, embed_document, json_for_script
from pytest_sideeye.report.view import MAX_TABLE_ROWS, Options, fmt_count, page_view
from pytest_sideeye.snapshot import Snapshot

# --------------------------------------------------------------------------- rendering

_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("pytest_sideeye.report", "templates"),
            autoescape=True, trim_blocks=True, lstrip_blocks=True,
            undefined=jinja2.StrictUndefined)
        _ENV.filters["count"] = fmt_count
    return _ENV


def asset(name: str) -> str:
    return resources.files("pytest_sideeye.report").joinpath("templates", name).read_text("utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy(style: str, script: str) -> str:
    """No network at all; only this page's own style and script, pinned by hash (a hash,
    unlike 'unsafe-inline', cannot be matched by markup injected from captured data)."""
    return ("default-src 'none'; "
            f"style-src '{_sha256(style)}'; "
            f"script-src {repr(_sha256(script)) if script else repr('none')}; "
            "img-src 'none'; font-src 'none'; connect-src 'none'; "
            "base-uri 'none'; form-action 'none'")


def render_html(snapshot: Snapshot, *, max_table_rows: int = MAX_TABLE_ROWS) -> str:
    """The report page for a snapshot, as one self-contained HTML string."""
    opts = Options(max_table_rows=max_table_rows)
    style, script = asset("report.css"), asset("report.js")
    if "</script" in script.lower() or "</style" in style.lower():
        raise AssertionError("report assets must not contain closing tags")
    view = page_view(snapshot, opts)
    return environment().get_template("report.html.j2").render(
        page=view, style=style, script=script,
        csp=content_security_policy(style, script), embed_id=EMBED_ID,
        embedded=json_for_script(embed_document(snapshot)))


def write_report(snapshot: Snapshot, path: str | os.PathLike) -> Path:
    """Render and write the report atomically (a reader never sees half a page)."""
    target = Path(path)
    try:
        atomic_write(target, render_html(snapshot), mode=0o644)
    except OSError as e:
        raise SideeyeError(f"cannot write report {target}: {e.strerror or e}") from None
    return target
