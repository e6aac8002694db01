"""pytest-sideeye: eBPF goroutine snapshots of Go services under test."""
