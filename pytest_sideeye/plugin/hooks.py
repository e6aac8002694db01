"""The pytest plugin: snapshot the Go services a test uses when it times out or fails, and
the `sideeye_snapshot` fixture for tests that assert on goroutines.

Stages: settings (options, ini, markers) -> timers (pytest-timeout's, or our own SIGALRM /
thread timer in timeouts.py) -> what to snapshot (targets.py: go_service services and the
containers the test uses) -> taking the snapshot (bounded in time, never raising into the
user's run) -> attach.py (files, junit, pytest-html, terminal summary).

Each hook delegates: options.py (options, ini, markers' settings), specs.py (capture specs
and links), state.py (per-test state), on_timeout.py and timeouts.py (timeout snapshots),
leak_check.py, warming.py, prebuild.py, taking.py, reporting.py and attach.py (what a
report gets), fixture.py (the sideeye_snapshot fixture's snapshots). pytest registers
this module (the pytest11 entry point): every hook and fixture is declared here.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from pytest_sideeye.errors import one_line
from pytest_sideeye.plugin import attach, leak_check, on_timeout, options, prebuild, reporting
from pytest_sideeye.plugin.fixture import snapshot_taker
from pytest_sideeye.plugin.on_timeout import arm_own_timeout, disarm_own_timeout, in_phase
from pytest_sideeye.plugin.state import state_of
from pytest_sideeye.plugin.targets import configure as configure_targets
from pytest_sideeye.plugin.warming import warm_item
from pytest_sideeye.snapshot import Snapshot


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


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
    options.configure(config)
    configure_targets(config)
    config.pluginmanager.register(attach.SummaryCollector(), "sideeye-summary")


def pytest_collection_finish(session: pytest.Session) -> None:
    prebuild.build_images_first(session)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item):
    state_of(item).phase = "setup"
    arm_own_timeout(item)
    with in_phase(item):
        yield
    warm_item(item)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item):
    state_of(item).phase = "call"
    check = leak_check.start(item)
    with in_phase(item):
        outcome = yield
    if check is not None and outcome.excinfo is None:
        problem = leak_check.finish(item, *check)
        if problem:
            outcome.force_exception(pytest.fail.Exception(problem, pytrace=False))
    # The timeout covers setup and call; teardown must be free to clean up.
    disarm_own_timeout(item)


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
        reporting.after_report(item, report)
    except Exception as e:  # never a traceback from us in the user's run
        attach.add_section(report, "sideeye", f"sideeye: {one_line(e)}")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout arms its timer: ours snapshots shortly before it fires."""
    return on_timeout.before_pytest_timeout(item, settings)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    """The test is over: a pre-timeout snapshot is waited for and dropped."""
    on_timeout.after_pytest_timeout(item)


@pytest.fixture
def sideeye_snapshot(request: pytest.FixtureRequest) -> Callable[..., Snapshot]:
    """sideeye_snapshot(capture=None, services=None, links=None) -> Snapshot of the test's services
    (or of the given services / service names), for assertions; each one also writes a
    report attached to the test."""
    return snapshot_taker(request.node)
