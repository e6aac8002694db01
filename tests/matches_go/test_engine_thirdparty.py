"""The engine on a Go program nobody here wrote: Go's own `cmd/pprof` web UI, built from
the toolchain's source (vendored dependencies, no network), serving on loopback.

Oracle: the program's SIGQUIT dump (GOTRACEBACK=all) taken right after our snapshot. pprof
has no /debug/pprof endpoint of its own, so there is one dump only: a goroutine that moved
between the two moments would show as a difference, so a run with differences is retried
once on a fresh process; differences twice in a row fail.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from oracle import compare, is_settled, start_app

from pytest_sideeye import settings
from pytest_sideeye.engine import take as engine
from pytest_sideeye.services import toolchains
from pytest_sideeye.snapshot.godump import parse_dump

pytestmark = pytest.mark.usefixtures("needs_root")
VERSION = "1.24.11"


@pytest.fixture(scope="module", params=["", "-s -w"], ids=["dwarf", "stripped"])
def pprof_binary(request):
    """cmd/pprof as Go builds it, and as a release would ship it: -ldflags='-s -w' (no
    DWARF, no symbol table: layouts from the table, goroutine list from the code)."""
    if VERSION not in toolchains.installed_versions():
        pytest.fail(f"Go {VERSION} not installed")
    ldflags = request.param
    out = settings.build_cache() / f"cmd-pprof-go{VERSION}{'-stripped' if ldflags else ''}"
    if not out.is_file():
        root = toolchains.goroot(VERSION)
        env = dict(os.environ, GOROOT=str(root), GOTOOLCHAIN="local", GOPROXY="off",
                   GOFLAGS="-mod=vendor", CGO_ENABLED="0",
                   GOCACHE=str(toolchains.gocache(VERSION)))
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(toolchains.go_binary(VERSION)), "build", "-o", str(out) + ".tmp",
                        "-ldflags", ldflags, "."], cwd=root / "src" / "cmd" / "pprof",
                       env=env, check=True, capture_output=True)
        os.replace(str(out) + ".tmp", out)
    return out


@pytest.fixture(scope="module")
def profile_file(go_build, tmp_path_factory):
    """A real goroutine profile for pprof to serve, fetched from a fixture program."""
    with start_app(go_build("parkzoo", VERSION)) as app:
        data = app.get("/debug/pprof/goroutine")
    path = tmp_path_factory.mktemp("pprof") / "goroutine.pb.gz"
    path.write_bytes(data)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pprof(binary: Path, profile: Path):
    port = _free_port()
    err = tempfile.NamedTemporaryFile(prefix="pprof-", suffix=".stderr", delete=False)
    env = dict(os.environ, GOTRACEBACK="all", PPROF_TMPDIR=tempfile.gettempdir())
    proc = subprocess.Popen([str(binary), "-no_browser", f"-http=127.0.0.1:{port}",
                             str(profile)], stdout=subprocess.DEVNULL, stderr=err, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/top", timeout=5) as r:
                r.read()
            # Some real traffic first: the flame graph and the top table.
            for page in ("/ui/flamegraph", "/ui/top"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=30) as r:
                    r.read()
            time.sleep(0.3)
            return proc, Path(err.name)
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"pprof did not serve: {Path(err.name).read_text()[-500:]}")


def _snapshots_then_sigquit(binary: Path, profile: Path):
    """Two snapshots 0.3 s apart, then the program's own SIGQUIT dump."""
    proc, err = _start_pprof(binary, profile)
    try:
        first = engine.take_snapshot([proc.pid]).processes[0]
        time.sleep(0.3)
        second = engine.take_snapshot([proc.pid]).processes[0]
        proc.send_signal(signal.SIGQUIT)
        proc.wait(30)
        return first, second, parse_dump(err.read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.unlink(missing_ok=True)


def test_cmd_pprof_web_server_matches_its_own_dump(pprof_binary, profile_file):
    """One run, no retry: the goroutines compared are picked from the dump (every one it
    shows settled), so a goroutine our snapshots miss is a difference. The only ones let
    off are those our two snapshots saw move (present in both, different): they may move
    again before SIGQUIT. The dump is the only one (SIGQUIT ends the program, pprof serves
    no /debug/pprof), so nothing created after our snapshot can be told apart: pprof's
    server is idle by then."""
    first, ours, oracle = _snapshots_then_sigquit(pprof_binary, profile_file)
    assert first.error is None and ours.error is None, (first.error, ours.error)
    assert ours.go_version == f"go{VERSION}"
    stripped = "-stripped" in str(pprof_binary)
    assert ours.layouts.startswith("table (Go ") == stripped, ours.layouts
    settled = [g for g in oracle if g.id != 0 and is_settled(g)]
    moving = _seen_moving(first, ours)
    assert len(moving) <= 2, f"goroutines {sorted(moving)} moved in an idle server"
    picked = [g for g in settled if g.id not in moving]
    assert len(picked) >= 3, "pprof's web server should have parked goroutines"
    diffs = compare(ours, picked)
    assert not diffs, "\n".join(diffs)
    # The server's accept loop is among what matched.
    assert any(g.blocked_in("net/http.(*Server).Serve") for g in ours.goroutines)


def _seen_moving(first, second) -> set[int]:
    """Goroutines in both snapshots whose state differs between them."""
    before = {g.id: g.to_json() for g in first.goroutines}
    return {g.id for g in second.goroutines if g.id in before and before[g.id] != g.to_json()}
