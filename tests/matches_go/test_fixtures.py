"""The fixture Go programs: each builds with every CI toolchain, reaches READY and does
what the engine's tests rely on (checked against the program's own dumps)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from oracle import PARKZOO_PARKED, AppFailed, parkzoo_reason, start_app
from support import GO_VERSIONS, GOAPPS, missing

from pytest_sideeye.services import toolchains
from pytest_sideeye.snapshot.godump import dump_info, parse_dump

APPS = {
    "parkzoo": (),
    "manyparked": ("-n", "200"),
    "churn": ("-seconds", "30"),
    "loadserver": (),
}


def functions_of(gs, function):
    return [g for g in gs if any(f.function == function for f in g.frames)]


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("app", sorted(APPS))
def test_builds_and_reaches_ready(go_build, app, version):
    with start_app(go_build(app, version), *APPS[app]) as running:
        assert running.port and running.alive()
        gs = parse_dump(running.dump_debug2())
        assert any(g.status == "running" for g in gs)  # the debug=2 handler itself


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_parkzoo_parks_every_kind(go_build, version):
    with start_app(go_build("parkzoo", version)) as app:
        gs = parse_dump(app.dump_debug2())
    for function in PARKZOO_PARKED:
        (g,) = functions_of(gs, function)
        assert (g.status, g.wait_reason) == ("waiting", parkzoo_reason(function, version)), function
    (sys_g,) = functions_of(gs, "main.parkSyscall")
    assert sys_g.status == "syscall"
    assert len(functions_of(gs, "main.spinBusy")) == 2
    (locked,) = functions_of(gs, "main.parkLockedThread")
    assert dump_info(locked).locked_to_thread


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_parkzoo_inlining_checked_with_gcflags_m(version):
    """inlinedOuter/inlinedInner must really be inlined into parkInlined (and the
    //go:noinline functions must not be), or the inlined-frame tests check nothing."""
    if version not in toolchains.installed_versions():
        missing(f"Go {version} toolchain not installed")
    go = toolchains.go_binary(version)
    env = dict(os.environ, GOROOT=str(go.parent.parent), GOPROXY="off", GOFLAGS="-mod=mod",
               GOTOOLCHAIN="local", CGO_ENABLED="0",
               GOCACHE=str(toolchains.gocache(version)))
    r = subprocess.run([str(go), "build", "-gcflags=-m", "-o", os.devnull, "."],
                       cwd=GOAPPS / "parkzoo", env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    src = (GOAPPS / "parkzoo" / "main.go").read_text().splitlines()
    call_line = next(n for n, line in enumerate(src, 1) if line == "\tinlinedOuter(forever)")
    assert re.search(rf"main.go:{call_line}:\d+: inlining call to inlinedOuter", r.stderr)
    assert re.search(rf"main.go:{call_line}:\d+: inlining call to inlinedInner", r.stderr)
    assert re.search(r": can inline inlinedInner\n", r.stderr)
    for kept in ("parkGeneric", "Parker.WaitValue", "(*Parker).WaitPointer", "(*Box[", "recurseDown"):
        assert f": can inline {kept}" not in r.stderr, kept


def test_parkzoo_flags(go_build):
    with start_app(go_build("parkzoo"), "-spinners", "3", "-extra", "25") as app:
        gs = parse_dump(app.dump_debug2())
    assert len(functions_of(gs, "main.spinBusy")) == 3
    assert len(functions_of(gs, "main.parkExtra")) == 25
    assert all(g.wait_reason == "chan receive" for g in functions_of(gs, "main.parkExtra"))


def test_parkzoo_sigquit_dump(go_build):
    with start_app(go_build("parkzoo")) as app:
        text = app.dump_sigquit()
        assert app.proc.returncode == 2
    assert text.startswith("SIGQUIT: quit")
    gs = parse_dump(text)
    for function in PARKZOO_PARKED:
        assert len(functions_of(gs, function)) == 1, function


def test_manyparked(go_build):
    with start_app(go_build("manyparked"), "-n", "500") as app:
        timing = json.loads(app.get("/stacktime?reps=2"))
        gs = parse_dump(app.dump_debug2())
    assert timing["goroutines"] >= 500 and timing["bytes"] > 500 * 100
    assert len(timing["stack_ns"]) == 2 and all(t > 0 for t in timing["stack_ns"])
    leaves = functions_of(gs, "main.parkedLeaf")
    assert len(leaves) == 500
    for g in leaves:
        names = [f.function for f in g.frames]
        assert names == ["main.parkedLeaf"] + ["main.descend"] * 9 + ["main.parkChain"]
        assert g.wait_reason == "chan receive"


def test_churn_runs_and_stops_by_itself(go_build):
    with start_app(go_build("churn"), "-seconds", "1.5", "-rate", "4000") as app:
        time.sleep(0.3)
        gs = parse_dump(app.dump_debug2())  # taken while goroutines come and go
        assert app.proc.wait(20) == 0
        time.sleep(0.1)  # let the reader thread take the last line
        done = [line for line in app.output if line.startswith("DONE")]
    assert gs and all(isinstance(g.id, int) for g in gs)
    (line,) = done
    started, finished = (int(x) for x in re.findall(r"=(\d+)", line))
    assert started == finished and started >= 1000


def test_loadserver(go_build):
    with start_app(go_build("loadserver")) as app:
        first = app.get("/work?rounds=10").decode()
        assert re.fullmatch(r"1 [0-9a-f]{16}\n", first)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: app.get(f"/work?rounds=50&hold=200&i={i}"), range(40)))
        assert json.loads(app.get("/stats")) == {"requests": 41}


def test_start_app_failures_leave_nothing_running(go_build):
    # hello prints "ready" (not READY) and sleeps: start_app must give up and kill it.
    before = set(os.listdir("/proc"))
    with pytest.raises(AppFailed, match="no READY within 0.5s"):
        start_app(go_build("hello"), timeout=0.5)
    leftover = [p for p in set(os.listdir("/proc")) - before
                if p.isdigit() and "hello-go" in _cmdline(p)]
    assert leftover == []
    with pytest.raises(AppFailed, match=r"exited \(rc=1\) before READY"):
        start_app("/bin/false")


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""
