"""Report benchmark: file size, Python render time and Chromium load time (until the load
event) for synthetic but realistic snapshots of 1,000 / 10,000 / 100,000 goroutines.

    .venv/bin/python benchmarks/report_bench.py [--sizes 1000,10000,100000] [--runs 3]
    .venv/bin/python benchmarks/report_bench.py --timeout-runs 3   (as root, with Docker)

--timeout-runs N: instead, the time from a timeout to its written report (issue 28.4):
the demo suite (`python -m pytest_sideeye.cli.demo`, three services in containers, one
test hanging into its --sideeye-timeout) run N times in each mode (one after the other,
SIDEEYE_TOGETHER=1), read from the junit property sideeye.report_s the plugin records:
its timer firing -> snapshot of the three -> HTML, JSON and text written. Through a private
agent running this tree's code (skew_bench.start_agent), warmed by the plugin as the
machine's would be.

The snapshots have ~20 distinct stacks of ~10 frames modelled on a real Go 1.24 service
(frames taken from a GOTRACEBACK=all dump: runtime.gopark, runtime.chanrecv2,
internal/poll, net/http, sync, a module-cache dependency and the service's own packages),
with captured variables on two functions. `synthetic_snapshot` is also used by the tests.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))   # skew_bench's private agent

from pytest_sideeye.snapshot.model import (  # noqa: E402
    Container,
    CreatedBy,
    Frame,
    Goroutine,
    Process,
    Snapshot,
    Variable,
)

GOROOT = "/usr/local/go/src"
APP = "/src/shop/orders"
MOD = "/root/go/pkg/mod/github.com/jackc/pgx/v5@v5.7.2"

RT = [("runtime.gopark", f"{GOROOT}/runtime/proc.go", 435, False)]
GOEXIT = ("runtime.goexit", f"{GOROOT}/runtime/asm_amd64.s", 1700, False)
CHANRECV = RT + [("runtime.chanrecv", f"{GOROOT}/runtime/chan.go", 664, False),
                 ("runtime.chanrecv2", f"{GOROOT}/runtime/chan.go", 511, False)]
CHANSEND = RT + [("runtime.chansend", f"{GOROOT}/runtime/chan.go", 283, False),
                 ("runtime.chansend1", f"{GOROOT}/runtime/chan.go", 161, False)]
SELECT = RT + [("runtime.selectgo", f"{GOROOT}/runtime/select.go", 351, False)]
MUTEX = RT + [("runtime.goparkunlock", f"{GOROOT}/runtime/proc.go", 441, True),
              ("runtime.semacquire1", f"{GOROOT}/runtime/sema.go", 188, False),
              ("internal/sync.runtime_SemacquireMutex", f"{GOROOT}/runtime/sema.go", 95, False),
              ("internal/sync.(*Mutex).lockSlow", f"{GOROOT}/internal/sync/mutex.go", 149, False),
              ("internal/sync.(*Mutex).Lock", f"{GOROOT}/internal/sync/mutex.go", 70, True),
              ("sync.(*Mutex).Lock", f"{GOROOT}/sync/mutex.go", 46, True)]
IOWAIT = RT + [("runtime.netpollblock", f"{GOROOT}/runtime/netpoll.go", 575, False),
               ("internal/poll.runtime_pollWait", f"{GOROOT}/runtime/netpoll.go", 351, False),
               ("internal/poll.(*pollDesc).wait", f"{GOROOT}/internal/poll/fd_poll_runtime.go", 84, False),
               ("internal/poll.(*pollDesc).waitRead", f"{GOROOT}/internal/poll/fd_poll_runtime.go", 89, True),
               ("internal/poll.(*FD).Read", f"{GOROOT}/internal/poll/fd_unix.go", 165, False),
               ("net.(*netFD).Read", f"{GOROOT}/net/fd_posix.go", 55, False),
               ("net.(*conn).Read", f"{GOROOT}/net/net.go", 194, False)]
SLEEP = RT + [("time.Sleep", f"{GOROOT}/runtime/time.go", 338, False)]
HTTP_SERVE = [("net/http.(*connReader).Read", f"{GOROOT}/net/http/server.go", 798, False),
              ("bufio.(*Reader).fill", f"{GOROOT}/bufio/bufio.go", 113, False),
              ("bufio.(*Reader).Peek", f"{GOROOT}/bufio/bufio.go", 152, False),
              ("net/http.(*conn).serve", f"{GOROOT}/net/http/server.go", 2137, False),
              ("net/http.(*Server).Serve.gowrap3", f"{GOROOT}/net/http/server.go", 3454, False)]
HANDLER = [("github.com/acme/shop/orders.(*Service).Checkout", f"{APP}/service.go", 0, False),
           ("github.com/acme/shop/orders.(*Handler).ServeHTTP", f"{APP}/http.go", 57, False),
           ("net/http.serverHandler.ServeHTTP", f"{GOROOT}/net/http/server.go", 3301, False),
           ("net/http.(*conn).serve", f"{GOROOT}/net/http/server.go", 2102, False),
           ("net/http.(*Server).Serve.gowrap3", f"{GOROOT}/net/http/server.go", 3454, False)]
PGX = [("github.com/jackc/pgx/v5/pgconn.(*PgConn).peekMessage", f"{MOD}/pgconn/pgconn.go", 532, False),
       ("github.com/jackc/pgx/v5/pgconn.(*PgConn).receiveMessage", f"{MOD}/pgconn/pgconn.go", 552, False),
       ("github.com/jackc/pgx/v5.(*Conn).Query", f"{MOD}/conn.go", 761, False)]
WORKER = [("main.worker", "/src/shop/cmd/orders/main.go", 0, False),
          ("main.main.gowrap1", "/src/shop/cmd/orders/main.go", 45, False)]

SERVE_CB = ("net/http.(*Server).Serve", f"{GOROOT}/net/http/server.go", 3454)
MAIN_CB = ("main.main", "/src/shop/cmd/orders/main.go", 45)
RT_CB = ("runtime.gcenable", f"{GOROOT}/runtime/mgc.go", 204)


def _at(frames: list[tuple], line: int) -> list[tuple]:
    """Frames with every unset (0) line filled in: the same functions at another line is
    how a pool of workers parked at two call sites looks."""
    return [(f, file, ln or line, inl) for f, file, ln, inl in frames]


def _kinds() -> list[tuple[str, list[tuple], tuple, int]]:
    """(wait reason, frames innermost first, created by, weight): ~20 distinct stacks."""
    kinds = []
    for line in (88, 91, 104):       # checkout handlers stuck on the orders lock
        kinds.append(("sync.Mutex.Lock", MUTEX + _at(HANDLER, line) + [GOEXIT], SERVE_CB, 30))
    for line in (120, 133):          # checkout handlers waiting on the database
        kinds.append(("IO wait", IOWAIT + PGX + _at(HANDLER, line) + [GOEXIT], SERVE_CB, 12))
    for line in (22, 31):            # idle workers / workers blocked handing off results
        kinds.append(("chan receive", CHANRECV + _at(WORKER, line) + [GOEXIT], MAIN_CB, 20))
        kinds.append(("chan send", CHANSEND + _at(WORKER, line + 4) + [GOEXIT], MAIN_CB, 6))
    kinds.append(("IO wait", IOWAIT + HTTP_SERVE + [GOEXIT], SERVE_CB, 10))
    for line in (71, 75, 79):
        kinds.append(("select", SELECT + _at(WORKER, line) + [GOEXIT], MAIN_CB, 3))
    kinds.append(("sleep", SLEEP + _at(WORKER, 140) + [GOEXIT], MAIN_CB, 2))
    kinds.append(("select", SELECT + [("net/http.(*persistConn).readLoop", f"{GOROOT}/net/http/transport.go", 2395, False),
                                      ("net/http.(*Transport).dialConn.gowrap2", f"{GOROOT}/net/http/transport.go", 1944, False),
                                      GOEXIT], ("net/http.(*Transport).dialConn", f"{GOROOT}/net/http/transport.go", 1944), 2))
    kinds.append(("GC sweep wait", RT + [("runtime.goparkunlock", f"{GOROOT}/runtime/proc.go", 441, True),
                                         ("runtime.bgsweep", f"{GOROOT}/runtime/mgcsweep.go", 276, False),
                                         ("runtime.gcenable.gowrap1", f"{GOROOT}/runtime/mgc.go", 204, False),
                                         GOEXIT], RT_CB, 0))
    kinds.append(("finalizer wait", RT + [("runtime.runfinq", f"{GOROOT}/runtime/mfinal.go", 196, False),
                                          GOEXIT], ("runtime.createfing", f"{GOROOT}/runtime/mfinal.go", 166), 0))
    kinds.append(("sync.WaitGroup.Wait", MUTEX[:3] + [("sync.runtime_SemacquireWaitGroup", f"{GOROOT}/runtime/sema.go", 110, False),
                                                      ("sync.(*WaitGroup).Wait", f"{GOROOT}/sync/waitgroup.go", 118, False),
                                                      ("main.main", "/src/shop/cmd/orders/main.go", 56, False),
                                                      ("runtime.main", f"{GOROOT}/runtime/proc.go", 283, False),
                                                      GOEXIT], None, 0))
    return kinds


def _variables(function: str, gid: int, rng: random.Random) -> list[Variable]:
    if function.endswith("(*Service).Checkout"):
        order = {"ID": 10_000 + gid, "Customer": f"cust-{rng.randrange(500):03d}",
                 "Items": [{"SKU": f"SKU-{rng.randrange(90):02d}", "Qty": rng.randrange(1, 4)}
                           for _ in range(rng.randrange(1, 3))],
                 "Meta": {"region": rng.choice(["eu-west", "us-east"]), "retry": "0"}}
        return [Variable("o", "*orders.Order", order),
                Variable("o.ID", "int64", order["ID"]),
                Variable("s.mu.state", "int32", 1)]
    if function == "main.worker":
        return [Variable("id", "int", gid % 64),
                Variable("job.Name", "string", f"settle-{gid % 97}")]
    return []


_SHARED: dict[tuple, Frame] = {}


def _frame(function: str, file: str, line: int, inlined: bool, variables: list[Variable]) -> Frame:
    """Frames without variables are shared between goroutines (they are equal anyway):
    building a million Frame objects was most of the time to make 100,000 goroutines."""
    pc = 0x400000 + (zlib.crc32(f"{function}:{line}".encode()) & 0xFFFFF)
    if variables:
        return Frame(function, file, line, pc, inlined, variables)
    key = (function, file, line, inlined)
    if key not in _SHARED:
        _SHARED[key] = Frame(function, file, line, pc, inlined)
    return _SHARED[key]


def synthetic_snapshot(n: int, seed: int = 1, processes: int = 1) -> Snapshot:
    """A snapshot of `n` goroutines spread over ~20 realistic stacks (per process)."""
    rng = random.Random(seed)
    kinds = _kinds()
    weights = [w for *_, w in kinds]
    fixed = [k for k in kinds if k[3] == 0]
    procs = []
    per_proc = n // processes
    for pi in range(processes):
        gs: list[Goroutine] = []
        ref = 5_000_000_000_000 + pi
        for i in range(per_proc):
            gid = 40 + i if i >= len(fixed) else 1 + i * 16
            reason, frames, cb, _ = fixed[i] if i < len(fixed) else rng.choices(kinds, weights)[0]
            fs = [_frame(f, file, line, inl, _variables(f, gid, rng)) for f, file, line, inl in frames]
            since = ref - rng.randrange(2_000_000_000, 40_000_000_000) if rng.random() < 0.7 else None
            gs.append(Goroutine(gid, "waiting", reason, since,
                                CreatedBy(*cb, 1) if cb else None, fs))
        p = Process(1000 + pi, "/app/orders", "go1.24.11",
                    Container(f"{pi:02d}3f9a0c1b2d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c",
                              f"sideeye-orders-{pi + 1}", "sideeye/orders:test"),
                    "orders" if processes == 1 else f"orders-{pi + 1}", 1_250_000 + n * 150,
                    {"stop": 210_000, "collect": 1_000_000 + n * 150, "resume": 40_000},
                    None, [], gs,
                    "".join(f"2026/11/26 10:39:{i % 60:02d} orders: checkout {i} waiting for lock\n"
                            for i in range(40)))
        p.monotonic_ns = ref    # the pause's CLOCK_MONOTONIC: wait durations show
        procs.append(p)
    return Snapshot(procs, "2026-11-26T10:40:00.000Z",
                    {"nodeid": "tests/test_orders.py::test_checkout_under_load", "phase": "call",
                     "outcome": "failed",
                     "message": "Failed: Timeout >10.0s\n\nsideeye: 3 goroutine groups blocked in user code"})


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def load_times(paths: list[Path], runs: int) -> list[float]:
    """Median ms from navigation start to the load event, per file, in one browser."""
    from playwright.sync_api import sync_playwright
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for path in paths:
                samples = []
                for _ in range(runs):
                    page = browser.new_page()
                    page.goto(path.as_uri(), wait_until="load", timeout=120_000)
                    samples.append(page.evaluate(
                        "() => { const e = performance.getEntriesByType('navigation')[0];"
                        " return e.loadEventEnd - e.startTime; }"))
                    page.close()
                out.append(statistics.median(samples))
        finally:
            browser.close()
    return out


HANGING = "test_cancel_during_rush"


def timeout_to_report(runs: int) -> None:
    """The demo's timeout snapshot, `runs` times per mode: seconds from the timer firing
    to the report written (junit property sideeye.report_s), and the snapshot's skew."""
    import os
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"timeout -> written report, demo suite (3 services), load average {load}; "
          f"median (max) of {runs}\n")
    print("| mode | timeout -> report, s | skew, ms | pause of the last, ms |")
    print("|---|---|---|---|")
    from skew_bench import start_agent
    folder = Path(tempfile.mkdtemp(prefix="sideeye-timeout-bench-agent-"))
    agent = start_agent(folder)
    try:
        for mode, together in (("one after the other", "0"), ("together", "1")):
            env = {**os.environ, "SIDEEYE_TOGETHER": together, "SIDEEYE_AGENT": "1",
                   "SIDEEYE_AGENT_SOCKET": str(folder / "agent.sock")}
            _timeout_row(mode, env, runs)
    finally:
        agent.terminate()
        agent.wait(30)


