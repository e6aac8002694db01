"""The pytest plugin: snapshot the Go services a test uses when it times out or fails, and
the `sideeye_snapshot` fixture for tests that assert on goroutines.

Stages: settings (options, ini, markers) -> timers (pytest-timeout's, or our own SIGALRM /
thread timer in timeouts.py) -> what to snapshot (targets.py: go_service services and the
containers the test uses) -> taking the snapshot (bounded in time, never raising into the
user's run) -> attach.py (files, junit, pytest-html, terminal summary).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest

from pytest_sideeye.errors import CaptureSpecError, SideeyeError, one_line
from pytest_sideeye.plugin import attach, leaks
from pytest_sideeye.plugin.taking import take
from pytest_sideeye.plugin.targets import (
    add_container_options,
    services_of,
)
from pytest_sideeye.plugin.targets import configure as configure_targets
from pytest_sideeye.plugin.timeouts import OwnTimeout
from pytest_sideeye.plugin.warming import warm_services
from pytest_sideeye.snapshot import Snapshot

DEFAULT_DIR = "sideeye-reports"
DEFAULT_BUDGET_S = 60.0


# --------------------------------------------------------------------------- settings

def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("sideeye", "goroutine snapshots of Go services under test")
    g.addoption("--sideeye-on-timeout", action="store_true", default=None,
                help="snapshot the test's Go services when it times out "
                     "(pytest-timeout's --timeout, or --sideeye-timeout)")
    g.addoption("--sideeye-on-failure", action="store_true", default=None,
                help="snapshot the test's Go services when its setup or call fails")
    g.addoption("--sideeye-timeout", type=float, default=None, metavar="SECONDS",
                help="fail a test that runs longer than this (setup + call), "
                     "snapshotting first with --sideeye-on-timeout; 0 disables")
    g.addoption("--sideeye-timeout-method", choices=("signal", "thread"), default=None,
                help="how --sideeye-timeout interrupts a test: SIGALRM (default) or a "
                     "timer thread (used anyway where signals are unavailable)")
    g.addoption("--sideeye-dir", default=None, metavar="DIR",
                help=f"where reports are written (default: {DEFAULT_DIR})")
    parser.addini("sideeye_timeout", "default for --sideeye-timeout (seconds)")
    parser.addini("sideeye_on_timeout", "like --sideeye-on-timeout", type="bool",
                  default=False)
    parser.addini("sideeye_on_failure", "like --sideeye-on-failure", type="bool",
                  default=False)
    parser.addini("sideeye_dir", "default for --sideeye-dir")
    parser.addini("sideeye_capture", "variables to capture, one function a line: "
                  "'pkg.Func: var, var.field'", type="linelist")
    parser.addini("sideeye_link", "user links, one a line: 'pkg.F: expr == pkg.G: expr' "
                  "links the frames whose values are equal (HTTP, TCP: built in)",
                  type="linelist")
    parser.addini("sideeye_snapshot_budget", "longest a snapshot may take, seconds "
                  f"(default {DEFAULT_BUDGET_S:g})")
    g.addoption("--sideeye-leaks", action="store_true", default=None,
                help="fail a test that leaves goroutines behind in the services it uses "
                     "(snapshots before and after the test body)")
    parser.addini("sideeye_leaks", "like --sideeye-leaks", type="bool", default=False)
    g.addoption("--sideeye-sqlite", action="store_true", default=None,
                help="also write each snapshot as SQLite tables (<stem>.db beside the JSON)")
    parser.addini("sideeye_sqlite", "like --sideeye-sqlite", type="bool", default=False)
    parser.addini("sideeye_leaks_settle", "how long leaked goroutines may take to end, "
                  f"seconds (default {leaks.DEFAULT_SETTLE_S:g})")
    parser.addini("sideeye_leaks_ignore_top_function", "goroutines with this function "
                  "anywhere on the stack are not leaks (one a line)", type="linelist")
    parser.addini("sideeye_leaks_ignore_created_by", "goroutines created by this function "
                  "are not leaks (one a line)", type="linelist")
    g.addoption("--sideeye-together", action="store_true", default=None,
                help="stop every process of a snapshot before collecting any (one instant "
                     "across services; each pause then includes the collection of those "
                     "before it): SIDEEYE_TOGETHER=1")
    parser.addini("sideeye_together", "like --sideeye-together", type="bool", default=False)
    add_container_options(g, parser)


@dataclass
class Settings:
    on_timeout: bool
    on_failure: bool
    timeout: float | None
    method: str
    base_dir: Path
    start_dir: Path
    capture: dict[str, list[str]]
    budget_s: float
    junit_attachments: bool
    html_report: Path | None
    leaks: bool = False
    sqlite: bool = False
    leaks_settle_s: float | None = None
    leaks_ignore_top_function: list[str] = field(default_factory=list)
    leaks_ignore_created_by: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    together: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        start = Path(config.invocation_params.dir)
        raw_dir = config.getoption("sideeye_dir") or config.getini("sideeye_dir") or DEFAULT_DIR
        base = Path(raw_dir)
        return cls(
            on_timeout=bool(config.getoption("sideeye_on_timeout")
                            or config.getini("sideeye_on_timeout")),
            on_failure=bool(config.getoption("sideeye_on_failure")
                            or config.getini("sideeye_on_failure")),
            timeout=_seconds(config.getoption("sideeye_timeout"),
                             config.getini("sideeye_timeout"), "sideeye_timeout"),
            method=config.getoption("sideeye_timeout_method") or "signal",
            base_dir=base if base.is_absolute() else start / base,
            start_dir=start,
            capture=parse_capture_lines(config.getini("sideeye_capture")),
            budget_s=_seconds(None, config.getini("sideeye_snapshot_budget"),
                              "sideeye_snapshot_budget") or DEFAULT_BUDGET_S,
            junit_attachments=_junit_wants_stdout(config),
            html_report=_html_report_path(config, start),
            leaks=bool(config.getoption("sideeye_leaks") or config.getini("sideeye_leaks")),
            sqlite=bool(config.getoption("sideeye_sqlite") or config.getini("sideeye_sqlite")),
            leaks_settle_s=_seconds(None, config.getini("sideeye_leaks_settle"),
                                    "sideeye_leaks_settle"),
            leaks_ignore_top_function=list(config.getini("sideeye_leaks_ignore_top_function")),
            leaks_ignore_created_by=list(config.getini("sideeye_leaks_ignore_created_by")),
            links=_ini_links(config),
            together=bool(config.getoption("sideeye_together")
                          or config.getini("sideeye_together")),
        )


def _seconds(option: float | None, ini: str, name: str) -> float | None:
    if option is not None:
        return option
    if not ini:
        return None
    try:
        return float(ini)
    except ValueError:
        raise pytest.UsageError(f"{name} = {ini!r}: want a number of seconds") from None


def _junit_wants_stdout(config: pytest.Config) -> bool:
    """ATTACHMENT lines only reach the XML when junit writes captured stdout."""
    if not getattr(config.option, "xmlpath", None):
        return False
    return config.getini("junit_logging") in ("system-out", "out-err", "all")


def _html_report_path(config: pytest.Config, start: Path) -> Path | None:
    path = getattr(config.option, "htmlpath", None)
    if not path or not config.pluginmanager.hasplugin("html"):
        return None
    p = Path(path)
    return p if p.is_absolute() else start / p


def parse_capture_lines(lines: Iterable[str]) -> dict[str, list[str]]:
    """'pkg.Func: a, b.c' lines (ini sideeye_capture) -> {"pkg.Func": ["a", "b.c"]};
    a type rule 'type:pkg.T: a, b' (or 'type:pkg.T', the whole value) keys 'type:pkg.T'."""
    from pytest_sideeye.capture import split_spec_line
    spec: dict[str, list[str]] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        func, exprs = split_spec_line(line)
        rule = func.startswith("type:") and len(func) > len("type:")
        if not func or not (exprs or rule) or ":" not in line:
            raise pytest.UsageError(
                f"sideeye_capture line {line!r}: want 'pkg.Func: var, var' or "
                "'type:pkg.Type: field, field'")
        merge_capture(spec, {func: exprs})
    return spec


def merge_capture(into: dict[str, list[str]], more: dict[str, Any] | None) -> dict[str, list[str]]:
    """Union of capture specs, first-seen order; a value may be a list or 'a, b' text."""
    for func, exprs in (more or {}).items():
        if isinstance(exprs, str):
            from pytest_sideeye.capture import split_exprs
            exprs = split_exprs(exprs)
        if not isinstance(func, str) or not all(isinstance(e, str) for e in exprs):
            raise CaptureSpecError(f"capture spec for {func!r}: want a list of expressions")
        have = into.setdefault(func, [])
        have.extend(e for e in exprs if e not in have)
    return into


def item_capture(item: pytest.Item, settings: Settings,
                 extra: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """ini + every sideeye marker on the item (module, class, function) + the caller's."""
    spec = merge_capture({}, settings.capture)
    for marker in reversed(list(item.iter_markers("sideeye"))):
        merge_capture(spec, marker.kwargs.get("capture"))
    return merge_capture(spec, extra)


