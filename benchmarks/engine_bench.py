"""Pause benchmark of the snapshot engine (issue 3): for N parked goroutines ~10 frames
deep, the pause (SIGSTOP sent -> SIGCONT sent) and its parts, next to the target's own
runtime.Stack(buf, true) time measured in the same run.

    .venv/bin/python benchmarks/engine_bench.py [--sizes 1000,10000,100000] [--reps 5]
                                                [--go 1.24.11] [--capture]

Prints a table (medians over --reps snapshots; min in brackets). With --capture, every
parked frame of main.parkedLeaf also captures 4 variables (issue 4's column).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402
from pytest_sideeye import engine, toolchains  # noqa: E402

CAPTURE = {"main.parkedLeaf": ["i", "name", "j", "started"]}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def run_size(n: int, reps: int, version: str, capture: bool) -> dict:
    binary = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", version)
    with start_app(binary, "-n", str(n)) as app:
        time.sleep(0.5)
        engine.take_snapshot([app.pid])  # warm-up: compile and load the program
        rows = []
        for _ in range(reps):
            snap = engine.take_snapshot([app.pid], capture=CAPTURE if capture else None)
            p = snap.processes[0]
            if p.error:
                raise SystemExit(f"snapshot failed: {p.error}")
            rows.append((p.pause_ns, p.pause_parts_ns, len(p.goroutines)))
            time.sleep(0.05)
        stack = json.loads(app.get("/stacktime?reps=3", timeout=300))
    pauses = [r[0] for r in rows]
    part = lambda k: statistics.median(r[1].get(k, 0) for r in rows)  # noqa: E731
    rt = statistics.median(stack["stack_ns"] if "stack_ns" in stack else stack["StackNs"])
    return {"n": n, "goroutines": rows[0][2], "pause": statistics.median(pauses),
            "pause_min": min(pauses), "stop": part("stop"), "collect": part("collect"),
            "capture": part("capture"), "resume": part("resume"), "runtime_stack": rt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--go", default=toolchains.DEFAULT_GO)
    ap.add_argument("--capture", action="store_true")
    args = ap.parse_args()
    head = ("parked", "read", "pause ms (min)", "stop", "collect", "capture", "resume",
            "runtime.Stack ms", "Stack/pause")
    print(f"Go {args.go}, {args.reps} snapshots per size, medians; times in ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in (int(s) for s in args.sizes.split(",")):
        r = run_size(n, args.reps, args.go, args.capture)
        print(f"| {r['n']:,} | {r['goroutines']:,} | {ms(r['pause'])} ({ms(r['pause_min'])}) | "
              f"{ms(r['stop'])} | {ms(r['collect'])} | {ms(r['capture'])} | {ms(r['resume'])} | "
              f"{ms(r['runtime_stack'])} | {r['runtime_stack'] / r['pause']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
