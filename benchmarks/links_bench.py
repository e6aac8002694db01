"""What the built-in link probes cost the pause: the same targets snapshotted with
SIDEEYE_LINKS=1 and =0, alternating, medians over --reps (min in brackets).

    .venv/bin/python benchmarks/links_bench.py [--reps 9] [--go 1.24.11] [--requests 300]
                                               [--before-26] [--reads-in-pause]
                                               [--slots-in-pause]

Shapes: `manyparked` (1,000 goroutines, none on a socket: the probes find no frame), and
fixture `peers` with --requests HTTP requests parked in their handlers, each on its own
connection (the client process waits in net/http's roundTrip and reads in its transport's
readLoop, the server's handlers and background reads wait on the same connections: every
one of those goroutines has a probed frame). Also printed: links found, the time spent
after the resume resolving fds to connections, reading what the probed frames' slots point
to and matching them (not in the pause), and the pause's parts (stop, collect, capture,
hook_walk, ...) with links off and on: where the probes' cost goes.

--reads-in-pause: every probe read made in the pause, as before the probes read only their
frames' slots there and the rest after the resume (engine/links/after_resume.py): run the
bench with and without it to see what that moved out of the pause.

--slots-in-pause: every probed frame's slots read in the pause, as before the pre-read
read those of the goroutines the pause does not walk again (engine/links/preread_slots.py).

--before-26: a third column, the pause with the probes as they were before issue 26 (no
transport addresses, TLS state or Unix-socket fds read), in the same alternation, so that
what issue 26 added is measured under the same load.
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

from pytest_sideeye import capture as capture_mod  # noqa: E402
from pytest_sideeye.engine import take as engine  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

# What issue 26 added to the probes' expressions.
ADDED_BY_26 = ("UnixConn", "remoteAddr", "localAddr", "tlsState", "isSecure")
_probe_spec = engine.links_mod.probe_spec


def _probes_before_26(info) -> capture_mod.CaptureSpec:
    spec = _probe_spec(info)
    return capture_mod.CaptureSpec({
        fn: [e for e in exprs if not any(a in e.text for a in ADDED_BY_26)]
        for fn, exprs in spec.functions.items()})


def snapshot(pids: list[int], *, links: bool, before_26: bool = False):
    os.environ["SIDEEYE_LINKS"] = "1" if links else "0"
    engine.links_mod.probe_spec = _probes_before_26 if before_26 else _probe_spec
    t0 = time.perf_counter()
    try:
        snap = engine.take_snapshot(pids)
    finally:
        engine.links_mod.probe_spec = _probe_spec
    took = time.perf_counter() - t0
    for p in snap.processes:
        if p.error:
            raise SystemExit(f"snapshot of {p.pid} failed: {p.error}")
    return snap, took


def measure(pids: list[int], reps: int, before_26: bool = False) -> dict:
    snapshot(pids, links=True)      # warm-up: programs loaded, binaries analysed, probes checked
    snapshot(pids, links=False)
    on: dict[int, list[int]] = {p: [] for p in pids}
    off: dict[int, list[int]] = {p: [] for p in pids}
    old: dict[int, list[int]] = {p: [] for p in pids}
    # The pause's parts (stop, collect, capture, resume, ...), by mode: where the cost goes.
    parts: dict[tuple[bool, int], list[dict]] = {(m, p): [] for m in (True, False) for p in pids}
    took_on, took_off, took_old, found = [], [], [], 0
    modes = [(True, False, on, took_on), (False, False, off, took_off)]
    if before_26:
        snapshot(pids, links=True, before_26=True)
        modes.append((True, True, old, took_old))
    for _ in range(reps):
        for links, before, into, took in modes:
            time.sleep(0.05)
            snap, t = snapshot(pids, links=links, before_26=before)
            took.append(t)
            for p in snap.processes:
                into[p.pid].append(p.pause_ns)
                if not before:
                    parts[(links, p.pid)].append(p.pause_parts_ns)
            if links and not before:
                found = len(snap.links)
                counts = {p.pid: len(p.goroutines) for p in snap.processes}
    return {"on": on, "off": off, "old": old, "links": found, "goroutines": counts,
            "parts": parts,
            "took_on": statistics.median(took_on), "took_off": statistics.median(took_off)}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def row(shape: str, pid: int, r: dict) -> str:
    on, off, old = r["on"][pid], r["off"][pid], r["old"][pid]
    delta = statistics.median(on) - statistics.median(off)
    before = (f" {ms(statistics.median(old))} ({ms(min(old))}) | "
              f"{(statistics.median(on) - statistics.median(old)) / 1e6:+.3f} |" if old else "")
    return (f"| {shape} | {r['goroutines'][pid]:,} | {ms(statistics.median(off))} "
            f"({ms(min(off))}) | {ms(statistics.median(on))} ({ms(min(on))}) | "
            f"{delta / 1e6:+.3f} | {r['links']} |{before}")


def parts_row(shape: str, pid: int, r: dict) -> str:
    """The median of each part of the pause, links off -> on."""
    def med(name: str, *, links: bool) -> float:
        return statistics.median(d.get(name, 0) for d in r["parts"][(links, pid)])
    names = sorted({k for d in r["parts"][(True, pid)] for k in d})
    return f"| {shape} | " + ", ".join(
        f"{k} {ms(med(k, links=False))} -> {ms(med(k, links=True))}" for k in names) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--go", default=toolchains.default_version())
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--before-26", action="store_true",
                    help="also the pause with the probes before issue 26")
    ap.add_argument("--reads-in-pause", action="store_true",
                    help="every probe read in the pause (none deferred to after the resume)")
    ap.add_argument("--slots-in-pause", action="store_true",
                    help="every probed frame's slots read in the pause (none in the pre-read)")
    args = ap.parse_args()
    if args.reads_in_pause:
        engine.after_resume_mod.functions = lambda spec, probes: frozenset()
    if args.slots_in_pause:
        engine.preread_slots.take = lambda *a, **kw: None
    print(f"Go {args.go}, medians of {args.reps} (min); pause in ms"
          + ("; every probe read in the pause" if args.reads_in_pause else "")
          + ("; every probe slot read in the pause" if args.slots_in_pause else "") + "\n")
    extra = " links on, before 26 | added by 26 |" if args.before_26 else ""
    print("| target | goroutines | pause, links off | pause, links on | added | links |" + extra)
    print("|---|---|---|---|---|---|" + ("---|---|" if args.before_26 else ""))
    many = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", args.go)
    with start_app(many, "-n", "1000") as app:
        time.sleep(0.5)
        r = measure([app.pid], args.reps, args.before_26)
        print(row("manyparked (no socket)", app.pid, r))
        rows = [parts_row("manyparked (no socket)", app.pid, r)]
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
            r = measure([server.pid, client.pid], args.reps, args.before_26)
            print(row(f"peers server ({args.requests + 2} handlers)", server.pid, r))
            print(row(f"peers client ({args.requests + 2} requests)", client.pid, r))
            rows += [parts_row("peers server", server.pid, r),
                     parts_row("peers client", client.pid, r)]
            print("\nThe pause's parts, median ms, links off -> on:\n")
            print("| target | parts |\n|---|---|")
            print("\n".join(rows))
            print(f"\nwhole take_snapshot of both, median: links on {r['took_on'] * 1000:.1f} ms,"
                  f" off {r['took_off'] * 1000:.1f} ms (the difference includes the /proc "
                  "reads and matching after the resume)")


if __name__ == "__main__":
    main()
