"""Decoding replayed from recorded pauses: no root, no BPF, no live process.

tests/data/records/ holds, per Go version in CI, the raw records of a real snapshot of
parkzoo (built with -trimpath, so this test rebuilds the very same binary) and the
goroutines they decoded to, which tests/record_records.py checked against parkzoo's own
dumps when it wrote them. A change to decode.py, pclntab.py or the runtime layouts that
alters what these records decode to fails here, for every Go version, on any machine.
"""
from __future__ import annotations

import json

import pytest
from record_records import record_layout
from support import DATA, GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine.bpf import source_constants
from pytest_sideeye.engine.collect import Records
from pytest_sideeye.engine.decode import RecordDecoder

RECORDED = sorted((DATA / "records").glob("*.json"))


def test_every_ci_go_version_is_recorded():
    got = {json.loads(p.read_text())["go"] for p in RECORDED}
    assert got == set(GO_VERSIONS), "re-record: sudo .venv/bin/python tests/record_records.py"


@pytest.fixture(params=RECORDED, ids=lambda p: p.stem)
def recorded(request, go_build):
    doc = json.loads(request.param.read_text())
    binary = go_build(doc["app"], doc["go"], flags=tuple(doc["flags"]))
    info = analyze(binary)
    assert info.build_id == doc["build_id"], (
        "the rebuilt binary differs from the recorded one: re-record with "
        "tests/record_records.py")
    assert record_layout() == doc["layout"], (
        "bpf/snapshot.bpf.c's record layout changed: re-record with tests/record_records.py")
    return doc, info


def test_recorded_records_decode_to_the_recorded_goroutines(recorded):
    doc, info = recorded
    records = Records.from_json(doc["records"])
    got = RecordDecoder(info, doc["bias"], source_constants()).goroutines(records)
    want = doc["goroutines"]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.to_json() == w, f"goroutine {w['id']}"


def test_records_round_trip_through_json(recorded):
    doc, _info = recorded
    once = Records.from_json(doc["records"])
    assert Records.from_json(json.loads(json.dumps(once.to_json()))) == once


def test_a_damaged_record_decodes_without_crashing(recorded):
    """Bad memory yields a partial snapshot, never an exception: flip bytes in every
    goroutine record's frames and decode again."""
    doc, info = recorded
    records = Records.from_json(doc["records"])
    chunk = bytearray(records.chunks[0])
    for off in range(200, len(chunk), 97):
        chunk[off] ^= 0x5A
    records.chunks[0] = bytes(chunk)
    got = RecordDecoder(info, doc["bias"], source_constants()).goroutines(records)
    assert len(got) <= len(doc["goroutines"])
