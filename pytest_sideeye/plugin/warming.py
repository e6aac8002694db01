"""Warming a test's services as soon as they are up, before its body runs: whoever will
snapshot them (the agent, or this process) prepares each of their processes as a snapshot
would before its first pause (engine.warm: the binary's analysis, the runtime layout's BPF
program, the plans and tables of the link probes and of the test's capture spec and user
links). A timeout's snapshot then pays none of it between the timeout and its report: the
kernel verifier takes seconds, and the first plan of a spec reads DWARF (~10 s for a big
program on a loaded machine).

Every service of the test is warmed: its go_service ones and the containers it uses that
others started (watched: fixture values, selectors, sideeye_watch; targets.services_of).
Each (image, capture spec, links) is warmed once per run. It runs beside the test rather
than before it: waiting would spend the test's own timeout (which covers setup) on it, and
a snapshot that comes meanwhile waits for the target being prepared (the engine's lock)
and reuses what is done. A warm that fails is quiet: the snapshot will say what is wrong.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from pytest_sideeye.plugin.options import item_capture, item_links, settings_of
from pytest_sideeye.plugin.targets import build_targets, services_of

_warmed: set[tuple] = set()


def warm_services(services: list[Any], capture: dict[str, list[str]],
                  links: list[str]) -> list[str]:
    """Start warming the services not warmed yet for this capture spec and these links.
    Returns the names of those with Go processes it warms."""
    key = (repr(sorted(capture.items())), repr(links))
    fresh = [s for s in services
             if getattr(s, "image", None) and (s.image, *key) not in _warmed]
    if not fresh:
        return []
    _warmed.update((s.image, *key) for s in fresh)
    targets, _gone = build_targets(fresh)
    if targets:
        threading.Thread(target=_warm, args=(targets, capture, links), daemon=True,
                         name="sideeye warm").start()
    return [name for name in (s.name for s in fresh)
            if any(getattr(t, "service", None) == name for t in targets)]


def _warm(targets: list[Any], capture: dict[str, list[str]], links: list[str]) -> None:
    from pytest_sideeye.agent import warm  # the agent when it answers, else here
    try:
        warm(targets, capture or None, links or None)
    except Exception:   # noqa: BLE001 - quiet: the snapshot will say what is wrong
        pass


def warm_item(item: pytest.Item) -> None:
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
