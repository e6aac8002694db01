"""Stripped Go binaries against the oracle: parkzoo built with -ldflags=-w (no DWARF) and
with -ldflags='-s -w' (no symbol table either), for every CI Go version, must give the
same snapshot as its DWARF build: compared with the whole SIGQUIT dump at
GOTRACEBACK=system (every goroutine, every frame, wrappers, inlined frames, created-by),
the layouts coming from the table and the runtime's globals from the code."""
from __future__ import annotations

import time

import pytest
from oracle import compare, start_app
from support import GO_VERSIONS

from pytest_sideeye.engine import take as engine
from pytest_sideeye.engine.process import check_runtime_globals
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
