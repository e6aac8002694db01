"""pytest-sideeye: eBPF goroutine snapshots of Go services under test."""
from pytest_sideeye.services.fixture import go_service  # noqa: F401  (the README quick-start imports it here)
