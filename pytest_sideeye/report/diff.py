"""The HTML page of a snapshot diff (`sideeye diff A.json B.json --html FILE`): one
self-contained page, no script, the same CSP and escaping as the report."""
from __future__ import annotations

import os
from pathlib import Path

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.files import atomic_write
from pytest_sideeye.report.html import asset, content_security_policy, environment
from pytest_sideeye.report.text import clean
from pytest_sideeye.report.view import fmt_ids


def diff_view(d, before: str, after: str) -> dict:
    def group(g) -> dict:
        return {"count": g.count, "top": clean(g.key.top), "created_by": clean(g.key.created_by),
                "stack": [clean(fn) for fn in g.key.stack], "ids": fmt_ids(g.ids),
                "states": clean(", ".join(f"{n} {s}" for s, n in g.states.most_common()))}

    def process(p) -> dict:
        pids = (f"pid {p.pid_before}" if p.pid_before == p.pid_after
                else f"pid {p.pid_before} \u2192 {p.pid_after}")
        return {"name": clean(p.shown_name), "pids": pids, "count_before": p.count_before,
                "count_after": p.count_after, "restarted": p.restarted,
                "appeared": [group(g) for g in p.appeared],
                "vanished": [group(g) for g in p.vanished],
                "changed": [{"id": c.id, "before": clean(c.before), "after": clean(c.after)}
                            for c in p.changed]}

    return {"before": clean(before), "after": clean(after), "empty": d.empty,
            "processes": [process(p) for p in d.processes]}


def render_diff_html(d, before: str, after: str) -> str:
    style = asset("report.css")
    return environment().get_template("diff.html.j2").render(
        csp=content_security_policy(style, ""), style=style, **diff_view(d, before, after))


def write_diff_html(d, before: str, after: str, path: str | os.PathLike) -> Path:
    target = Path(path)
    try:
        atomic_write(target, render_diff_html(d, before, after), mode=0o644)
    except OSError as e:
        raise SideeyeError(f"cannot write {target}: {e.strerror or e}") from None
    return target
