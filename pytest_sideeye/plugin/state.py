"""What the plugin knows about one test while it runs: its phase, its timers, the snapshot
a timeout left and the reports still to attach (`state_of`, kept in the item's stash)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from pytest_sideeye.plugin import attach
from pytest_sideeye.plugin.timeouts import OwnTimeout


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

def state_of(item: pytest.Item) -> ItemState:
    st = item.stash.get(_STATE, None)
    if st is None:
        st = item.stash[_STATE] = ItemState()
    return st

