"""The snapshot model: what a snapshot holds, its JSON form (sideeye.snapshot/v1) and the
plain-text rendering in the style of Go's `/debug/pprof/goroutine?debug=2`.

This module is the contract between the engine (which fills it), the report and the pytest
plugin (which read it). Field names are documented in docs/snapshot-format.md.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from pytest_sideeye.snapshot.diff import SnapshotDiff
from pytest_sideeye.snapshot.diff import diff as diff_snapshots

FORMAT = "sideeye.snapshot/v1"


# --- reading JSON written by someone else: every field checked for its JSON type, so that
# a damaged or hand-edited document is a ValueError here, not a crash in a renderer. -------

def _get(d, key: str, kind, default=..., nullable: bool = False):
    if not isinstance(d, dict):
        raise ValueError(f"expected an object around {key!r}, got {type(d).__name__}")
    if key not in d:
        if default is ...:
            raise ValueError(f"missing field {key!r}")
        return default
    v = d[key]
    if v is None and (nullable or default is None):
        return None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        raise ValueError(f"field {key!r} should be {getattr(kind, '__name__', kind)}, "
                         f"not {type(v).__name__}")
    return v


def _list(d, key: str, item_kind=None) -> list:
    v = _get(d, key, list, [])
    if item_kind is not None and not all(isinstance(x, item_kind) for x in v):
        raise ValueError(f"field {key!r} should list {item_kind.__name__} values")
    return v

# A goroutine's `state`: the runtime's status names (gStatusStrings, _Gscan masked).
STATUSES = ("idle", "runnable", "running", "syscall", "waiting", "dead", "copystack",
            "preempted", "leaked")


@dataclass
class Variable:
    name: str                 # the expression as written in the capture spec
    type: str = ""            # Go type name
    value: Any = None         # JSON value
    available: bool = True    # False when not live at this PC
    truncated: bool = False   # a limit cut the value short
    error: str | None = None  # one line when reading failed (bad pointer, ...)

    def to_json(self) -> dict:
        d = {"name": self.name, "type": self.type, "value": self.value,
             "available": self.available, "truncated": self.truncated}
        if self.error:
            d["error"] = self.error
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Variable":
        return cls(_get(d, "name", str), _get(d, "type", str, ""), _get(d, "value", object, None),
                   available=_get(d, "available", bool, default=True),
                   truncated=_get(d, "truncated", bool, default=False),
                   error=_get(d, "error", str, None))


@dataclass
class Frame:
    function: str
    file: str
    line: int
    pc: int = 0
    inlined: bool = False
    variables: list[Variable] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"function": self.function, "file": self.file, "line": self.line,
                "pc": self.pc, "inlined": self.inlined,
                "variables": [v.to_json() for v in self.variables]}

    @classmethod
    def from_json(cls, d: dict) -> "Frame":
        return cls(_get(d, "function", str), _get(d, "file", str), _get(d, "line", int),
                   _get(d, "pc", int, 0), inlined=_get(d, "inlined", bool, default=False),
                   variables=[Variable.from_json(v) for v in _list(d, "variables", dict)])


@dataclass
class CreatedBy:
    function: str
    file: str
    line: int
    goroutine: int | None = None

    def to_json(self) -> dict:
        return {"function": self.function, "file": self.file, "line": self.line,
                "goroutine": self.goroutine}

    @classmethod
    def from_json(cls, d: dict | None) -> "CreatedBy | None":
        if d is None:
            return None
        return cls(_get(d, "function", str), _get(d, "file", str), _get(d, "line", int),
                   _get(d, "goroutine", int, None))


@dataclass
class Goroutine:
    id: int
    status: str
    wait_reason: str = ""
    wait_since_ns: int | None = None   # monotonic ns since the goroutine blocked (lower bound)
    created_by: CreatedBy | None = None
    frames: list[Frame] = field(default_factory=list)
    thread: int | None = None          # OS thread id when running or in a syscall
    truncated: str | None = None       # why the stack ends early ("depth limit", "bad frame pointer", ...)

    def to_json(self) -> dict:
        d = {"id": self.id, "status": self.status, "wait_reason": self.wait_reason,
             "wait_since_ns": self.wait_since_ns,
             "created_by": self.created_by.to_json() if self.created_by else None,
             "frames": [f.to_json() for f in self.frames]}
        if self.thread is not None:
            d["thread"] = self.thread
        if self.truncated:
            d["truncated"] = self.truncated
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Goroutine":
        return cls(_get(d, "id", int), _get(d, "status", str), _get(d, "wait_reason", str, ""),
                   _get(d, "wait_since_ns", int, None),
                   CreatedBy.from_json(_get(d, "created_by", dict, None)),
                   [Frame.from_json(f) for f in _list(d, "frames", dict)],
                   _get(d, "thread", int, None), _get(d, "truncated", str, None))

    def blocked_in(self, function: str) -> bool:
        """True when `function` (exact name, or a suffix after a dot) is on the stack."""
        return any(_function_matches(f.function, function) for f in self.frames)


@dataclass
class Container:
    id: str
    name: str
    image: str

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "image": self.image}


@dataclass
class Process:
    pid: int
    exe: str = ""
    go_version: str = ""
    container: Container | None = None
    service: str | None = None         # the go_service name when taken by the plugin
    pause_ns: int | None = None
    pause_parts_ns: dict[str, int] = field(default_factory=dict)  # stop / collect / resume
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # partial-snapshot remarks
    goroutines: list[Goroutine] = field(default_factory=list)
    logs: str | None = None            # container logs, when the plugin has them
    monotonic_ns: int | None = None    # CLOCK_MONOTONIC at the pause: wait_since_ns's reference
    collector: str | None = None       # which BPF program walked the goroutines (engine.py)

    def to_json(self) -> dict:
        d = {"pid": self.pid, "exe": self.exe, "go_version": self.go_version,
             "container": self.container.to_json() if self.container else None,
             "pause_ns": self.pause_ns, "error": self.error,
             "goroutines": [g.to_json() for g in self.goroutines]}
        if self.service is not None:
            d["service"] = self.service
        if self.pause_parts_ns:
            d["pause_parts_ns"] = dict(self.pause_parts_ns)
        if self.notes:
            d["notes"] = list(self.notes)
        if self.logs is not None:
            d["logs"] = self.logs
        if self.monotonic_ns is not None:
            d["monotonic_ns"] = self.monotonic_ns
        if self.collector is not None:
            d["collector"] = self.collector
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Process":
        c = _get(d, "container", dict, None)
        parts = _get(d, "pause_parts_ns", dict, None) or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in parts.values()):
            raise ValueError("field 'pause_parts_ns' should map names to integers")
        return cls(_get(d, "pid", int), _get(d, "exe", str, ""), _get(d, "go_version", str, ""),
                   Container(_get(c, "id", str), _get(c, "name", str), _get(c, "image", str))
                   if c else None,
                   _get(d, "service", str, None), _get(d, "pause_ns", int, None), dict(parts),
                   _get(d, "error", str, None), list(_list(d, "notes", str)),
                   [Goroutine.from_json(g) for g in _list(d, "goroutines", dict)],
                   _get(d, "logs", str, None), _get(d, "monotonic_ns", int, None),
                   _get(d, "collector", str, None))


@dataclass
class Snapshot:
    processes: list[Process] = field(default_factory=list)
    taken_at: str = ""
    test: dict | None = None   # {"nodeid", "phase", "outcome", "message"} when from pytest

    def to_json(self) -> dict:
        d = {"format": FORMAT, "taken_at": self.taken_at,
             "processes": [p.to_json() for p in self.processes]}
        if self.test is not None:
            d["test"] = dict(self.test)
        return d

    def dumps(self, indent: int | None = None) -> str:
        return json.dumps(self.to_json(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, d: dict) -> "Snapshot":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a {FORMAT} document (format={got!r})")
        test = _get(d, "test", dict, None)
        if test is not None and not all(isinstance(v, (str, type(None))) for v in test.values()):
            raise ValueError("field 'test' should map names to strings")
        return cls([Process.from_json(p) for p in _list(d, "processes", dict)],
                   _get(d, "taken_at", str, ""), test)

    @classmethod
    def load(cls, path) -> "Snapshot":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.dumps())

    # --- queries used by tests written against the sideeye_snapshot fixture ---
    def goroutines(self, *, status: str | None = None, blocked_in: str | None = None,
                   wait_reason: str | None = None) -> Iterator[Goroutine]:
        for p in self.processes:
            for g in p.goroutines:
                if status is not None and g.status != status:
                    continue
                if wait_reason is not None and g.wait_reason != wait_reason:
                    continue
                if blocked_in is not None and not g.blocked_in(blocked_in):
                    continue
                yield g

    def diff(self, before: Snapshot) -> SnapshotDiff:
        """What changed since `before`: goroutines that appeared, vanished or changed state,
        per process, grouped by creation site and stack (snapshot/diff.py)."""
        return diff_snapshots(before, self)

    def frames(self, function: str) -> Iterator[tuple[Goroutine, Frame]]:
        for g in self.goroutines():
            for f in g.frames:
                if _function_matches(f.function, function):
                    yield g, f


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _function_matches(name: str, wanted: str) -> bool:
    return name == wanted or name.endswith("." + wanted)
