"""pytest-sideeye: eBPF goroutine snapshots of Go services under test.

The package is the pipeline, one folder per stage (imports flow one way, checked by
tests/architecture): binary -> capture -> engine -> snapshot (the model every stage
shares) -> report -> services and plugin (pytest, Docker) -> cli. `errors`, `settings`
and `files` are the foundation every stage may use.

`from pytest_sideeye import go_service` is the quick-start's import (and `sideeye_watch`,
for containers the user starts); each is loaded on first use, so that `import
pytest_sideeye` (to take a snapshot, say) pulls in neither pytest nor Docker.
"""


def __getattr__(name: str):
    if name == "go_service":
        from pytest_sideeye.services import go_service
        return go_service
    if name == "sideeye_watch":
        from pytest_sideeye.plugin import sideeye_watch
        return sideeye_watch
    raise AttributeError(f"module 'pytest_sideeye' has no attribute {name!r}")


__all__ = ["go_service", "sideeye_watch"]
