"""Container selectors: which containers besides a test's fixtures to snapshot
(`--sideeye-containers`, ini `sideeye_containers`, the marker's `containers=`,
`SIDEEYE_CONTAINERS`).

    auto                      the containers behind the test's fixture values (the default)
    none                      not even those
    compose:PROJECT[/SERVICE] a compose project's running containers (or one service's)
    label:KEY=VALUE           running containers with that label
    name:GLOB                 running containers whose name matches (fnmatch)
    id:ID                     one container, by id or id prefix
    events                    containers started since the test's setup began (opt-in: on
                              a shared daemon it also sees other jobs' containers)

Parsing is checked when pytest starts (one line for a bad selector); resolving asks Docker
at snapshot time.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import images
from pytest_sideeye.services.watched import (
    Reference,
    belongs_to_another_run,
    containers_of,
)

KINDS = ("auto", "none", "events", "compose", "label", "name", "id")
SYNTAX = ("auto, none, events, compose:PROJECT[/SERVICE], label:KEY=VALUE, name:GLOB "
          "or id:ID")


@dataclass(frozen=True)
class Selector:
    kind: str
    value: str = ""

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.value}" if self.value else self.kind


def parse_selector(text: str, where: str = "sideeye containers") -> Selector:
    """One selector, or SideeyeError naming `where` it was written and what is wanted."""
    raw = str(text).strip()
    kind, sep, value = raw.partition(":")
    kind, value = kind.strip().lower(), value.strip()
    bad = f"{where}: bad container selector {raw!r}: want {SYNTAX}"
    if kind not in KINDS:
        raise SideeyeError(bad)
    if kind in ("auto", "none", "events"):
        if sep:
            raise SideeyeError(bad)
        return Selector(kind)
    if not value:
        raise SideeyeError(bad)
    if kind == "label" and (not value.partition("=")[0] or "=" not in value):
        raise SideeyeError(bad)
    if kind == "compose" and (value.count("/") > 1 or value.startswith("/")
                              or value.endswith("/")):
        raise SideeyeError(bad)
    return Selector(kind, value)


def parse_selectors(texts: Iterable[str] | str | None, where: str) -> list[Selector]:
    """Selectors from lines or a comma/space separated string; blank ones skipped."""
    if not texts:
        return []
    if isinstance(texts, str):
        texts = [texts]
    out: list[Selector] = []
    for text in texts:
        for part in str(text).replace(",", " ").split():
            sel = parse_selector(part, where)
            if sel not in out:
                out.append(sel)
    return out


def references_for(selectors: Iterable[Selector]) -> list[Reference]:
    """The selectors that name containers directly, as references."""
    refs = []
    for sel in selectors:
        if sel.kind == "compose":
            project, _, service = sel.value.partition("/")
            refs.append(Reference(project=project, service=service or None))
        elif sel.kind == "id":
            refs.append(Reference(container_id=sel.value))
    return refs


def select(selectors: Iterable[Selector], since: float | None) -> list[Any]:
    """Running SDK containers that the label, name and events selectors pick, and the
    compose and id ones, other runs' containers left out (xdist workers see their own)."""
    chosen: dict[str, Any] = {}
    selectors = [s for s in selectors if s.kind not in ("auto", "none")]
    if not selectors:
        return []   # no Docker to ask (a test that uses none may run without a daemon)
    client = images.docker_client()
    for sel in selectors:
        if sel.kind in ("compose", "id"):
            found = [c for ref in references_for([sel]) for c in containers_of(ref)]
        elif sel.kind == "label":
            found = client.containers.list(filters={"label": sel.value}, ignore_removed=True)
        elif sel.kind == "name":
            found = [c for c in client.containers.list(ignore_removed=True)
                     if fnmatch.fnmatchcase(c.name, sel.value)]
        elif sel.kind == "events" and since is not None:
            found = [c for c in client.containers.list(ignore_removed=True)
                     if _started_at(c) >= since]
        else:
            continue
        for c in found:
            if sel.kind in ("label", "name", "events") and belongs_to_another_run(c):
                continue
            chosen.setdefault(c.id, c)
    return list(chosen.values())


def _started_at(container: Any) -> float:
    """The container's last start, seconds since the epoch (Docker writes nanoseconds)."""
    text = (container.attrs.get("State") or {}).get("StartedAt") or ""
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        when = _dt.datetime.fromisoformat(head).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return 0.0
    return when.timestamp() + float(f"0.{frac or 0}")

