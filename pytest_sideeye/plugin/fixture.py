"""The `sideeye_snapshot` fixture's snapshots: of the test's services or the ones named,
for assertions, each also written and attached to the test (pytest.fail on a snapshot
that cannot be taken, naming why). The fixture itself is declared in hooks.py."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import pytest

from pytest_sideeye.errors import SideeyeError, one_line
from pytest_sideeye.plugin import attach
from pytest_sideeye.plugin.options import settings_of
from pytest_sideeye.plugin.state import state_of
from pytest_sideeye.plugin.taking import snapshot_item
from pytest_sideeye.plugin.targets import services_of
from pytest_sideeye.snapshot import Snapshot


def snapshot_taker(item: pytest.Item) -> Callable[..., Snapshot]:
    """sideeye_snapshot(capture=None, services=None, links=None) for this test."""

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
