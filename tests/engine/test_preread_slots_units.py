"""engine/links/preread_slots.adopt on made-up records (no process): which of the probe
slots read in the pre-read a snapshot keeps. The whole route, on a live target:
tests/engine/test_preread_links.py."""
from __future__ import annotations

import struct

from pytest_sideeye.capture import CaptureOutput
from pytest_sideeye.engine.collect import H_INDEX, Records, _grec_size
from pytest_sideeye.engine.links.preread_slots import PrereadProbes, adopt

PC = 0x401000


def _walked_again(*indexes: int) -> bytes:
    """The pause's chunk of goroutines walked again: a record per allgs index."""
    out = b""
    for index in indexes:
        rec = bytearray(_grec_size())
        struct.pack_into("<Q", rec, 8 * H_INDEX, index)
        out += rec
    return out


def _probes() -> PrereadProbes:
    """Goroutines 3 and 70 (allgs indexes), a probe frame each, as the pre-read read them."""
    return PrereadProbes({3: [(PC, 0xc000, [(0xbff0, b"A" * 8, 8)])],
                          70: [(PC, 0xd000, [(0xcff0, b"B" * 8, 8)])]})


def test_a_goroutine_walked_again_gets_nothing_from_the_preread():
    raw = Records(1, pre_chunks=2, per_chunk=64, chunks=[b"", b"", _walked_again(70)])
    out = CaptureOutput()
    assert adopt(out, _probes(), raw) == 1
    assert list(out.frames) == [(PC, 0xc000)]
    assert out.memory().read(0xbff0, 8) == b"A" * 8
    assert out.memory()._lookup(0xcff0, 8) is None


def test_what_the_pause_read_wins():
    raw = Records(1, pre_chunks=2, per_chunk=64, chunks=[b"", b"", _walked_again()])
    out = CaptureOutput(frames={(PC, 0xc000): 5}, reads={5: [(0xbff0, b"C" * 8, 8)]})
    assert adopt(out, _probes(), raw) == 1
    assert out.frames[(PC, 0xc000)] == 5 and out.memory().read(0xbff0, 8) == b"C" * 8
    assert (PC, 0xd000) in out.frames


def test_nothing_without_a_preread_the_pause_checked():
    """The pause walked every goroutine (a fallback): no pre-read chunk stands."""
    raw = Records(1, chunks=[b""])
    out = CaptureOutput()
    assert adopt(out, _probes(), raw) == 0 and not out.frames
