"""Stage 3, the engine: taking a snapshot of live processes.

Takes target PIDs (and optionally a capture spec); gives a snapshot.Snapshot. Inside, per
process: binary analysis (binary) -> the BPF programs for its runtime layout (bpf.py, C in
bpf/snapshot.bpf.c) -> pause (pause.py, the guardian resuming it whatever happens) and
collect the raw records (collect.py) -> resume -> decode them into goroutines
(decode.py) and captured variables (capture). `take_snapshot` is its face.
"""
from pytest_sideeye.engine import privileges
from pytest_sideeye.engine.bpf import captured_stderr, trial_hook, trial_load
from pytest_sideeye.engine.privileges import missing_privileges
from pytest_sideeye.engine.take import (
                                        Target,
                                        loaded_layouts,
                                        snapshot_process,
                                        take_snapshot,
                                        warm,
)

__all__ = ["Target", "captured_stderr", "loaded_layouts", "missing_privileges", "privileges", "snapshot_process", "take_snapshot", "trial_hook",
           "trial_load", "warm"]
