"""The oracle: run a Go fixture program and compare our snapshot with its own dump.

A Go process prints every goroutine on SIGQUIT (GOTRACEBACK=all) and live at
/debug/pprof/goroutine?debug=2. Those dumps are the reference our snapshots are judged
against. This module starts fixture programs (`start_app`), takes their dumps, and lists
the differences between a snapshot Process and the parsed dump (`compare`).

Record the dumps kept in tests/data/dumps/ with:  .venv/bin/python tests/oracle.py record
"""
from __future__ import annotations

import copy
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_sideeye.snapshot.godump import DumpInfo, dump_info, parse_dump
from pytest_sideeye.snapshot.model import CreatedBy, Frame, Goroutine, Process

DUMPS_DIR = Path(__file__).resolve().parent / "data" / "dumps"
READY_TIMEOUT = 30.0


class AppFailed(RuntimeError):
    """The fixture program exited or never printed READY."""


@dataclass
class RunningApp:
    """A started fixture program. Use as a context manager: the process is always killed."""
    proc: subprocess.Popen
    port: int | None
    ready_line: str
    stderr_path: Path
    output: list[str] = field(default_factory=list)  # stdout lines after READY

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        if self.port is None:
            raise AppFailed(f"pid {self.pid} printed no port ({self.ready_line!r})")
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 60.0) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
            return r.read()

    def dump_debug2(self, timeout: float = 60.0) -> str:
        """The live dump of every goroutine (the runtime stops the world while writing it)."""
        return self.get("/debug/pprof/goroutine?debug=2", timeout).decode("utf-8", "replace")

    def dump_sigquit(self, timeout: float = 60.0) -> str:
        """SIGQUIT's dump from stderr. Destructive: the Go runtime exits after printing."""
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AppFailed(f"pid {self.pid} did not exit {timeout}s after SIGQUIT")
        return self.stderr()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()

    def __enter__(self) -> "RunningApp":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.stderr_path.unlink(missing_ok=True)