def _ini_links(config: pytest.Config) -> list[str]:
    try:
        return _checked_links(config.getini("sideeye_link"), "sideeye_link")
    except CaptureSpecError as e:
        raise pytest.UsageError(str(e)) from None


def _checked_links(lines: Iterable[str] | str | None, where: str) -> list[str]:
    """Link specs as text, each checked now (CaptureSpecError naming where it was
    written)."""
    from pytest_sideeye.capture import parse_link
    if not lines:
        return []
    if isinstance(lines, str):
        lines = [lines]
    out = []
    for line in lines:
        try:
            out.append(parse_link(line).text)
        except CaptureSpecError as e:
            raise CaptureSpecError(f"{where}: {e}") from None
    return out


def item_links(item: pytest.Item, settings: Settings, extra=None) -> list[str]:
    """ini + every sideeye marker's links= + the caller's, first-seen order."""
    out = list(settings.links)
    for marker in reversed(list(item.iter_markers("sideeye"))):
        out += [x for x in _checked_links(marker.kwargs.get("links"), "sideeye marker links=")
                if x not in out]
    out += [x for x in _checked_links(extra, "links=") if x not in out]
    return out


def item_timeout(item: pytest.Item, settings: Settings) -> float | None:
    """The closest sideeye marker's timeout, else the option/ini."""
    for marker in item.iter_markers("sideeye"):
        if "timeout" in marker.kwargs:
            value = marker.kwargs["timeout"]
            return None if value is None else float(value)
    return settings.timeout


