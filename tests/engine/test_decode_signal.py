"""Replayed pauses of fixtures/goapps/profspin that caught spinners' threads in the Go
signal handler (tests/data/records/profspin-*.json, written by tests/record_records.py):
the goroutines behind the signal frames decode to their own frames. No root, no BPF."""
from __future__ import annotations

import json

import pytest
from support import DATA, GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine.bpf import source_constants
from pytest_sideeye.engine.collect import Records
from pytest_sideeye.engine.decode import RecordDecoder

RECORDED = sorted((DATA / "records").glob("profspin-*.json"))
SPINNERS = (["main.spinLeaf", "main.spinA"],
            ["main.spinLeaf"] + ["main.down"] * 21 + ["main.spinB"])


def test_every_ci_go_version_is_recorded():
    assert {json.loads(p.read_text())["go"] for p in RECORDED} == set(GO_VERSIONS)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_goroutines_behind_signal_frames_decode_to_their_own_frames(path, go_build):
    doc = json.loads(path.read_text())
    info = analyze(go_build(doc["app"], doc["go"], flags=tuple(doc["flags"])))
    assert info.build_id == doc["build_id"], "re-record with tests/record_records.py"
    records = Records.from_json(doc["records"])
    decoder = RecordDecoder(info, doc["bias"], source_constants())
    signals = decoder.signal_contexts(records)
    assert signals, "the recorded pause caught no thread in the signal handler"
    threads = decoder.threads(records)
    running = {g.thread: g for g in decoder.goroutines(records) if g.status == "running"}
    for tid in signals:
        handler, _cut = decoder.symbolize(threads[tid][3], first_is_call_site=False)
        assert "runtime.sigtramp" in {f.function for f in handler}, tid
        g = running[tid]
        functions = [f.function for f in g.frames if f.function != "runtime.asyncPreempt"]
        assert functions in SPINNERS, (g.id, functions)
        assert g.truncated is None, (g.id, g.truncated)