def start_app(binary: str | os.PathLike, *args: str, env: dict | None = None,
              timeout: float = READY_TIMEOUT) -> RunningApp:
    """Start `binary args...` and wait until it prints `READY [port]`.

    GOTRACEBACK=all is set unless `env` says otherwise. Stderr goes to a temporary file
    (a pipe nobody reads could block a large SIGQUIT dump)."""
    full_env = dict(os.environ, GOTRACEBACK="all")
    full_env.update(env or {})
    err = tempfile.NamedTemporaryFile(prefix="sideeye-app-", suffix=".stderr", delete=False)
    proc = subprocess.Popen([str(binary), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=err, env=full_env, text=True, start_new_session=True)
    err.close()
    app = RunningApp(proc, None, "", Path(err.name))
    try:
        app.ready_line = _wait_ready(proc, timeout)
    except BaseException:
        app.__exit__(None, None, None)
        raise
    words = app.ready_line.split()
    app.port = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    threading.Thread(target=_drain, args=(proc, app.output), daemon=True).start()
    return app


def _wait_ready(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:
                raise AppFailed(f"{proc.args[0]} exited (rc={proc.wait(5)}) before READY")
            if line.startswith("READY"):
                return line.strip()
        raise AppFailed(f"{proc.args[0]} printed no READY within {timeout}s")
    finally:
        sel.close()


def _drain(proc: subprocess.Popen, into: list[str]) -> None:
    try:
        for line in proc.stdout:
            into.append(line.rstrip("\n"))
    except (ValueError, OSError):
        pass  # closed by stop()


# --- what parkzoo parks --------------------------------------------------------------

# The function each parkzoo goroutine parks in (as the dump names it) and its wait reason.
PARKZOO_PARKED = {
    "main.parkChanSend": "chan send",
    "main.parkChanRecv": "chan receive",
    "main.parkSelect": "select",
    "main.parkSelectNoCases": "select (no cases)",
    "main.parkMutex": "sync.Mutex.Lock",
    "main.parkRWMutexReader": "sync.RWMutex.RLock",
    "main.parkRWMutexWriter": "sync.RWMutex.Lock",
    "main.parkWaitGroup": "sync.WaitGroup.Wait",
    "main.parkCond": "sync.Cond.Wait",
    "main.parkSleep": "sleep",
    "main.parkAccept": "IO wait",
    "main.parkConnRead": "IO wait",
    "main.parkPipeRead": "IO wait",
    "main.parkLockedThread": "chan receive",   # also "locked to thread"
    "main.recurseDown": "chan receive",        # 200 frames deep
    "main.parkInlined": "chan receive",        # under inlinedOuter/inlinedInner (inlined)
    "main.startClosures.func1": "chan receive",
    "main.startClosures.func2.1": "chan receive",
    "main.parkGeneric[...]": "chan receive",
    "main.(*Box[...]).Wait": "chan receive",
    "main.Parker.WaitValue": "chan receive",
    "main.(*Parker).WaitPointer": "chan receive",
}
# Not parked: main.parkSyscall (status "syscall", no wait reason) and main.spinBusy
# (-spinners of them, running or runnable).
PARKZOO_RECURSION_DEPTH = 200


def parkzoo_reason(function: str, version: str) -> str:
    """The wait reason Go `version` prints for parkzoo's goroutine in `function`."""
    reason = PARKZOO_PARKED[function]
    # Go 1.21 parks WaitGroup.Wait with the generic semacquire reason.
    if reason == "sync.WaitGroup.Wait" and version.startswith("1.21."):
        return "semacquire"
    return reason


# --- comparison -------------------------------------------------------------------

# Statuses of goroutines that move on their own between the oracle's moment and ours:
# their stacks cannot be expected to match (the debug=2 handler's own goroutine is one).
UNSETTLED = ("running", "runnable", "preempted")


def compare(snapshot_process: Process | Iterable[Goroutine], oracle_goroutines: Iterable[Goroutine],
            *, ignore_running: bool = True, max_frame_diffs: int = 5,
            complete: bool = False) -> list[str]:
    """Differences between our goroutines and a parsed runtime dump, one line each.

    Every settled oracle goroutine must be in ours with the same id, status, wait reason,
    frames (function, file, line, inlined) in order and created-by. Tolerances, each for
    a documented reason:
    - goroutine 0 is skipped: in a SIGQUIT dump it is the signal thread's g0, not a
      goroutine of runtime.allgs;
    - with ignore_running, goroutines running/runnable/preempted in the oracle (or whose
      stack the runtime could not print) are skipped: they move between the two moments.
      With complete=True only their status and frames are skipped: their ids must be in ours;
    - goroutines only in ours are fine: level-1 dumps (debug=2) hide runtime goroutines;
      with complete=True (the oracle is a whole level-2 dump taken right after ours) a
      goroutine only in ours is a difference, and so is a different goroutine count.
      A goroutine id twice in ours always is;
    - a level-1 oracle hides runtime-internal frames and wrappers (traceback.go
      showfuncinfo): the same rule is applied to our frames before comparing;
    - against a level-2 oracle (SIGQUIT), every frame counts, wrappers included (the
      snapshot keeps them, marked), except runtime.goexit, which ours does not list;
    - where the runtime printed "...N frames elided...", only the frames it printed on
      either side are compared, plus the total count.
    """
    ours = snapshot_process.goroutines if isinstance(snapshot_process, Process) else list(snapshot_process)
    oracle = list(oracle_goroutines)
    by_id = {g.id: g for g in ours}
    full_frames = oracle_shows_runtime_frames(oracle)
    diffs: list[str] = [f"goroutine {i} twice in the snapshot" for i in
                        sorted({g.id for g in ours if sum(h.id == g.id for h in ours) > 1})]
    if complete:
        known = {g.id for g in oracle}
        diffs += [f"{describe(g)}: only in the snapshot" for g in ours if g.id not in known]
        mine, theirs = (sum(g.id != 0 for g in side) for side in (ours, oracle))
        if mine != theirs:
            diffs.append(f"{mine} goroutines in the snapshot, oracle {theirs}")
    for want in oracle:
        if want.id == 0:
            continue
        got = by_id.get(want.id)
        skipped = ignore_running and not is_settled(want)
        if got is None and (complete or not skipped):
            # A whole dump lists unsettled goroutines too: their ids must be in ours.
            diffs.append(f"{describe(want)}: missing from the snapshot")
        if got is None or skipped:
            continue
        diffs += _compare_goroutine(got, want, full_frames, max_frame_diffs)
    return diffs


def is_settled(g: Goroutine) -> bool:
    unavailable = (g.truncated or "").startswith("stack unavailable")
    return g.status not in UNSETTLED and not unavailable


def describe(g: Goroutine) -> str:
    where = next((f.function for f in g.frames if not f.function.startswith("runtime.")),
                 g.frames[0].function if g.frames else "?")
    state = g.wait_reason or g.status
    return f"goroutine {g.id} [{state}] in {where}"


def _compare_goroutine(got: Goroutine, want: Goroutine, full_frames: bool,
                       max_frame_diffs: int) -> list[str]:
    name = describe(want)
    diffs = []
    if got.status != want.status:
        diffs.append(f"{name}: status {got.status!r}, oracle {want.status!r}")
    if got.wait_reason != want.wait_reason:
        diffs.append(f"{name}: wait reason {got.wait_reason!r}, oracle {want.wait_reason!r}")
    if full_frames:
        frames, want = without_plumbing(got.frames, got.created_by), _without_plumbing(want)
    else:
        frames = visible_frames(got.frames, got.created_by)
    diffs += [f"{name}: {d}" for d in _compare_frames(frames, want, dump_info(got))][:max_frame_diffs]
    diffs += [f"{name}: {d}" for d in _compare_created_by(got, want, full_frames)]
    return diffs


def _compare_frames(got: list[Frame], want: Goroutine, got_info: DumpInfo) -> list[str]:
    info = dump_info(want)
    if got_info.elided:
        # Ours is itself a parsed dump: both sides left the same frames out.
        diffs = [] if (got_info.elided, got_info.elided_at) == (info.elided, info.elided_at) else \
            [f"{got_info.elided} frames elided at {got_info.elided_at}, oracle {info.elided} at {info.elided_at}"]
        if len(got) != len(want.frames):
            diffs.append(f"{len(got)} frames, oracle {len(want.frames)}")
        return diffs + _frame_diffs(got, want.frames, 0)
    if info.elided and info.elided_at is not None:
        head, tail = want.frames[:info.elided_at], want.frames[info.elided_at:]
        total = len(want.frames) + info.elided
        diffs = [] if len(got) == total else [f"{len(got)} frames, oracle {total} (with {info.elided} elided)"]
        diffs += _frame_diffs(got[:len(head)], head, 0)
        offset = len(got) - len(tail)
        diffs += _frame_diffs(got[max(offset, 0):], tail, offset)
        return diffs
    if want.truncated == "additional frames elided":
        got = got[:len(want.frames)]  # pre-1.21 runtimes print only the first 100 frames
    diffs = [] if len(got) == len(want.frames) else [f"{len(got)} frames, oracle {len(want.frames)}"]
    return diffs + _frame_diffs(got, want.frames, 0)


def _frame_diffs(got: list[Frame], want: list[Frame], start: int) -> list[str]:
    diffs = []
    for i, (a, b) in enumerate(zip(got, want), start):
        if (a.function, a.file, a.line, a.inlined) != (b.function, b.file, b.line, b.inlined):
            diffs.append(f"frame {i}: {_frame_text(a)}, oracle {_frame_text(b)}")
    if len(got) < len(want):
        diffs += [f"frame {start + len(got) + k}: missing, oracle {_frame_text(b)}"
                  for k, b in enumerate(want[len(got):])]
    return diffs


def _frame_text(f: Frame) -> str:
    return f"{f.function} {Path(f.file).name}:{f.line}{' (inlined)' if f.inlined else ''}"


def _compare_created_by(got: Goroutine, want: Goroutine, full_frames: bool) -> list[str]:
    a, b = got.created_by, want.created_by
    if b is None:
        # The runtime prints no creator for goroutine 1, nor (at level 1) one it would
        # hide as a frame.
        hidden = a is not None and not full_frames and not shown_at_level1(a.function, a.file)
        return [] if a is None or want.id == 1 or hidden else [f"created by {a.function}, oracle none"]
    if a is None:
        return [f"created by missing, oracle {b.function} {Path(b.file).name}:{b.line}"]
    diffs = []
    if (a.function, a.file, a.line) != (b.function, b.file, b.line):
        diffs.append(f"created by {a.function} {Path(a.file).name}:{a.line}, "
                     f"oracle {b.function} {Path(b.file).name}:{b.line}")
    if b.goroutine is not None and a.goroutine != b.goroutine:
        diffs.append(f"created in goroutine {a.goroutine}, oracle {b.goroutine}")
    return diffs


def oracle_shows_runtime_frames(oracle: Iterable[Goroutine]) -> bool:
    """True for a level-2 dump (SIGQUIT prints every frame), False for debug=2.

    Only settled goroutines count: a goroutine that has not started yet shows
    runtime.goexit even at level 1."""
    return any(not shown_at_level1(f.function, f.file, first=(i == 0))
               for g in oracle if is_settled(g) for i, f in enumerate(g.frames))


def shown_at_level1(function: str, file: str, *, first: bool = False) -> bool:
    """traceback.go showfuncinfo at GOTRACEBACK=single/all: runtime internals and
    compiler-generated wrappers are hidden, exported runtime functions shown."""
    if file == "<autogenerated>" or function.endswith("-fm"):
        return False
    if function == "runtime.gopanic" and not first:
        return True
    if "." not in function:
        return False
    return not function.startswith("runtime.") or _is_exported_runtime(function)


def _is_exported_runtime(function: str) -> bool:
    name = function[len("runtime."):]
    receiver, _, name = name.rpartition(".")
    if receiver.startswith("(*") and receiver.endswith(")"):
        receiver = receiver[2:-1]
    return name[:1].isupper() and (not receiver or receiver[:1].isupper())


def visible_frames(frames: list[Frame], created_by: CreatedBy | None = None) -> list[Frame]:
    """Our frames as a level-1 dump would print them (all of them if that hides every one,
    as traceback1 does)."""
    shown = [f for i, f in enumerate(frames)
             if shown_at_level1(f.function, f.file, first=(i == 0))
             and not is_go_statement_wrapper(f, created_by)]
    return shown or list(frames)


def is_go_statement_wrapper(f: Frame, created_by: CreatedBy | None) -> bool:
    """The closure the compiler wraps around `go f(args)` (X.gowrapN since Go 1.22, X.funcN
    before): a wrapper (hidden at level 1) whose position is the go statement itself.
    The name alone cannot tell it from a user closure in Go 1.21, the position can."""
    prefix, _, last = f.function.rpartition(".")
    if re.fullmatch(r"gowrap\d+", last):
        return True  # only the compiler makes these (and linknames change the prefix)
    if created_by is None or (f.file, f.line) != (created_by.file, created_by.line):
        return False
    return prefix == created_by.function and re.fullmatch(r"func\d+", last) is not None


def without_plumbing(frames: list[Frame], created_by: CreatedBy | None) -> list[Frame]:
    """Frames without runtime.goexit (a level-2 dump prints it, ours does not): see
    compare."""
    return [f for f in frames if f.function != "runtime.goexit"]


def _without_plumbing(g: Goroutine) -> Goroutine:
    trimmed = copy.copy(g)  # keeps dump_info (elision), which sits above the plumbing
    trimmed.frames = without_plumbing(g.frames, g.created_by)
    return trimmed


def stable_goroutines(before: Iterable[Goroutine], after: Iterable[Goroutine]) -> list[Goroutine]:
    """Goroutines identical in two dumps taken around a snapshot: only these can be
    expected to match a snapshot taken between the two moments."""
    later = {g.id: g for g in after}
    return [g for g in before if g.id in later and _same(g, later[g.id])]


def _same(a: Goroutine, b: Goroutine) -> bool:
    ja, jb = a.to_json(), b.to_json()
    return ja["status"] == jb["status"] and ja["wait_reason"] == jb["wait_reason"] \
        and ja["frames"] == jb["frames"] and ja["created_by"] == jb["created_by"]


# --- recording the dumps kept in tests/data/dumps ------------------------------------

def record_parkzoo_dumps(versions: Iterable[str], out: Path = DUMPS_DIR) -> list[Path]:
    """One debug=2 and one SIGQUIT dump of parkzoo per Go version."""
    from pytest_sideeye.services import toolchains
    root = Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for v in versions:
        binary = toolchains.build(root / "fixtures" / "goapps" / "parkzoo", v)
        with start_app(binary) as app:
            debug2 = app.dump_debug2()
            sigquit = app.dump_sigquit()
        for kind, text in (("debug2", debug2), ("sigquit", sigquit)):
            path = out / f"parkzoo-go{v}.{kind}.txt"
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"]:
        sys.exit("usage: oracle.py record [GO_VERSION...]")
    for p in record_parkzoo_dumps(sys.argv[2:] or ("1.21.13", "1.24.11", "1.27.3")):
        print(p, len(parse_dump(p.read_text())), "goroutines")
