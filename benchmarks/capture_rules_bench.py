"""Cost of a type rule (issue 29.5): one rule, `type:main.Order: ID, Customer`, over N
goroutines each holding one *main.Order (fixture typerules -n N, in main.many), next to
the same values asked by a function spec (`main.many: o.ID, o.Customer`) and to no
capture, on both capture paths (in BPF during the pause; the Python rounds).

    .venv/bin/python benchmarks/capture_rules_bench.py [--n 1000] [--reps 7] [--go 1.24.11]
                                                        [--budget-ms MS]

Prints a table headed by the machine's load average: per spec and path, the median pause
(SIGSTOP -> SIGCONT) and the Python rounds' part of it over --reps snapshots (min in
brackets), the values found in main.many's frames (median [min]: a capture that reaches
its pause budget, SIDEEYE_CAPTURE_PAUSE_MS, leaves the rest out) and how many snapshots
had fewer than N, with how many of those said why in a note (a snapshot short of values
without a note would be a bug), and the plan's cost before the pause (make_plan in a fresh
process, reading the DWARF the rule needs; then warm).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye.engine import take as engine  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

SPECS = {"none": None,
         "function spec": ["main.many: o.ID, o.Customer"],
         "type rule": ["type:main.Order: ID, Customer"]}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def found(snap, spec) -> int:
    """Values of main.many's frames captured (an ID each)."""
    return sum(1 for _g, f in snap.frames("main.many") for v in f.variables
               if v.name == "o.ID" and v.available and not v.error)


def plan_ms(exe: str, spec) -> tuple[float, float]:
    """make_plan's time in a fresh process (its DWARF read then; the binary's type index
    comes from the on-disk cache, as for any binary analysed before), then warm."""
    code = ("import json, sys, time\n"
            "from pytest_sideeye import capture\n"
            "from pytest_sideeye.binary import analyze\n"
            "info = analyze(sys.argv[1]); out = []\n"
            "for _ in range(2):\n"
            "    t0 = time.perf_counter(); capture.make_plan(info, json.loads(sys.argv[2]))\n"
            "    out.append((time.perf_counter() - t0) * 1e3)\n"
            "print(json.dumps(out))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    got = subprocess.run([sys.executable, "-c", code, exe, json.dumps(spec)], env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    first, warm = json.loads(got)
    return first, warm


def run(n: int, reps: int, version: str) -> list[tuple]:
    exe = str(toolchains.build(ROOT / "fixtures" / "goapps" / "typerules", version))
    plans = {name: plan_ms(exe, spec) for name, spec in SPECS.items() if spec}
    rows = []
    with start_app(exe, "-n", str(n)) as app:
        time.sleep(0.5)
        for path in ("1", "0"):
            os.environ["SIDEEYE_BPF_CAPTURE"] = path
            for name, spec in SPECS.items():
                engine.take_snapshot([app.pid], capture=spec)   # warm: programs, plan
                pauses, parts, counts, noted = [], [], [], 0
                for _ in range(reps):
                    snap = engine.take_snapshot([app.pid], capture=spec)
                    p = snap.processes[0]
                    pauses.append(p.pause_ns)
                    parts.append(p.pause_parts_ns.get("capture", 0))
                    counts.append(found(snap, spec))
                    noted += bool(spec and counts[-1] < n and p.notes)
                rows.append((name, "BPF" if path == "1" else "Python", statistics.median(pauses),
                             min(pauses), statistics.median(parts),
                             (int(statistics.median(counts)), min(counts)),
                             plans.get(name),
                             (sum(c < n for c in counts) if spec else 0, noted)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--go", default="1.24.11")
    ap.add_argument("--budget-ms", type=float, default=None,
                    help="SIDEEYE_CAPTURE_PAUSE_MS (the Python rounds' pause budget; "
                         "default: the setting's)")
    args = ap.parse_args()
    if args.budget_ms is not None:
        os.environ["SIDEEYE_CAPTURE_PAUSE_MS"] = f"{args.budget_ms:g}"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# capture_rules_bench: {args.n} goroutines holding a *main.Order, Go {args.go}, "
          f"{args.reps} snapshots each; capture pause budget "
          f"{os.environ.get('SIDEEYE_CAPTURE_PAUSE_MS', 'default')} ms; "
          f"load average {load}, {os.cpu_count()} CPUs")
    print(f"{'spec':<14} {'path':<7} {'pause ms':>16} {'capture ms':>11} {'values':>12} "
          f"{'short (noted)':>14} {'plan ms (first/warm)':>21}")
    for name, path, med, lo, cap, count, plan, short in run(args.n, args.reps, args.go):
        plan_text = f"{plan[0]:.0f} / {plan[1]:.1f}" if plan else "-"
        values = f"{count[0]} [{count[1]}]"
        print(f"{name:<14} {path:<7} {ms(med):>8} [{ms(lo):>5}] {ms(cap):>11} {values:>12} "
              f"{f'{short[0]} ({short[1]})':>14} {plan_text:>21}")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
