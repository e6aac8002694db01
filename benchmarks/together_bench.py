"""Together mode's pause with and without the pre-read (issue 28 item 5): every process is
stopped before the first is collected, so each one's pause holds the collections of
those before it. With the pre-read (SIDEEYE_PREREAD=1, the default) each process was
walked while it ran and its collection in the stop only checks every goroutine's header;
without it (SIDEEYE_PREREAD=0) each is walked whole in the stop. Processes of fixture
manyparked (one binary, so one BPF program whose pre-read slots they share), through a
private agent and without one (SIDEEYE_AGENT=0). Medians over --reps (max in brackets).

    .venv/bin/python benchmarks/together_bench.py [--reps 9] [--shapes 8x1000,8x5000,32x500]

Per row: the spread of the stops, each process's pause, the last-collected process's
pause (it waits for all the others), and each process's collection (`collect`, the stack
passes; with the pre-read the header check and the re-walks). Runs as root, with its
own agent (skew_bench.start_agent: this tree's code). benchmarks/together_bench.out
holds runs with their load.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from oracle import start_app  # noqa: E402
from skew_bench import start_agent  # noqa: E402

from pytest_sideeye import agent  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

PREREAD = {"off": "0", "on": "1"}


def measure(pids: list[int], reps: int) -> dict:
    agent.take_snapshot(pids)          # warm-up: programs loaded, binaries analysed
    out: dict[str, list] = {"spread": [], "pause": [], "last": [], "collect": []}
    walks = set()
    for _ in range(reps):
        time.sleep(0.05)
        snap = agent.take_snapshot(pids)
        for p in snap.processes:
            if p.error:
                raise SystemExit(f"snapshot of {p.pid} failed: {p.error}")
        if not snap.together:
            raise SystemExit("the snapshot was not taken together")
        out["spread"].append(snap.skew_ns)
        out["pause"] += [p.pause_ns for p in snap.processes]
        out["last"].append(max(p.pause_ns for p in snap.processes))
        out["collect"] += [p.pause_parts_ns["collect"] for p in snap.processes]
        walks |= {(p.walk or "in the pause").split(" (")[0] for p in snap.processes}
    out["walks"] = sorted(walks)
    return out


def cell(values: list) -> str:
    return f"{statistics.median(values) / 1e6:.2f} ({max(values) / 1e6:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--shapes", default="8x1000,8x5000,32x500",
                    help="processes x goroutines each, comma-separated")
    ap.add_argument("--go", default=toolchains.default_version())
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the agent, and the snapshots without it)")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"Go {args.go}, load average {load}, together mode, medians of {args.reps} "
          "snapshots (max); ms\n")
    print("| route | processes x goroutines | pre-read | spread | pause per process | "
          "last one's pause | collect per process | walk |")
    print("|---|---|---|---|---|---|---|---|")
    exe = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", args.go)
    folder = Path(tempfile.mkdtemp(prefix="sideeye-together-bench-"))
    proc = start_agent(folder)
    os.environ["SIDEEYE_TOGETHER"] = "1"
    try:
        for shape in args.shapes.split(","):
            n, goroutines = (int(x) for x in shape.split("x"))
            with contextlib.ExitStack() as stack:
                pids = [stack.enter_context(start_app(exe, "-n", str(goroutines))).pid
                        for _ in range(n)]
                for route, via in (("private agent", "1"), ("SIDEEYE_AGENT=0", "0")):
                    for pre in PREREAD:
                        # Set here, it travels to the agent with each request.
                        os.environ.update(SIDEEYE_PREREAD=PREREAD[pre], SIDEEYE_AGENT=via,
                                          SIDEEYE_AGENT_SOCKET=str(folder / "agent.sock"))
                        r = measure(pids, args.reps)
                        print(f"| {route} | {shape} | {pre} | {cell(r['spread'])} | "
                              f"{cell(r['pause'])} | {cell(r['last'])} | "
                              f"{cell(r['collect'])} | {', '.join(r['walks'])} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
