"""Taking a test's snapshot for the plugin: through the agent when it answers (else in this
process), bounded in time (a snapshot taken from a timer must not become a second hang),
never raising into the user's run unless asked, with the services' logs read after the
pause. `snapshot_item` takes one for a test: its spec and links, its files written."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from pytest_sideeye import bugs
from pytest_sideeye.errors import InternalError, NoPermission, SideeyeError, one_line
from pytest_sideeye.plugin import attach
from pytest_sideeye.plugin.options import item_capture, item_links, settings_of
from pytest_sideeye.plugin.targets import add_notes, build_targets, services_of
from pytest_sideeye.snapshot import Process, Snapshot, now_rfc3339


def run_bounded(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run fn in a helper thread and wait at most `seconds`: a snapshot taken from a timer
    must not become a second hang. The engine resumes its targets on its own."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    t = threading.Thread(target=work, name=f"sideeye {what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise SideeyeError(f"{what} did not finish within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _take_one_at_a_time(targets: list[Any], capture: dict[str, list[str]],
                        links: list[str] | None = None) -> Snapshot:
    """A timer's snapshot can start while another one (a fixture's, a failure's) still
    runs in a helper thread: the engine takes one at a time. One capture spec serves every
    service of a test: the engine gives each process the functions its program has, and
    notes those that none has (strict_capture=False)."""
    from pytest_sideeye.agent import take_snapshot  # the agent when it answers, else here
    return take_snapshot(targets, capture or None, strict_capture=False, links=links or None)


def take(services: list[Any], capture: dict[str, list[str]], budget_s: float,
         raise_errors: bool = False, links: list[str] | None = None
         ) -> tuple[Snapshot, str | None]:
    """Snapshot the services' processes. Returns the snapshot and, when no goroutines could
    be read at all, the one-line reason. Logs are read after the pause, so the snapshot
    is as close to the moment as possible."""
    problem: str | None = None
    from pytest_sideeye.agent import missing_privileges  # none with an agent to ask
    try:
        lacking = missing_privileges()
        if lacking:
            raise NoPermission(lacking)
        targets, gone = build_targets(services)
        if targets:
            snap = run_bounded(lambda: _take_one_at_a_time(targets, capture, links), budget_s,
                               "snapshot")
        else:
            snap = Snapshot(taken_at=now_rfc3339())
        snap.processes.extend(gone)
        add_notes(snap.processes, services)
        if not targets:
            problem = "no running Go process in the test's services"
    except SideeyeError as e:
        if raise_errors:
            raise
        problem = one_line(e)
        snap = Snapshot(processes=_errored(services, problem), taken_at=now_rfc3339())
    except Exception as e:  # an engine bug: still one line and a report with the logs
        # The line the agent answers for its own bug (bugs.py), the traceback kept in a
        # file: the same words whichever route took the snapshot.
        problem = bugs.report_line(e)
        if raise_errors:
            raise InternalError(problem) from e
        snap = Snapshot(processes=_errored(services, problem), taken_at=now_rfc3339())
    _add_logs(snap, services, budget_s)
    return snap, problem


def _errored(services: list[Any], problem: str) -> list[Process]:
    procs = []
    for svc in services:
        try:
            container = svc.container_info()
        except Exception:
            container = None
        procs.append(Process(pid=0, container=container, service=svc.name, error=problem))
    return procs


def _add_logs(snap: Snapshot, services: list[Any], budget_s: float) -> None:
    for svc in services:
        try:
            logs = run_bounded(svc.logs, min(budget_s, 10.0), f"logs of {svc.name}")
        except Exception as e:
            logs = f"(logs unavailable: {one_line(e)})"
        procs = [p for p in snap.processes if p.service == svc.name]
        for p in procs:
            p.logs = logs
        if not procs:
            snap.processes.append(Process(pid=0, service=svc.name, logs=logs,
                                          error="no process snapshotted"))


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