# --------------------------------------------------------------------------- per-item state

@dataclass
class ItemState:
    phase: str = "setup"
    own_timer: "OwnTimeout | None" = None
    pytest_timeout: float | None = None          # set when pytest-timeout armed its timer
    pre_timeout_timer: threading.Timer | None = None
    timeout_written: "attach.Written | None" = None
    timeout_problem: str | None = None
    pending: list["attach.Written"] = field(default_factory=list)   # not yet on a report
    fixture_count: int = 0


_STATE = pytest.StashKey[ItemState]()
_SETTINGS = pytest.StashKey[Settings]()


def state_of(item: pytest.Item) -> ItemState:
    st = item.stash.get(_STATE, None)
    if st is None:
        st = item.stash[_STATE] = ItemState()
    return st


def settings_of(config: pytest.Config) -> Settings:
    return config.stash[_SETTINGS]


# --------------------------------------------------------------------------- taking snapshots
# (taking.py: bounded, through the agent, logs after the pause)

def snapshot_item(item: pytest.Item, phase: str, stem: str, outcome: str, message: str,
                  services: list[Any] | None = None, capture: dict[str, Any] | None = None,
                  raise_errors: bool = False, links=None, since: float | None = None
                  ) -> tuple[Snapshot, attach.Written, str | None]:
    """`since`: the perf_counter() of what asked for it (a timeout's timer firing), from
    which Written.took_s counts; else now."""
    since = time.perf_counter() if since is None else since
    settings = settings_of(item.config)
    if services is None:
        services = services_of(item)
    spec = item_capture(item, settings, capture)
    snap, problem = take(services, spec, settings.budget_s, raise_errors,
                         links=item_links(item, settings, links))
    snap.test = {"nodeid": item.nodeid, "phase": phase, "outcome": outcome,
                 "message": message}
    written = attach.write_files(snap, settings.base_dir, item.nodeid, stem,
                                 sqlite=settings.sqlite)
    written.took_s = time.perf_counter() - since
    if problem:
        written.problems.insert(0, f"no snapshot: {problem}")
    else:  # partial: say which processes are missing and why, one line each
        written.problems[:0] = [f"{p.service or 'pid'} (pid {p.pid}): {p.error}"
                                for p in snap.processes if p.error]
    return snap, written, problem


