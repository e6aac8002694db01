"""Pausing a process (SIGSTOP until every thread is stopped) and resuming it, or several
stopped together (StoppedTogether), with the guardian (guardian.py) standing by to resume
every one of them if this process dies."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pytest_sideeye import settings
from pytest_sideeye.errors import NoPermission, SideeyeError, TargetGone

GUARDIAN = Path(__file__).with_name("guardian.py")
STOP_TIMEOUT_S = 0.2   # a stop that takes longer is abandoned and the process resumed
# With a kernel-side sign of the stop (the stop hook), /proc is polled only when that sign
# is late: the target may have exited, or the hook may not run on this kernel.
SIGN_GRACE_NS = 5_000_000


class StopFailed(SideeyeError):
    pass


@dataclass
class PauseTimes:
    stop_ns: int = 0      # SIGSTOP sent -> every thread stopped
    pause_ns: int = 0     # SIGSTOP sent -> SIGCONT sent
    resume_ns: int = 0    # the SIGCONT call itself
    threads: int = 0
    marks: dict[str, int] = field(default_factory=dict)
    stopped_at_ns: int = 0   # CLOCK_MONOTONIC once every thread was seen stopped
    waited_ns: int = 0       # stopped, waiting for the collection of others (together)


class Guardian:
    """Handle on the guardian process (one per collector process, started lazily)."""

    _proc: subprocess.Popen | None = None

    @classmethod
    def _pipe(cls):
        if cls._proc is None or cls._proc.poll() is not None:
            cls._proc = subprocess.Popen(
                [sys.executable, "-S", "-I", str(GUARDIAN), str(settings.max_pause_s())], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, start_new_session=True, close_fds=True)
            atexit.register(cls.close)
            if cls._proc.stdout.readline() != b"ready\n":
                raise SideeyeError("the resume guardian did not start; nothing was paused")
            cls._proc.stdout.close()
        return cls._proc.stdin

    @classmethod
    def tell(cls, line: str) -> None:
        cls.tell_many([line])

    @classmethod
    def tell_many(cls, lines: list[str]) -> None:
        """Lines in one write: the guardian knows of every process before the first stop."""
        pipe = cls._pipe()
        pipe.write(b"".join(line.encode() + b"\n" for line in lines))
        pipe.flush()

    @classmethod
    def close(cls) -> None:
        if cls._proc is not None and cls._proc.poll() is None:
            cls._proc.stdin.close()
            cls._proc.wait(timeout=5)
        cls._proc = None


def proc_state(pid: int, tid: int | str | None = None) -> str:
    """The one-letter state of a process, or of one of its threads, from /proc/.../stat."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fd = os.open(path, os.O_RDONLY)   # no file object: a stop is confirmed thread by thread
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return chr(data[data.rindex(b")") + 2])


def tracer_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def check_pausable(pid: int) -> None:
    """Refuse targets we must not resume later: already stopped, or traced by someone."""
    try:
        state = proc_state(pid)
        tracer = tracer_pid(pid)
    except FileNotFoundError:
        raise TargetGone(f"process {pid} does not exist (it exited?)") from None
    except PermissionError:
        raise NoPermission(f"no permission to inspect process {pid}: run as root") from None
    if state in "Zx":
        raise TargetGone(f"process {pid} has exited (state {state})")
    if state in "Tt":
        raise StopFailed(f"process {pid} is already stopped by someone else: left as it is")
    if tracer:
        raise StopFailed(f"process {pid} is being traced by process {tracer} (a debugger?)")


def _all_threads_stopped(pid: int) -> tuple[bool, int]:
    tids = os.listdir(f"/proc/{pid}/task")
    for tid in tids:
        try:
            st = proc_state(pid, tid)
        except FileNotFoundError:
            continue  # a thread that just exited
        if st not in "tTZX":
            return False, len(tids)
    return True, len(tids)


@contextmanager
def paused(pid: int, times: PauseTimes, stopped=None):
    """Stop every thread of `pid`, yield, and always resume (the guardian covers our death).

    `stopped`, if given, is a cheap callable telling when the kernel has completed the
    group stop (every thread has stopped); without it, or while it says no for too long,
    each thread's state is read from /proc."""
    check_pausable(pid)
    Guardian.tell(f"S {pid}")
    t0 = time.perf_counter_ns()
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        Guardian.tell(f"C {pid}")
        raise TargetGone(f"process {pid} exited") from None
    try:
        _wait_stopped(pid, t0, times, stopped)
        yield
    finally:
        _resume(pid, t0, times)


def _resume(pid: int, t0: int, times: PauseTimes | None) -> None:
    """SIGCONT (a process already gone needs none), tell the guardian, and record in `times`
    how long the pause since t0 and the resume took."""
    t1 = time.perf_counter_ns()
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    t2 = time.perf_counter_ns()
    Guardian.tell(f"C {pid}")
    if times is not None:
        times.pause_ns = t2 - t0
        times.resume_ns = t2 - t1