def _timeout_row(mode: str, env: dict, runs: int) -> None:
    import json
    import subprocess
    import xml.etree.ElementTree as ET
    took, skews, pauses = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="sideeye-timeout-bench-") as tmp:
            subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.demo", "--dir", tmp,
                            "--timeout", "8"], env=env, capture_output=True, timeout=600)
            cases = ET.parse(Path(tmp) / "demo-junit.xml").iter("testcase")
            [case] = [c for c in cases if c.get("name") == HANGING]
            props = {q.get("name"): q.get("value") for q in case.iter("property")}
            took.append(float(props["sideeye.report_s"]))
            doc = json.loads((Path(tmp) / f"test_shop.py__{HANGING}" / "timeout.json")
                             .read_text())
            if doc.get("skew_ns") is None:
                raise SystemExit("the timeout's snapshot collected nothing: "
                                 f"{[p.get('error') for p in doc['processes']]}")
            skews.append(doc["skew_ns"] / 1e6)
            pauses.append(max(p["pause_ns"] for p in doc["processes"]) / 1e6)
    print(f"| {mode} | {statistics.median(took):.2f} ({max(took):.2f}) | "
          f"{statistics.median(skews):.1f} ({max(skews):.1f}) | "
          f"{statistics.median(pauses):.1f} ({max(pauses):.1f}) |", flush=True)