# --------------------------------------------------------------------------- timeouts

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


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout arms its timer: start ours at (timeout - margin) to snapshot shortly
    before. Returns None so pytest-timeout still arms its own."""
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
            _discard(st.timeout_written)
            st.timeout_written = None

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    timer.start()
    return True


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    """The test is over. A snapshot still running (the test ended within the margin) is
    waited for, and its files dropped: the test did not time out."""
    st = state_of(item)
    _wait_for_pre_timeout(st, settings_of(item.config).budget_s)
    if st.timeout_written is not None:
        _discard(st.timeout_written)
        st.timeout_written = None
    return None


def _wait_for_pre_timeout(st: ItemState, budget_s: float) -> None:
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


# --------------------------------------------------------------------------- hooks

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sideeye(timeout=None, capture=None, links=None, containers=None): per-test "
                   "sideeye timeout (seconds), variables to capture ({'pkg.Func': ['var', "
                   "...]}), user links (['pkg.F: expr == pkg.G: expr']) and container "
                   "selectors (['compose:PROJECT', ...])")
    config.addinivalue_line(
        "markers", "sideeye_leaks(enabled=True, settle=1.0, ignore_top_function=(), "
                   "ignore_created_by=()): fail the test when it leaves goroutines behind "
                   "in its services")
    config.stash[_SETTINGS] = Settings.from_config(config)
    if config.stash[_SETTINGS].together:
        _set_env_for_run(config, "SIDEEYE_TOGETHER", "1")
    configure_targets(config)
    config.pluginmanager.register(SummaryCollector(), "sideeye-summary")


def _set_env_for_run(config: pytest.Config, name: str, value: str) -> None:
    """A per-snapshot setting chosen by an option: in this process's environment for the
    run, where the engine reads it and whence it travels to the agent (settings.py)."""
    before = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
    config.add_cleanup(restore)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build every image the collected tests' go_service fixtures need now, before the
    first test: a cold `go build` must not count against a test's timeout."""
    if session.config.option.collectonly or not session.items:
        return
    try:
        from pytest_sideeye.services import build_images, specs_of_items
    except ImportError:
        return
    specs = specs_of_items(session.items)
    if not specs:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    build_images(specs, say)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item):
    state_of(item).phase = "setup"
    arm_own_timeout(item)
    with _in_phase(item):
        yield
    _warm_engine(item)


def _warm_engine(item: pytest.Item) -> None:
    """Once a test's services are up, before its body runs, whoever will snapshot them
    starts preparing every one of them as a snapshot would (warming.py), so that a
    timeout's pays no analysis."""
    settings = settings_of(item.config)
    if not (settings.on_timeout or settings.on_failure or settings.leaks):
        return
    try:
        capture, links = item_capture(item, settings), item_links(item, settings)
    except Exception:   # a bad marker: the snapshot will say so
        capture, links = {}, []
    warmed = warm_services(services_of(item), capture, links)
    if warmed:   # junit property: which services this test warmed (first of their image)
        item.user_properties.append(("sideeye.warmed", ", ".join(warmed)))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item):
    state_of(item).phase = "call"
    leak_check = _start_leak_check(item)
    with _in_phase(item):
        outcome = yield
    if leak_check is not None and outcome.excinfo is None:
        problem = _finish_leak_check(item, *leak_check)
        if problem:
            outcome.force_exception(pytest.fail.Exception(problem, pytrace=False))
    # The timeout covers setup and call; teardown must be free to clean up.
    disarm_own_timeout(item)


