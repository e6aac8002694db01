"""Stage 6, the pytest plugin (entry point: plugin.hooks): options and markers, timers
(pytest-timeout's, or our own in timeouts.py), snapshots of a test's services on a
timeout or a failure, and their attachment to the results (attach.py: files, junit,
pytest-html, the terminal).

Takes a pytest run, its `go_service` services and the containers its tests use (targets.py:
found behind fixture values, named by selectors or `sideeye_watch`); gives reports
attached to test results.
"""
from pytest_sideeye.plugin.attach import sanitise
from pytest_sideeye.plugin.targets import watch as sideeye_watch

__all__ = ["sanitise", "sideeye_watch"]
