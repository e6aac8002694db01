"""Building the collected tests' go_service images before the first test runs."""
from __future__ import annotations

import pytest


def build_images_first(session: pytest.Session) -> None:
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