def main(argv: list[str] | None = None) -> int:
    from pytest_sideeye.report import render_html

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout-runs", type=int, default=0,
                    help="measure the demo's timeout -> report instead (root, Docker)")
    args = ap.parse_args(argv)
    if args.timeout_runs:
        timeout_to_report(args.timeout_runs)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sideeye-bench-") as tmp:
        paths = []
        for n in sizes:
            snap = synthetic_snapshot(n)
            renders = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                text = render_html(snap)
                renders.append((time.perf_counter() - t0) * 1000)
            path = Path(tmp) / f"report-{n}.html"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
            groups = text.count('<details class="group')
            buckets = text.count('class="bucket"')
            rows.append([n, f"{groups}/{buckets}", path.stat().st_size, statistics.median(renders)])
        for row, ms in zip(rows, load_times(paths, args.runs)):
            row.append(ms)
    # groups/buckets: stacks alike by function names / identical (function, file, line).
    print(f"{'goroutines':>10} {'groups/buckets':>14} {'size':>10} {'render (Python)':>16} "
          f"{'load (Chromium)':>16}")
    for n, groups, size, render_ms, load_ms in rows:
        print(f"{n:>10,} {groups:>14} {size / 1e6:>7.2f} MB {render_ms:>13.0f} ms "
              f"{load_ms:>13.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
