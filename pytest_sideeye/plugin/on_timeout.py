"""Snapshots on a timeout: from our own timer (--sideeye-timeout, timeouts.OwnTimeout) while
the test still hangs, or shortly before pytest-timeout's fires (its timer hooks: a
pre-timeout timer, or its thread method taken over so os._exit cannot cut a slow snapshot
short). A snapshot whose test ends within the margin is dropped: the test did not time out."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_sideeye.errors import one_line
from pytest_sideeye.plugin import attach
from pytest_sideeye.plugin.options import item_timeout, settings_of
from pytest_sideeye.plugin.state import ItemState, state_of
from pytest_sideeye.plugin.taking import snapshot_item
from pytest_sideeye.plugin.targets import services_of
from pytest_sideeye.plugin.timeouts import OwnTimeout


def timeout_message(seconds: float, written: attach.Written | None, start: Path,
                    problem: str | None = None) -> str:
    msg = f"Timeout (>{seconds:g} s)"
    if written is not None:
        msg += f" — sideeye snapshot: {attach.display_path(written.main, start)}"
    if problem:
        msg += f" (no goroutines: {problem})"
    return msg


def on_own_timeout(item: pytest.Item, seconds: float) -> str:
    """Runs in the timer (signal handler or thread): snapshot while the test still hangs,
    write the report, return the failure message."""
    fired = time.perf_counter()
    settings = settings_of(item.config)
    st = state_of(item)
    written, problem = None, None
    services = services_of(item) if settings.on_timeout else []
    if services:
        message = timeout_message(seconds, None, settings.start_dir)
        try:
            _, written, problem = snapshot_item(item, st.phase, "timeout", "timeout", message,
                                                services=services, since=fired)
            st.timeout_written, st.timeout_problem = written, problem
        except Exception as e:  # even writing failed (disk full...): one line, in the message
            problem = f"sideeye: {one_line(e)}"
    return timeout_message(seconds, written, settings.start_dir, problem)


def pre_timeout_snapshot(item: pytest.Item, seconds: float, method: str) -> None:
    """pytest-timeout's timer is about to fire: snapshot now, in this timer thread, and
    write the files at once (its thread method ends the process with os._exit)."""
    fired = time.perf_counter()
    settings = settings_of(item.config)
    st = state_of(item)
    services = services_of(item)
    if not services:
        return
    message = f"Timeout (>{seconds:g}s) from pytest-timeout"
    try:
        _, written, problem = snapshot_item(item, st.phase, "timeout", "timeout", message,
                                            services=services, since=fired)
    except Exception as e:
        st.timeout_problem = f"sideeye: {one_line(e)}"
        return
    st.timeout_written, st.timeout_problem = written, problem
    if method == "thread":  # no report will follow os._exit: say where the file is now
        shown = attach.display_path(written.main, settings.start_dir)
        tw = item.config.get_terminal_writer()
        tw.line(f"sideeye: snapshot before pytest-timeout fires: {shown}")


def before_pytest_timeout(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout arms its timer: start ours at (timeout - margin) to snapshot shortly
    before. Returns None so pytest-timeout still arms its own, or True when its thread
    method's timer is run by us instead (_take_over_thread_method)."""
    st = state_of(item)
    if st.own_timer is not None:  # pytest-timeout wins: both cannot own SIGALRM
        st.own_timer.cancel()
        st.own_timer = None
    st.pytest_timeout = settings.timeout
    if not settings_of(item.config).on_timeout:
        return None
    margin = min(1.0, 0.1 * settings.timeout)
    if settings.method == "thread" or threading.current_thread() is not threading.main_thread():
        return _take_over_thread_method(item, settings, margin)
    t = st.pre_timeout_timer = threading.Timer(
        max(0.0, settings.timeout - margin), pre_timeout_snapshot,
        (item, settings.timeout, settings.method))
    t.daemon = True
    t.name = f"sideeye pre-timeout {item.nodeid}"
    t.start()
    return None


def _take_over_thread_method(item: pytest.Item, settings: Any, margin: float) -> bool:
    """pytest-timeout's thread method ends the process with os._exit when it fires, which
    would cut a slow snapshot short. Run its timer ourselves: snapshot at timeout - margin,
    then hand over to its own timeout_timer (stack dump, os._exit) no earlier than the
    deadline and no earlier than the report is written."""
    import pytest_timeout
    deadline = time.monotonic() + settings.timeout
    cancelled = threading.Event()

    def fire() -> None:
        pre_timeout_snapshot(item, settings.timeout, "thread")
        if cancelled.wait(max(0.0, deadline - time.monotonic())):
            return
        pytest_timeout.timeout_timer(item, settings)

    timer = threading.Timer(max(0.0, settings.timeout - margin), fire)
    timer.daemon = True
    timer.name = f"sideeye pre-timeout {item.nodeid}"

    def cancel() -> None:  # pytest-timeout's cancel hook calls item.cancel_timeout
        cancelled.set()
        timer.cancel()
        timer.join()
        st = state_of(item)
        if st.timeout_written is not None:  # the test ended in the margin: no timeout
            attach.discard(st.timeout_written)
            st.timeout_written = None

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    timer.start()
    return True


def after_pytest_timeout(item: pytest.Item) -> None:
    """The test is over. A snapshot still running (the test ended within the margin) is
    waited for, and its files dropped: the test did not time out."""
    st = state_of(item)
    wait_for_pre_timeout(st, settings_of(item.config).budget_s)
    if st.timeout_written is not None:
        attach.discard(st.timeout_written)
        st.timeout_written = None
    return None


def wait_for_pre_timeout(st: ItemState, budget_s: float) -> None:
    """The test failed: stop a pre-timeout timer that has not fired, and wait (bounded) for
    one whose snapshot still runs, before teardown stops the containers."""
    t = st.pre_timeout_timer
    if t is None:
        return
    t.cancel()  # no effect once the snapshot has started: join() then waits for it
    if t is not threading.current_thread():
        t.join(budget_s + 5.0)


def arm_own_timeout(item: pytest.Item) -> None:
    settings = settings_of(item.config)
    st = state_of(item)
    seconds = item_timeout(item, settings)
    if not seconds or seconds <= 0 or st.pytest_timeout is not None or st.own_timer:
        return
    st.own_timer = OwnTimeout(item, seconds, settings.method,
                              lambda: on_own_timeout(item, seconds))
    st.own_timer.arm()


def disarm_own_timeout(item: pytest.Item) -> None:
    st = state_of(item)
    if st.own_timer is not None:
        st.own_timer.cancel()


@contextlib.contextmanager
def in_phase(item: pytest.Item) -> Iterator[None]:
    timer = state_of(item).own_timer
    if timer is not None:
        timer.in_phase = True
    try:
        yield
    finally:
        if timer is not None:
            timer.in_phase = False
