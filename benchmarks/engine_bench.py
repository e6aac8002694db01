"""Pause benchmark of the snapshot engine: for N parked goroutines ~10 frames deep, the
pause (SIGSTOP sent -> SIGCONT sent) and its parts, the pause as the target felt it (the
largest gap between the 100 us wake-ups of one of its goroutines across the snapshot, and
in brackets the largest gap over as long without one), next to the target's own
runtime.Stack(buf, true) time measured in the same run.

    .venv/bin/python benchmarks/engine_bench.py [--sizes 1000,10000,100000] [--reps 5]
                                                [--go 1.24.11] [--capture]
                                                [--ldflags '-s -w'] [--mixed]
                                                [--preread on|off] [--record]

--mixed parks goroutine i i%9 calls deep (3 to 11 frames) instead of all ~11 deep.
--ldflags builds the target with them: `-s -w` (no DWARF, no symbol table) measures a
stripped build, whose layouts come from the table and globals from the code.

--preread takes the snapshots with the pre-read on or off (default: SIDEEYE_PREREAD's);
with it on, the table adds how long the pre-read took (the target running), how many
goroutines the pause walked again, and the pause's verify and rewalk parts.

Prints a table (medians over --reps snapshots; min in brackets), headed by the machine's
load average; --record appends it to benchmarks/engine_bench.out, which keeps the runs the
README's Performance table is taken from (tests/packaging/test_readme_claims.py checks
they agree). With --capture, the
same target is also snapshotted capturing 4 variables in every parked frame of
main.parkedLeaf (an int, a string, a pointer to a struct with a string and a slice of
strings, a time.Time), alternating with plain snapshots: the table then gives that
pause too and what capture adds to the median pause.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye import settings  # noqa: E402
from pytest_sideeye.engine import take as engine
from pytest_sideeye.services import toolchains  # noqa: E402

# The runs the README's Performance table is taken from, appended by --record.
RECORD = ROOT / "benchmarks" / "engine_bench.out"
CAPTURE = {"main.parkedLeaf": ["i", "name", "j", "started"]}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def run_size(n: int, reps: int, version: str, capture: bool, ldflags: str = "",
             mixed: bool = False, cfg: settings.EngineSettings | None = None) -> dict:
    binary = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", version,
                              ldflags=ldflags)
    with start_app(binary, "-n", str(n), "-felt", *(["-mixed"] if mixed else [])) as app:
        time.sleep(0.5)
        engine.take_snapshot([app.pid], cfg=cfg)  # warm-up: compile and load the program
        if capture:
            engine.take_snapshot([app.pid], capture=CAPTURE, cfg=cfg)
        rows, with_capture, felt, idle = [], [], [], []
        for _ in range(reps):
            time.sleep(0.05)
            idle.append(int(app.get("/gap")))      # the largest gap with no snapshot
            rows.append(_one(app.pid, None, cfg))
            felt.append(int(app.get("/gap")))      # ... and across one snapshot
            time.sleep(0.05)
            if capture:
                with_capture.append(_one(app.pid, CAPTURE, cfg))
                time.sleep(0.05)
        stack = json.loads(app.get("/stacktime?reps=3", timeout=300))
    pauses = [r[0] for r in rows]
    part = lambda k: statistics.median(r[1].get(k, 0) for r in rows)  # noqa: E731
    rt = statistics.median(stack["stack_ns"] if "stack_ns" in stack else stack["StackNs"])
    out = {"n": n, "goroutines": rows[0][2], "pause": statistics.median(pauses),
           "pause_min": min(pauses), "stop": part("stop"), "collect": part("collect"),
           "resume": part("resume"), "runtime_stack": rt,
           # The stop hook's walk is the only stretch with interrupts off (in sched_switch).
           "hook_walk_max": max(r[1].get("hook_walk", 0) for r in rows),
           "felt": statistics.median(felt), "idle_gap": statistics.median(idle),
           "walks": [r[4] for r in rows], "verify": part("verify"), "rewalk": part("rewalk"),
           "preread": statistics.median(r[5] or 0 for r in rows),
           "rewalked": statistics.median(r[6] or 0 for r in rows)}
    if capture:
        cap = [r[0] for r in with_capture]
        out["capture_pause"] = statistics.median(cap)
        out["capture_min"] = min(cap)
        out["captured"] = with_capture[0][3]
    return out


def _one(pid: int, capture, cfg=None) -> tuple:
    snap = engine.take_snapshot([pid], capture=capture, cfg=cfg)
    p = snap.processes[0]
    if p.error:
        raise SystemExit(f"snapshot failed: {p.error}")
    captured = sum(1 for g in p.goroutines for f in g.frames
                   if f.variables and all(v.available and v.value is not None
                                          for v in f.variables))
    return (p.pause_ns, p.pause_parts_ns, len(p.goroutines), captured, p.walk, p.preread_ns,
            p.rewalked)


def columns(capture: bool, walk: bool = False) -> list[str]:
    """The printed table's columns (tests/packaging/test_readme_claims.py reads them);
    `walk`: with the pre-read's."""
    head = ["parked", "read", "pause ms (min)", "stop", "collect", "resume",
            "longest interrupts-off stretch (hook_walk, max)",
            "felt by the target (idle gap)", "runtime.Stack ms", "Stack/pause"]
    if capture:
        head += ["frames captured", "pause with capture (min)", "capture adds"]
    if walk:
        head += ["pre-read ms (target running)", "re-walked", "verify", "rewalk",
                 "snapshots walked after a pre-read"]
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--go", default=toolchains.default_version())
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--ldflags", default="", help="build the target with these (e.g. '-s -w')")
    ap.add_argument("--mixed", action="store_true", help="stacks 3 to 11 frames deep")
    ap.add_argument("--preread", choices=("on", "off"), default=None,
                    help="the pre-read on or off (default: SIDEEYE_PREREAD's)")
    ap.add_argument("--record", action="store_true",
                    help=f"also append the command and its table to {RECORD.name}")
    args = ap.parse_args()
    cfg = settings.current()
    if args.preread:
        cfg = cfg._replace(preread=args.preread == "on")
    head = columns(args.capture, cfg.preread)
    lines = [f"$ .venv/bin/python benchmarks/engine_bench.py {' '.join(sys.argv[1:])}"]

    def out(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    out(f"Go {args.go}{' -ldflags=' + repr(args.ldflags) if args.ldflags else ''}, "
          f"{'stacks 3-11 frames deep' if args.mixed else 'stacks ~11 frames deep'}, "
          f"{args.reps} snapshots per size, medians; times in ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    out("| " + " | ".join(head) + " |")
    out("|" + "---|" * len(head))
    for n in (int(s) for s in args.sizes.split(",")):
        r = run_size(n, args.reps, args.go, args.capture, args.ldflags, args.mixed, cfg)
        row = (f"| {r['n']:,} | {r['goroutines']:,} | {ms(r['pause'])} ({ms(r['pause_min'])}) | "
               f"{ms(r['stop'])} | {ms(r['collect'])} | {ms(r['resume'])} | "
               f"{ms(r['hook_walk_max'])} | "
               f"{ms(r['felt'])} ({ms(r['idle_gap'])}) | {ms(r['runtime_stack'])} | {r['runtime_stack'] / r['pause']:.1f}x |")
        if args.capture:
            row += (f" {r['captured']:,} | {ms(r['capture_pause'])} ({ms(r['capture_min'])}) | "
                    f"{ms(r['capture_pause'] - r['pause'])} |")
        if cfg.preread:
            used = sum(w == "pre-read" for w in r["walks"])
            other = sorted({w for w in r["walks"] if w != "pre-read"})
            row += (f" {ms(r['preread'])} | {r['rewalked']:g} | {ms(r['verify'])} | "
                    f"{ms(r['rewalk'])} | {used} of {len(r['walks'])}"
                    f"{' (' + '; '.join(str(w) for w in other) + ')' if other else ''} |")
        out(row)
    if args.record:
        with RECORD.open("a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
