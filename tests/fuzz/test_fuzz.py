"""Fuzzing the decoders for a bounded time: snapshot JSON documents, the Go
function table (.gopclntab), the DWARF runtime layouts, the text dump parser, and the two
decoders of what a pause reads from the target (raw records, typed values), each fed
mutations of real inputs or random memory images. The only exceptions allowed out are the project's own
(SideeyeError: one line for the user) and those an API documents.

Hypothesis runs a fixed number of examples per target (~20 s in all on the project
machine); a failure prints the minimal input it shrank to.
"""
from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import IN_CI

from pytest_sideeye.errors import SideeyeError

DATA = Path(__file__).resolve().parents[1] / "data"
SNAPSHOT = DATA / "snapshots" / "go1.24-worker-hang.json"
DUMPS = sorted((DATA / "dumps").glob("*.txt"))

def fuzz(examples: int) -> settings:
    """Bounded runs, no example database in the checkout, no per-example deadline (the
    machine is shared and noisy). Under CI the sequence of examples is fixed, so that a
    submission's result does not depend on the draw; locally every run draws anew."""
    return settings(max_examples=examples, deadline=None, database=None,
                    derandomize=IN_CI,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- mutations ------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _paths(doc, prefix=()):
    """Every place in a JSON document, as key paths."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def mutate_json(data, doc):
    """Replace or delete a few places of `doc` (drawn with hypothesis `data`)."""
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans(), label="delete"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values, label="value")
    return doc


def byte_edits(size: int, hot: int):
    """A few (offset, new byte) edits, half of them in the first `hot` bytes, where headers
    and indexes live."""
    offset = st.one_of(st.integers(0, min(hot, size) - 1), st.integers(0, size - 1))
    return st.lists(st.tuples(offset, st.integers(0, 255)), min_size=1, max_size=8)


def apply_edits(blob: bytes, edits, truncate_at: int | None = None) -> bytes:
    out = bytearray(blob)
    for off, b in edits:
        out[off] = b
    return bytes(out[:truncate_at] if truncate_at is not None else out)


# --- snapshot JSON ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def snapshot_seed():
    return Seed(name=SNAPSHOT.name, doc=json.loads(SNAPSHOT.read_text()))


@fuzz(1000)
@given(data=st.data())
def test_mutated_snapshot_documents_load(snapshot_seed, tmp_path_factory, data):
    """Loading alone (report.load_snapshot, the boundary `sideeye report` and the plugin
    read recorded snapshots through): a one-line SideeyeError or a Snapshot."""
    from pytest_sideeye.report import load_snapshot

    doc = mutate_json(data, json.loads(json.dumps(snapshot_seed.doc)))
    path = tmp_path_factory.mktemp("fuzz") / "snap.json"
    path.write_text(json.dumps(doc))
    try:
        load_snapshot(str(path))
    except SideeyeError as e:
        assert "\n" not in str(e)


@fuzz(300)
@given(data=st.data())
def test_mutated_snapshot_documents(snapshot_seed, tmp_path_factory, data):
    """A mutated document through what `sideeye report` does: load it, render it as text
    and as the HTML report. Only a one-line SideeyeError may come out."""
    from pytest_sideeye.report import load_snapshot, write_report
    from pytest_sideeye.snapshot.textdump import render

    doc = mutate_json(data, json.loads(json.dumps(snapshot_seed.doc)))
    path = tmp_path_factory.mktemp("fuzz") / "snap.json"
    path.write_text(json.dumps(doc))
    try:
        snap = load_snapshot(str(path))
        render(snap)
        write_report(snap, str(path.with_suffix(".html")))
    except SideeyeError as e:
        assert "\n" not in str(e)


@fuzz(1500)
@given(data=st.data())
def test_mutated_snapshot_json_text(tmp_path_factory, data):
    """Byte-level damage to the file itself (truncation, stray bytes, bad UTF-8)."""
    from pytest_sideeye.report import load_snapshot

    blob = SNAPSHOT.read_bytes()
    edits = data.draw(byte_edits(len(blob), 2048))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    path = tmp_path_factory.mktemp("fuzz") / "snap.json"
    path.write_bytes(apply_edits(blob, edits, cut))
    try:
        load_snapshot(str(path))
    except SideeyeError as e:
        assert "\n" not in str(e)


# --- the Go function table ----------------------------------------------------------------------

class Seed(SimpleNamespace):
    """Real input for a fuzz target; a short repr so that a failing example prints only
    what hypothesis drew, not megabytes of seed."""

    def __repr__(self) -> str:
        return f"<seed {self.name}>"


@pytest.fixture(scope="module")
def pclntab_seed(go_build):
    from elftools.elf.elffile import ELFFile

    from pytest_sideeye.binary.elf import StaticImage
    data = go_build("hello").read_bytes()
    image = StaticImage(ELFFile(io.BytesIO(data)), data)
    _addr, tab = image.pclntab_section()
    good = image.symtab()
    pcs = [f.entry + k for f in list(good.funcs())[::40] for k in (0, 5, 17)]
    # The arguments gobinary gives Symtab for this binary, with the table itself fuzzed.
    kwargs = {"gofunc": good.gofunc, "read_mem": image.read, "pclntab_addr": good.pclntab_addr}
    return Seed(name="hello .gopclntab", tab=tab, text_start=good.text_start, kwargs=kwargs,
                pcs=pcs)


@fuzz(300)
@given(data=st.data())
def test_mutated_pclntab(pclntab_seed, data):
    """pclntab.Symtab over damaged .gopclntab bytes: building it and every query a
    snapshot makes (function for a PC, frames with the inline tree, file:line, pcsp)."""
    from pytest_sideeye.binary.pclntab import Symtab

    seed = pclntab_seed
    edits = data.draw(byte_edits(len(seed.tab), 4096), label="edits")
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(seed.tab))), label="truncate at")
    blob = apply_edits(seed.tab, edits, cut)
    try:
        symtab = Symtab(blob, seed.text_start, **seed.kwargs)
        for f in itertools.islice(symtab.funcs(), 50):
            symtab.func_by_name(f.name)
        for pc in seed.pcs:
            symtab.func_for_pc(pc)
            symtab.file_line(pc)
            symtab.frames_for_pc(pc, is_call_site=True)
            try:
                symtab.sp_delta(pc)
            except KeyError:
                pass   # documented: no Go function at that PC
    except SideeyeError as e:
        assert "\n" not in str(e)


# --- DWARF: the runtime layouts --------------------------------------------------------------

@pytest.fixture(scope="module")
def dwarf_seed(go_build):
    from elftools.elf.elffile import ELFFile
    data = go_build("hello", ldflags="-compressdwarf=false").read_bytes()
    elf = ELFFile(io.BytesIO(data))
    sections = {s.name: (s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()
                if s.name in (".debug_info", ".debug_abbrev")}
    assert set(sections) == {".debug_info", ".debug_abbrev"}
    return Seed(name="hello, uncompressed DWARF", blob=data, sections=sections)


@fuzz(150)
@given(data=st.data())
def test_mutated_dwarf_runtime_layout(dwarf_seed, data):
    """runtime_layout.load_layout (what gobinary.analyze runs on every new binary) over an
    ELF whose .debug_info or .debug_abbrev is damaged."""
    from elftools.elf.elffile import ELFFile

    from pytest_sideeye.binary.elf import StaticImage
    from pytest_sideeye.binary.layout import load_layout

    sections = dwarf_seed.sections
    off, size = sections[data.draw(st.sampled_from(sorted(sections)), label="section")]
    edits = [(off + o, b) for o, b in data.draw(byte_edits(size, 4096), label="edits")]
    mutated = apply_edits(dwarf_seed.blob, edits)
    try:
        elf = ELFFile(io.BytesIO(mutated))
        image = StaticImage(elf, mutated)
        load_layout(elf, image.read, image.symbols())
    except SideeyeError as e:
        assert "\n" not in str(e)


# --- decoding what a pause read: raw records and typed values ----------------------------

RECORDS = DATA / "records" / "parkzoo-go1.24.11.json"


@pytest.fixture(scope="module")
def records_seed(go_build):
    from pytest_sideeye.binary import analyze
    doc = json.loads(RECORDS.read_text())
    info = analyze(go_build(doc["app"], doc["go"], flags=tuple(doc["flags"])))
    return Seed(name=RECORDS.name, doc=doc, info=info)


@fuzz(200)
@given(data=st.data())
def test_damaged_records_decode_without_raising(records_seed, data):
    """engine.decode over a real pause's records with bytes changed anywhere (a goroutine
    list changing under us, garbage pointers and PCs): a partial snapshot, never an
    exception."""
    from pytest_sideeye.engine.bpf import source_constants
    from pytest_sideeye.engine.collect import Records
    from pytest_sideeye.engine.decode import RecordDecoder

    records = Records.from_json(records_seed.doc["records"])
    chunk = records.chunks[0]
    records.chunks[0] = apply_edits(chunk, data.draw(byte_edits(len(chunk), len(chunk)),
                                                     label="chunk edits"))
    if records.threads_raw:
        records.threads_raw = apply_edits(records.threads_raw, data.draw(
            byte_edits(len(records.threads_raw), 64), label="thread edits"))
    records.ms = [tuple(data.draw(st.integers(0, 2**64 - 1)) for _ in m) for m in records.ms]
    decoder = RecordDecoder(records_seed.info, 0, source_constants())
    for g in decoder.goroutines(records):
        assert g.status and isinstance(g.frames, list)


@pytest.fixture(scope="module")
def varzoo_seed(go_build):
    from pytest_sideeye.binary import analyze
    debug = analyze(go_build("varzoo")).debug
    zoo = debug.type_by_name("main.Zoo")
    return Seed(name="varzoo main.Zoo", debug=debug, types=[f.type for f in zoo.fields] + [zoo])


@fuzz(300)
@given(data=st.data())
def test_values_decode_random_memory(varzoo_seed, data):
    """capture.values over random memory images: every field type of varzoo's Zoo (maps,
    interfaces, channels, slices, strings, pointers, time) decoded from bytes that are
    garbage, partly unreadable, or pointing back into themselves. Always a value, within
    the limits; never an exception or an endless read."""
    import random

    from pytest_sideeye.capture.memory import Limits
    from pytest_sideeye.capture.values import read_value

    seed = data.draw(st.integers(0, 2**32), label="memory seed")
    unreadable = data.draw(st.floats(0, 0.5), label="share unreadable")
    base = 0xc000000000
    pointers = [base + 8 * k for k in range(64)]

    def read_batch(reqs):
        out = {}
        for addr, size in reqs:
            rnd = random.Random(seed ^ addr)
            if rnd.random() < unreadable:
                out[(addr, size)] = None
                continue
            # words that look like pointers into the same image, small counts, or noise
            words = [rnd.choice((rnd.choice(pointers), rnd.randrange(0, 40),
                                 rnd.getrandbits(64))) for _ in range((size + 7) // 8)]
            out[(addr, size)] = b"".join(w.to_bytes(8, "little") for w in words)[:size]
        return out

    t = data.draw(st.sampled_from(varzoo_seed.types), label="type")
    limits = Limits()
    d = read_value(varzoo_seed.debug, t, base, read_batch, limits, max_rounds=8)
    assert d.rounds <= 8
    json.dumps(d.value, default=str)   # a JSON-ready value


# --- the text dump parser ----------------------------------------------------------------------

@fuzz(2000)
@given(data=st.data())
def test_parse_dump_never_raises(data):
    """godump.parse_dump documents that it never raises: random text, and real dumps with
    lines dropped, duplicated, cut or garbled."""
    from pytest_sideeye.snapshot.godump import parse_dump

    if data.draw(st.booleans(), label="random"):
        text = data.draw(st.text(max_size=2000))
    else:
        lines = DUMPS[data.draw(st.integers(0, len(DUMPS) - 1))].read_text().splitlines()
        for _ in range(data.draw(st.integers(1, 10))):
            i = data.draw(st.integers(0, len(lines) - 1))
            kind = data.draw(st.sampled_from(["drop", "dup", "cut", "garble"]))
            if kind == "drop":
                del lines[i]
            elif kind == "dup":
                lines.insert(i, lines[i])
            elif kind == "cut":
                lines[i] = lines[i][:data.draw(st.integers(0, max(len(lines[i]), 1)))]
            else:
                lines[i] = data.draw(st.text(max_size=80))
            if not lines:
                break
        text = "\n".join(lines)
    parse_dump(text)


def test_fuzz_inputs_are_real():
    """The seeds are the real thing: without them the fuzzing above proves nothing."""
    assert SNAPSHOT.is_file() and DUMPS
    assert json.loads(SNAPSHOT.read_text())["format"] == "sideeye.snapshot/v1"
    assert os.path.getsize(SNAPSHOT) > 1000
