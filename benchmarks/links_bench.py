"""What the built-in link probes cost the pause: the same targets snapshotted with
SIDEEYE_LINKS=1 and =0, alternating, medians over --reps (min in brackets).

    .venv/bin/python benchmarks/links_bench.py [--reps 9] [--go 1.24.11] [--requests 300]

Shapes: `manyparked` (1,000 goroutines, none on a socket: the probes find no frame), and
fixture `peers` with --requests HTTP requests parked in their handlers, each on its own
connection (the client process waits in net/http's roundTrip and reads in its transport's
readLoop, the server's handlers and background reads wait on the same connections: every
one of those goroutines has a probed frame). Also printed: links found, and the time
spent after the resume resolving fds to connections and matching them (not in the pause).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye.engine import take as engine  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402


def snapshot(pids: list[int], *, links: bool):
    os.environ["SIDEEYE_LINKS"] = "1" if links else "0"
    t0 = time.perf_counter()
    snap = engine.take_snapshot(pids)
    took = time.perf_counter() - t0
    for p in snap.processes:
        if p.error:
            raise SystemExit(f"snapshot of {p.pid} failed: {p.error}")
    return snap, took


def measure(pids: list[int], reps: int) -> dict:
    snapshot(pids, links=True)      # warm-up: programs loaded, binaries analysed, probes checked
    snapshot(pids, links=False)
    on: dict[int, list[int]] = {p: [] for p in pids}
    off: dict[int, list[int]] = {p: [] for p in pids}
    took_on, took_off, found = [], [], 0
    for _ in range(reps):
        for links, into, took in ((True, on, took_on), (False, off, took_off)):
            time.sleep(0.05)
            snap, t = snapshot(pids, links=links)
            took.append(t)
            for p in snap.processes:
                into[p.pid].append(p.pause_ns)
            if links:
                found = len(snap.links)
                counts = {p.pid: len(p.goroutines) for p in snap.processes}
    return {"on": on, "off": off, "links": found, "goroutines": counts,
            "took_on": statistics.median(took_on), "took_off": statistics.median(took_off)}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def row(shape: str, pid: int, r: dict) -> str:
    on, off = r["on"][pid], r["off"][pid]
    delta = statistics.median(on) - statistics.median(off)
    return (f"| {shape} | {r['goroutines'][pid]:,} | {ms(statistics.median(off))} "
            f"({ms(min(off))}) | {ms(statistics.median(on))} ({ms(min(on))}) | "
            f"{delta / 1e6:+.3f} | {r['links']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--go", default=toolchains.default_version())
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    print(f"Go {args.go}, medians of {args.reps} (min); pause in ms\n")
    print("| target | goroutines | pause, links off | pause, links on | added | links |")
    print("|---|---|---|---|---|---|")
    many = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", args.go)
    with start_app(many, "-n", "1000") as app:
        time.sleep(0.5)
        r = measure([app.pid], args.reps)
        print(row("manyparked (no socket)", app.pid, r))
    peers = toolchains.build(ROOT / "fixtures" / "goapps" / "peers", args.go)
    with start_app(peers, "server") as server:
        http_port, tcp_port = server.ready_line.split()[1:3]
        with start_app(peers, "client", f"127.0.0.1:{http_port}", f"127.0.0.1:{tcp_port}",
                       str(args.requests)) as client:
            deadline = time.monotonic() + 60
            while sum(x.startswith("parked") for x in server.output) < args.requests + 2:
                if time.monotonic() > deadline:
                    raise SystemExit("the requests did not reach their handlers")
                time.sleep(0.1)
            r = measure([server.pid, client.pid], args.reps)
            print(row(f"peers server ({args.requests + 2} handlers)", server.pid, r))
            print(row(f"peers client ({args.requests + 2} requests)", client.pid, r))
            print(f"\nwhole take_snapshot of both, median: links on {r['took_on'] * 1000:.1f} ms,"
                  f" off {r['took_off'] * 1000:.1f} ms (the difference includes the /proc "
                  "reads and matching after the resume)")


if __name__ == "__main__":
    main()