def _start_leak_check(item: pytest.Item):
    """(services, options, before) when this test checks for leaks, else None. A snapshot
    that cannot be taken fails the test: a leak check that was asked for never passes
    silently."""
    settings = settings_of(item.config)
    opts = leaks.options_for(item, settings.leaks, settings.leaks_settle_s,
                             settings.leaks_ignore_top_function,
                             settings.leaks_ignore_created_by)
    services = services_of(item) if opts is not None else []
    if not services:
        return None
    try:
        before, _ = take(services, {}, settings.budget_s, raise_errors=True)
    except SideeyeError as e:
        pytest.fail(f"sideeye leak check: no snapshot before the test: {one_line(e)}",
                    pytrace=False)
    return services, opts, before


def _finish_leak_check(item: pytest.Item, services, opts, before: Snapshot) -> str | None:
    settings = settings_of(item.config)
    try:
        verdict = leaks.check(lambda: take(services, {}, settings.budget_s,
                                           raise_errors=True)[0], services, before, opts)
    except SideeyeError as e:
        return f"sideeye leak check: no snapshot after the test: {one_line(e)}"
    if not verdict.leaks:
        return None
    message = verdict.message()
    verdict.after.test = {"nodeid": item.nodeid, "phase": "call", "outcome": "failed",
                          "message": message.splitlines()[0]}
    written = attach.write_leak_report(verdict, settings.base_dir, item.nodeid,
                                       sqlite=settings.sqlite)
    state_of(item).pending.append(written)
    return message + f"\nreport: {attach.display_path(written.main, settings.start_dir)}"


@contextlib.contextmanager
def _in_phase(item: pytest.Item) -> Iterator[None]:
    timer = state_of(item).own_timer
    if timer is not None:
        timer.in_phase = True
    try:
        yield
    finally:
        if timer is not None:
            timer.in_phase = False


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item):
    disarm_own_timeout(item)
    state_of(item).phase = "teardown"
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    try:
        _after_report(item, report)
    except Exception as e:  # never a traceback from us in the user's run
        attach.add_section(report, "sideeye", f"sideeye: {one_line(e)}")


def _after_report(item: pytest.Item, report: pytest.TestReport) -> None:
    settings = settings_of(item.config)
    st = state_of(item)
    if report.failed:
        if report.when != "teardown":
            disarm_own_timeout(item)
        _wait_for_pre_timeout(st, settings.budget_s)
        if st.timeout_written is not None:
            _attach_timeout(item, report, st, settings)
        elif settings.on_failure and report.when in ("setup", "call"):
            _failure_snapshot(item, report, settings)
        elif st.timeout_problem:
            attach.add_section(report, "sideeye", f"no snapshot: {st.timeout_problem}")
            st.timeout_problem = None
    elif report.when == "call" and st.timeout_written is not None:
        # The test finished in the margin between our snapshot and pytest-timeout firing.
        _discard(st.timeout_written)
        st.timeout_written = None
    _flush_pending(item, report, st, settings)


def _attach_timeout(item: pytest.Item, report: pytest.TestReport, st: ItemState,
                    settings: Settings) -> None:
    written = st.timeout_written
    st.timeout_written = None
    assert written is not None
    _refresh_outcome(written, report)
    _record(item, report, written, settings)


def _failure_snapshot(item: pytest.Item, report: pytest.TestReport,
                      settings: Settings) -> None:
    services = services_of(item)
    if not services:
        return
    message = _failure_line(report)
    _, written, _ = snapshot_item(item, report.when, report.when, "failed", message,
                                  services=services)
    _record(item, report, written, settings)


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


