"""--sideeye-timeout's own timer (pytest-timeout's, when active, is used instead: see
on_timeout.py): SIGALRM or a timer thread that fails a hanging test from inside, and leaves a
test held by a debugger alone."""
from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest


def failed_exception() -> type[BaseException]:
    return pytest.fail.Exception  # type: ignore[attr-defined]


DEBUGGER_MODULES = ("bdb", "pdb", "pydevd", "_pydevd", "debugpy", "pudb", "ipdb")


def debugger_active(thread_id: int) -> bool:
    """True when a debugger traces the test's thread (its trace function, or any frame's,
    comes from a debugger module, or a sys.monitoring debugger is registered): a test
    stopped at a breakpoint is not hanging, so the timeout is not enforced (pytest-timeout
    makes the same exception)."""
    funcs = [sys.gettrace()] if thread_id == threading.get_ident() else []
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        funcs.append(frame.f_trace)
        frame = frame.f_back
    for fn in funcs:
        module = getattr(fn, "__module__", None) or ""
        if any(part.startswith(DEBUGGER_MODULES) for part in module.split(".")):
            return True
    monitoring = getattr(sys, "monitoring", None)
    return bool(monitoring and monitoring.get_tool(monitoring.DEBUGGER_ID))


class OwnTimeout:
    """--sideeye-timeout: SIGALRM on the main thread, raising pytest's failure inside the
    test so its teardown runs (as pytest-timeout's signal method does); elsewhere a timer
    thread that raises the same failure asynchronously in the test's thread (at its next
    Python instruction: it cannot cut a long C call short).

    The failure is raised only while the setup or call phase itself runs (`in_phase`):
    raised in pytest's own code between phases it would be an INTERNALERROR, so an alarm
    that comes then is retried shortly, once the call phase has begun."""

    RETRY_S = 0.05

    def __init__(self, item: pytest.Item, seconds: float, method: str,
                 on_fire: Callable[[], str]) -> None:
        self.item = item
        self.on_fire = on_fire   # snapshots if it should; returns the failure message
        self.seconds = seconds
        self.use_signal = (method == "signal" and hasattr(signal, "SIGALRM")
                           and threading.current_thread() is threading.main_thread())
        self.fired = False
        self.in_phase = False
        self._deadline = 0.0
        self._previous: Any = None
        self._timer: threading.Timer | None = None
        self._thread_id = threading.get_ident()
        # Taken by the timer thread around its raise: once cancel() returned, no exception
        # may land in a test that already finished.
        self._lock = threading.Lock()
        self._cancelled = False

    def arm(self) -> None:
        if self.use_signal:
            self._previous = signal.signal(signal.SIGALRM, self._on_signal)
        self._start(self.seconds)

    def _start(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        if self.use_signal:
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
        else:
            self._timer = threading.Timer(seconds, self._on_thread_timer)
            self._timer.daemon = True
            self._timer.name = f"sideeye timeout {self.item.nodeid}"
            self._timer.start()

    def _stop(self) -> None:
        if self.use_signal:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elif self._timer is not None:
            self._timer.cancel()

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:  # the interval timer may be someone else's by now
                return
            self._cancelled = True
        self._stop()
        if self.use_signal and self._previous is not None:
            signal.signal(signal.SIGALRM, self._previous)
            self._previous = None

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Stop the clock while sideeye itself works (a fixture snapshot): its own time is
        not the test's."""
        if self._cancelled or self.fired:
            yield
            return
        left = self._deadline - time.monotonic()
        self._stop()
        try:
            yield
        finally:
            if not self._cancelled:
                self._start(max(left, self.RETRY_S))

    def _fire(self) -> str:
        self.fired = True
        return self.on_fire()

    def _debugged(self) -> bool:
        """At the deadline: is a debugger holding the test? Then let it be, once said."""
        if not debugger_active(self._thread_id):
            return False
        self.fired = True
        capman = self.item.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            self.item.config.get_terminal_writer().line(
                f"\nsideeye: {self.item.nodeid}: --sideeye-timeout ({self.seconds:g} s) not "
                "enforced: a debugger is active")
        return True

    def _on_signal(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        if not self.in_phase:
            signal.setitimer(signal.ITIMER_REAL, self.RETRY_S)
            return
        self._stop()
        if self._debugged():
            return
        pytest.fail(self._fire())

    def _on_thread_timer(self) -> None:
        if not self.in_phase:
            with self._lock:
                if not self._cancelled:
                    self._start(self.RETRY_S)
            return
        if self._debugged():
            return
        message = self._fire()
        failed = failed_exception()
        # An exception *class* is all PyThreadState_SetAsyncExc takes: bake the message in.
        exc = type("Failed", (failed,),   # shown as "Failed: Timeout ...", like SIGALRM's
                   {"__init__": lambda self: failed.__init__(self, message),
                    "__module__": failed.__module__})
        with self._lock:
            if not self._cancelled:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                           ctypes.py_object(exc))