def _wait_stopped(pid: int, t0: int, times: PauseTimes, stopped=None, *,
                  relist: bool = True) -> None:
    """Until every thread of pid is stopped. relist=False: one look that finds every
    thread stopped is enough (the caller lists again later: StoppedTogether.stop)."""
    deadline = t0 + int(STOP_TIMEOUT_S * 1e9)
    while True:
        if stopped is not None:
            if stopped():
                times.stopped_at_ns = time.monotonic_ns()
                times.stop_ns = time.perf_counter_ns() - t0
                return
            if time.perf_counter_ns() - t0 < SIGN_GRACE_NS:
                # Spin: sleeping between looks was measured slower (a timer armed on the
                # CPU where the hook then runs with interrupts off cannot wake us).
                continue
        try:
            done, n = _all_threads_stopped(pid)
        except FileNotFoundError:
            raise TargetGone(f"process {pid} exited while being stopped") from None
        if done and relist:
            # Threads created while we were stopping the others are caught by listing again.
            done, n = _all_threads_stopped(pid)
        if done:
            times.stopped_at_ns = time.monotonic_ns()
            times.stop_ns = time.perf_counter_ns() - t0
            times.threads = n
            return
        if time.perf_counter_ns() > deadline:
            raise StopFailed(f"process {pid} did not stop within {STOP_TIMEOUT_S * 1000:.0f} ms "
                             "(a thread in uninterruptible sleep?); resumed it")
        time.sleep(0)


class StoppedTogether:
    """Several processes stopped at once (SIDEEYE_TOGETHER): the guardian told of them all
    in one write, SIGSTOP sent to each back to back, then each waited for until every
    thread of it is stopped, so that their stop instants lie as close together as the
    kernel delivers the signals. Each is then resumed on its own as soon as it has been
    collected (`held`), and any still stopped on the way out (`stopped_together`). A
    process that cannot be stopped is resumed at once; `held` raises its error."""

    def __init__(self) -> None:
        self.times: dict[int, PauseTimes] = {}
        self.errors: dict[int, SideeyeError] = {}
        self._sent_ns: dict[int, int] = {}   # perf_counter_ns at its SIGSTOP

    def stop(self, pids: list[int]) -> None:
        ok = []
        for pid in pids:
            try:
                check_pausable(pid)
                ok.append(pid)
            except SideeyeError as e:
                self.errors[pid] = e
        if not ok:
            return
        Guardian.tell_many([f"S {pid}" for pid in ok])
        for pid in ok:
            self._sent_ns[pid] = time.perf_counter_ns()
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                del self._sent_ns[pid]
                Guardian.tell(f"C {pid}")
                self.errors[pid] = TargetGone(f"process {pid} exited")
        # One look each first, so that the stop instants are taken close together (a look
        # costs tens of microseconds), then a second list of each one's threads catches
        # any created while it was being stopped.
        for relist in (False, True):
            for pid in list(self._sent_ns):
                if relist and _stays_stopped(pid):
                    continue
                times = self.times.setdefault(pid, PauseTimes())
                try:
                    _wait_stopped(pid, self._sent_ns[pid], times, relist=relist)
                except SideeyeError as e:
                    self.errors[pid] = e
                    self.resume(pid)

    def resume(self, pid: int) -> None:
        """SIGCONT now, once (a later call does nothing)."""
        t0 = self._sent_ns.pop(pid, None)
        if t0 is None:
            return
        _resume(pid, t0, self.times.get(pid))

    def resume_all(self) -> None:
        for pid in list(self._sent_ns):
            self.resume(pid)

    @contextmanager
    def held(self, pid: int, times: PauseTimes, stopped=None):
        """paused()'s stand-in for a process stopped with the others: yields at once (it
        is stopped already) and resumes it on the way out; `times` gets its figures, and
        how long it waited stopped for the collection of the processes before it."""
        if pid in self.errors:
            raise self.errors[pid]
        mine = self.times[pid]
        times.stop_ns, times.threads = mine.stop_ns, mine.threads
        times.stopped_at_ns = mine.stopped_at_ns
        times.waited_ns = time.monotonic_ns() - mine.stopped_at_ns
        try:
            yield
        finally:
            self.resume(pid)
            times.pause_ns, times.resume_ns = mine.pause_ns, mine.resume_ns


def _stays_stopped(pid: int) -> bool:
    """Every thread listed now is stopped (False when the process is gone: _wait_stopped
    then says so)."""
    try:
        return _all_threads_stopped(pid)[0]
    except FileNotFoundError:
        return False


@contextmanager
def stopped_together(pids: list[int]):
    """Stop every process first (StoppedTogether), and resume every one still stopped on
    the way out, whatever happened in between (the guardian covers our death)."""
    group = StoppedTogether()
    try:
        group.stop(pids)
        yield group
    finally:
        group.resume_all()
