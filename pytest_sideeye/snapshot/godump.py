"""Parse the Go runtime's own goroutine dump text into the snapshot model.

Two sources print the same traceback format (golang/go runtime/traceback.go,
`goroutineheader` + `traceback1` + `printcreatedby1`):
- a crash or SIGQUIT with GOTRACEBACK=all (stderr), which adds a "SIGQUIT: quit" preamble,
  `gp=0x... m=N mp=0x...` in headers, ` fp=... sp=... pc=...` after file lines (level 2)
  and a register dump at the end;
- `runtime.Stack(buf, true)` as served by `/debug/pprof/goroutine?debug=2`.

The dump is the oracle our own snapshots are judged against, so the parser keeps what the
runtime printed and adds nothing. What the model has no field for (the "N minutes" of the
header, "locked to thread", pprof labels, where frames were elided, ancestor tracebacks)
goes into a `DumpInfo` attached to each parsed Goroutine as the attribute `dump_info`:
snapshot.py's model stays unchanged and JSON output ignores it (so does
dataclasses.replace; copy.deepcopy keeps it). wait_since_ns stays None: the dump gives
whole minutes, not a clock reading (DumpInfo.wait_minutes has them).

Status mapping: a bracket that is a gStatusStrings word becomes that status ("waiting"
with no reason included); anything else is a wait reason of a waiting goroutine. "(scan)"
is dropped, "X (leaked)" is status leaked with reason X.

The parser also reads back what textdump.py adds to the format (pc=, thread, variables,
"...truncated: why..."), so rendered snapshots round-trip.

Anything the parser does not recognise is skipped: it never raises on odd input.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pytest_sideeye.snapshot.model import STATUSES, CreatedBy, Frame, Goroutine, Process, Variable

# Status words the runtime prints when a goroutine has no wait reason (gStatusStrings).
_STATUS_WORDS = {
    **{name: name for name in STATUSES},
    # _Gdeadextra (1.25+): an extra M's g waiting for a cgo callback; never printed by
    # tracebackothers, mapped for completeness.
    "waiting for cgo callback": "dead",
}
# Wait reasons whose runtime string itself ends in "(durable)" (Go 1.25+ synctest).
_DURABLE_REASONS = {"chan receive (durable)", "chan send (durable)", "select (durable)",
                    "sync.WaitGroup.Wait (durable)"}

_HEADER = re.compile(
    r"^goroutine (?P<id>\d+)"
    r"(?: gp=(?P<gp>0x[0-9a-f]+))?(?: m=(?P<m>\d+|nil))?(?: mp=0x[0-9a-f]+)?"
    r" \[(?P<inside>[^\]]*)\](?P<labels>.*):\s*$")
# " pc=0x..." alone is textdump's suffix for a non-inlined frame (see textdump.py).
_FILE_LINE = re.compile(
    r"^\t(?P<file>.+):(?P<line>\d+)(?P<off> \+0x[0-9a-f]+)?"
    r"(?: fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x[0-9a-f]+| pc=(?P<pc>0x[0-9a-f]+))?\s*$")
# textdump's variable lines; the runtime never indents two tabs.
_VARIABLE = re.compile(r"^\t\t(?P<name>\S+)(?: \((?P<type>.*?)\))? = (?P<value>.*)$")
_TRUNCATED = re.compile(r"^\.\.\.truncated: (?P<why>.*)\.\.\.$")
_THREAD = re.compile(r"^thread (?P<tid>\d+)$")
_CREATED_BY = re.compile(r"^created by (?P<func>\S+)(?: in goroutine (?P<goid>\d+))?\s*$")
_ELIDED = re.compile(r"^\.\.\.(?P<n>\d+) frames elided\.\.\.\s*$")
_ADDITIONAL_ELIDED = "...additional frames elided..."
_ORIGIN = re.compile(r"^\[originating from goroutine (?P<goid>\d+)\]:\s*$")
_MINUTES = re.compile(r"^(?P<n>\d+) minutes$")
_NO_STACK = "goroutine running on other thread; stack unavailable"


@dataclass
class Ancestor:
    """One `[originating from goroutine N]:` block (GODEBUG=tracebackancestors=N)."""
    goroutine: int
    frames: list[Frame] = field(default_factory=list)
    created_by: CreatedBy | None = None
    truncated: bool = False


@dataclass
class DumpInfo:
    """What the dump shows about a goroutine beyond the snapshot model."""
    header: str = ""                    # the header line as printed
    wait_minutes: int | None = None     # ", N minutes" (printed only from 1 up)
    locked_to_thread: bool = False
    scan: bool = False                  # " (scan)": the GC was scanning its stack
    labels: str = ""                    # " {k: v}" pprof labels (Go 1.26+), raw text
    m: int | None = None                # "m=N" in level-2 headers; None for m=nil/absent
    thread: int | None = None           # ", thread N" (textdump's addition)
    elided_at: int | None = None        # index in frames where "...N frames elided..." sat
    elided: int = 0                     # how many frames the runtime left out there
    ancestors: list[Ancestor] = field(default_factory=list)


def dump_info(g: Goroutine) -> DumpInfo:
    """The DumpInfo of a parsed goroutine (an empty one for goroutines from elsewhere)."""
    info = getattr(g, "dump_info", None)
    return info if isinstance(info, DumpInfo) else DumpInfo()


def parse_dump(text: str) -> list[Goroutine]:
    """Every goroutine in a SIGQUIT/crash dump or a debug=2 dump, in printed order.

    Goroutine 0 (the signal-handling thread's g0 in SIGQUIT dumps) is kept as printed."""
    parser = _Parser()
    for raw in text.splitlines():
        parser.feed(raw.rstrip("\r"))
    return parser.finish()


def parse_dump_process(text: str, pid: int = 0, *, exe: str = "", go_version: str = "") -> Process:
    """A Process holding the goroutines of one dump (the dump itself names no pid)."""
    return Process(pid=pid, exe=exe, go_version=go_version, goroutines=parse_dump(text))


def parse_header(line: str) -> Goroutine | None:
    """The Goroutine (no frames yet) described by a `goroutine N [...]:` line, else None."""
    m = _HEADER.match(line)
    if not m:
        return None
    status, reason, info = _parse_brackets(m.group("inside"))
    info.header = line
    info.labels = m.group("labels").strip()
    if m.group("m") not in (None, "nil"):
        info.m = int(m.group("m"))
    g = Goroutine(id=int(m.group("id")), status=status, wait_reason=reason, thread=info.thread)
    g.dump_info = info  # type: ignore[attr-defined]
    return g


def _parse_brackets(inside: str) -> tuple[str, str, DumpInfo]:
    """Split "chan receive, 3 minutes, locked to thread" into status, reason and extras."""
    info = DumpInfo()
    parts = inside.split(", ")
    head = parts[0]
    for extra in parts[1:]:
        mm = _MINUTES.match(extra)
        if mm:
            info.wait_minutes = int(mm.group("n"))
        elif extra == "locked to thread":
            info.locked_to_thread = True
        elif mt := _THREAD.match(extra):
            info.thread = int(mt.group("tid"))
        # ", synctest bubble N" and anything newer: nothing in the model for it.
    leaked = False
    while True:
        if head.endswith(" (scan)"):
            info.scan, head = True, head[: -len(" (scan)")]
        elif head.endswith(" (leaked)"):
            leaked, head = True, head[: -len(" (leaked)")]
        elif head.endswith(" (durable)") and head not in _DURABLE_REASONS:
            head = head[: -len(" (durable)")]
        else:
            break
    if leaked:
        return "leaked", "" if head == "leaked" else head, info
    if head in _STATUS_WORDS:
        # A _Gwaiting goroutine with waitReasonPreempted also prints "preempted": the
        # dump cannot tell the two apart, so both become status "preempted".
        return _STATUS_WORDS[head], "", info
    return "waiting", head, info


def parse_function_line(line: str) -> tuple[str, bool] | None:
    """("pkg.Func", args_elided) for a `pkg.Func(args)` line, else None.

    The argument list is the last parenthesised group (receivers like `(*T)` come
    earlier, arguments never contain parentheses). "panic" is how the runtime prints
    runtime.gopanic: the real name is restored."""
    if not line.endswith(")") or line.startswith(("\t", " ")):
        return None
    cut = line.rfind("(")
    if cut <= 0:
        return None
    name, args = line[:cut], line[cut + 1:-1]
    if " " in name or not name:
        return None
    if name == "panic":
        name = "runtime.gopanic"
    return name, args == "..."


def parse_variable_value(name: str, type_: str, text: str) -> Variable:
    """A Variable from textdump's `name (type) = value` rendering."""
    if text == "<unavailable>":
        return Variable(name, type_, None, available=False)
    if text.startswith("<error: ") and text.endswith(">"):
        return Variable(name, type_, None, error=text[len("<error: "):-1])
    truncated = text.endswith(" ...(truncated)")
    if truncated:
        text = text[: -len(" ...(truncated)")]
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return Variable(name, type_, value, truncated=truncated)


class _Parser:
    """A line-driven state machine: header, then function/file line pairs, then the
    optional created-by pair, in the order traceback.go prints them."""

    def __init__(self) -> None:
        self.out: list[Goroutine] = []
        self.g: Goroutine | None = None
        self.ancestor: Ancestor | None = None
        self.pending: tuple[str, bool] | None = None   # function line awaiting its file line
        self.pending_created: tuple[str, int | None] | None = None

    def feed(self, line: str) -> None:
        # startswith first: dumps of 100k goroutines have millions of lines.
        g = parse_header(line) if line.startswith("goroutine ") else None
        if g is not None:
            self._close()
            self.g = g
            self.out.append(g)
            return
        if self.g is None:
            return
        if line == "runtime stack:" or not line.strip():
            # A blank line ends a goroutine's block; "runtime stack:" starts the g0
            # traceback of a fatal error, which belongs to no goroutine.
            self._close()
            return
        self._feed_body(line)

    def _feed_body(self, line: str) -> None:
        if line.startswith("\t\t"):
            self._variable(line)
            return
        fl = _FILE_LINE.match(line) if line.startswith("\t") else None
        if fl:
            pc = int(fl.group("pc"), 16) if fl.group("pc") else 0
            self._file_line(fl.group("file"), int(fl.group("line")),
                            bool(fl.group("off") or fl.group("pc")), pc)
            return
        self.pending = self.pending_created = None
        # Most lines are function lines: recognise the rarer kinds by their first
        # character before trying any pattern.
        if line[:1] not in ("\t", " ", ".", "[", "c"):
            self.pending = parse_function_line(line)
            return
        stripped = line.strip()
        info = dump_info(self.g)
        if stripped == _NO_STACK:
            self.g.truncated = "stack unavailable (running on another thread)"
        elif m := _ELIDED.match(stripped):
            info.elided_at, info.elided = len(self.g.frames), int(m.group("n"))
            self.g.truncated = f"{info.elided} frames elided"
        elif m := _TRUNCATED.match(stripped):
            self.g.truncated = m.group("why")
        elif stripped == _ADDITIONAL_ELIDED:
            if self.ancestor is not None:
                self.ancestor.truncated = True
            else:
                self.g.truncated = "additional frames elided"
        elif m := _ORIGIN.match(stripped):
            self.ancestor = Ancestor(int(m.group("goid")))
            info.ancestors.append(self.ancestor)
        elif m := _CREATED_BY.match(stripped):
            goid = m.group("goid")
            self.pending_created = (m.group("func"), int(goid) if goid else None)
        else:
            self.pending = parse_function_line(line)

    def _variable(self, line: str) -> None:
        m = _VARIABLE.match(line)
        if m and self.g.frames and self.ancestor is None:
            self.g.frames[-1].variables.append(parse_variable_value(
                m.group("name"), m.group("type") or "", m.group("value")))

    def _file_line(self, file: str, line: int, has_offset: bool, pc: int = 0) -> None:
        if self.pending_created is not None:
            func, goid = self.pending_created
            created = CreatedBy(func, file, line, goid)
            if self.ancestor is not None:
                self.ancestor.created_by = created
            else:
                self.g.created_by = created
        elif self.pending is not None:
            func, args_elided = self.pending
            # Inlined frames print "(...)" and no "+0x" offset; ancestor frames print
            # "(...)" with an offset, so both marks are needed.
            frame = Frame(func, file, line, pc=pc, inlined=args_elided and not has_offset)
            (self.ancestor.frames if self.ancestor is not None else self.g.frames).append(frame)
        self.pending = self.pending_created = None

    def _close(self) -> None:
        self.g = self.ancestor = None
        self.pending = self.pending_created = None

    def finish(self) -> list[Goroutine]:
        self._close()
        return self.out
