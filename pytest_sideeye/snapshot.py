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

FORMAT = "sideeye.snapshot/v1"

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
        return cls(d["name"], d.get("type", ""), d.get("value"), d.get("available", True),
                   d.get("truncated", False), d.get("error"))


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
        return cls(d["function"], d["file"], d["line"], d.get("pc", 0), d.get("inlined", False),
                   [Variable.from_json(v) for v in d.get("variables", [])])


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
        return cls(d["function"], d["file"], d["line"], d.get("goroutine"))


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
        return cls(d["id"], d["status"], d.get("wait_reason", ""), d.get("wait_since_ns"),
                   CreatedBy.from_json(d.get("created_by")),
                   [Frame.from_json(f) for f in d.get("frames", [])],
                   d.get("thread"), d.get("truncated"))

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
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Process":
        c = d.get("container")
        return cls(d["pid"], d.get("exe", ""), d.get("go_version", ""),
                   Container(c["id"], c["name"], c["image"]) if c else None,
                   d.get("service"), d.get("pause_ns"), dict(d.get("pause_parts_ns") or {}),
                   d.get("error"), list(d.get("notes") or []),
                   [Goroutine.from_json(g) for g in d.get("goroutines", [])], d.get("logs"),
                   d.get("monotonic_ns"))


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
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document (format={d.get('format')!r})")
        return cls([Process.from_json(p) for p in d.get("processes", [])], d.get("taken_at", ""),
                   d.get("test"))

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

    def frames(self, function: str) -> Iterator[tuple[Goroutine, Frame]]:
        for g in self.goroutines():
            for f in g.frames:
                if _function_matches(f.function, function):
                    yield g, f


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _function_matches(name: str, wanted: str) -> bool:
    return name == wanted or name.endswith("." + wanted)
