"""Stage 6, the pytest plugin (entry point: plugin.hooks, the hooks and the fixture, each
delegating): options and markers (options.py, specs.py), timers (pytest-timeout's, or our
own in timeouts.py) and the snapshots on a timeout (on_timeout.py) or a failure
(reporting.py), leak checks (leak_check.py, leaks.py), and their attachment to the results
(attach.py: files, junit, pytest-html, the terminal).

Takes a pytest run, its `go_service` services and the containers its tests use (targets.py:
found behind fixture values, named by selectors or `sideeye_watch`); gives reports
attached to test results.
"""
from pytest_sideeye.plugin.attach import sanitise
from pytest_sideeye.plugin.targets import watch as sideeye_watch

__all__ = ["sanitise", "sideeye_watch"]
