"""A test's leak check, around its body: a snapshot of its services before, and after it
the check of leaks.py; a leak fails the test with a diff report attached."""
from __future__ import annotations

import pytest

from pytest_sideeye.errors import SideeyeError, one_line
from pytest_sideeye.plugin import attach, leaks
from pytest_sideeye.plugin.options import settings_of
from pytest_sideeye.plugin.state import state_of
from pytest_sideeye.plugin.taking import take
from pytest_sideeye.plugin.targets import services_of
from pytest_sideeye.snapshot import Snapshot


def start(item: pytest.Item):
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


def finish(item: pytest.Item, services, opts, before: Snapshot) -> str | None:
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
