"""pytest-sideeye: eBPF goroutine snapshots of Go services under test."""
from .services import go_service  # noqa: F401  (the README quick-start imports it here)