def _refresh_outcome(written: attach.Written, report: pytest.TestReport) -> None:
    """The timeout snapshot was written before the test failed: record how it ended and
    re-render, so the report says what the user saw."""
    snap = Snapshot.load(written.json)
    assert snap.test is not None
    snap.test["outcome"] = "timeout"
    line = _failure_line(report)
    if line:
        snap.test["message"] = line
    fresh = attach.write_files(snap, written.json.parent.parent, snap.test["nodeid"],
                               written.json.stem, sqlite=written.json.with_suffix(".db").exists())
    rendering = ("text rendering failed", "HTML report failed")
    written.problems = [p for p in written.problems if not p.startswith(rendering)] + \
        fresh.problems
    written.html = fresh.html
    written.txt = fresh.txt


def _record(item: pytest.Item, report: pytest.TestReport, written: attach.Written,
            settings: Settings) -> None:
    attach.record_on_item(item, written, report.when, settings.start_dir,
                          settings.junit_attachments)
    attach.record_on_report(report, written, settings.start_dir, settings.html_report,
                            junit_attachments=settings.junit_attachments)
    _describe(report, written, settings.start_dir)


def _describe(report: pytest.TestReport, written: attach.Written, start: Path) -> None:
    """Sections shown with the failure: where the report is, why it may lack goroutines,
    and each service's container logs."""
    lines = [f"report: {attach.display_path(written.main, start)}"] + written.problems
    attach.add_section(report, "sideeye", "\n".join(lines))
    attach.add_log_sections(report, Snapshot.load(written.json))


def _discard(written: attach.Written) -> None:
    for p in (written.html, written.json, written.txt):
        if p is not None:
            p.unlink(missing_ok=True)


def _flush_pending(item: pytest.Item, report: pytest.TestReport, st: ItemState,
                   settings: Settings) -> None:
    """Fixture snapshots taken during this phase reach this phase's report."""
    while st.pending:
        attach.record_on_report(report, st.pending.pop(0), settings.start_dir,
                                settings.html_report, junit_attachments=False)


class SummaryCollector:
    """Collects report paths from every report, workers' included (xdist sends the plain
    `sideeye_reports` attribute along), for the terminal summary."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.entries.extend(getattr(report, attach.REPORTS_ATTR, None) or [])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.entries:
            return
        terminalreporter.section("sideeye reports")
        for e in self.entries:
            terminalreporter.line(f"{e['shown']}  ({e['nodeid']}, {e['phase']})")
            for problem in e.get("problems", []):
                terminalreporter.line(f"    {problem}")


# --------------------------------------------------------------------------- fixture

@pytest.fixture
def sideeye_snapshot(request: pytest.FixtureRequest) -> Callable[..., Snapshot]:
    """sideeye_snapshot(capture=None, services=None, links=None) -> Snapshot of the test's services
    (or of the given services / service names), for assertions; each one also writes a
    report attached to the test."""
    item = request.node

    def take_one(capture: dict[str, Any] | None = None,
                 services: Iterable[Any] | None = None, links=None) -> Snapshot:
        __tracebackhide__ = True
        chosen = _choose_services(item, services)
        st = state_of(item)
        st.fixture_count += 1
        stem = f"snapshot-{st.fixture_count}"
        clock = st.own_timer.suspended() if st.own_timer else contextlib.nullcontext()
        try:
            with clock:
                snap, written, _ = snapshot_item(item, st.phase, stem, "snapshot", "",
                                                 services=chosen, capture=capture,
                                                 raise_errors=True, links=links)
        except SideeyeError as e:
            pytest.fail(f"sideeye_snapshot: {one_line(e)}", pytrace=False)
        settings = settings_of(item.config)
        attach.record_on_item(item, written, st.phase, settings.start_dir,
                              settings.junit_attachments)
        st.pending.append(written)
        return snap

    return take_one


def _choose_services(item: pytest.Item, wanted: Iterable[Any] | None) -> list[Any]:
    if wanted is None:
        found = services_of(item)
        if not found:
            pytest.fail("sideeye_snapshot: this test uses no go_service and no container",
                        pytrace=False)
        return found
    chosen, by_name = [], {s.name: s for s in services_of(item)}
    for w in wanted:
        if isinstance(w, str):
            if w not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                pytest.fail(f"sideeye_snapshot: no service {w!r} in this test "
                            f"(services: {known})", pytrace=False)
            chosen.append(by_name[w])
        else:
            chosen.append(w)
    return chosen
