"""What pprof labels and context rules add to a snapshot's pause (issue 29.2, 29.3).

Labels are read in every snapshot of a program that has runtime/pprof: each distinct label
set the goroutines' records point to (the BPF walk copies g.labels; engine/labels.py),
timed as pause_parts_ns "labels". Three targets of N goroutines each:
- manyparked -n N: net/http/pprof linked, no goroutine labeled (the cost every such
  program pays: a scan of the records, no read);
- ctxzoo -n N: every goroutine with labels of its own (pprof.Do(..., {"i": "<i>"}): N
  distinct sets, the worst case);
- ctxzoo -n N with `context:main.userKey`: the same goroutines' contexts (each park frame
  holds one: a pprof.Do valueCtx over Background; so does its caller's closure, holding
  Background) walked by the context rule (capture/chainwalk.py), against no capture at all;
- ctxflip -cancels N with `context:main.idxKey`: N goroutines each waiting with a context
  of its own, WithValue(WithCancel(Background), idxKey{}, k): each one's value and err
  answer (as N requests' contexts would), none cancelled while measured.

    .venv/bin/python benchmarks/labels_contexts_bench.py [--n 1000] [--reps 7] [--go 1.24.11]
        [--contexts-only]

Prints a table of medians (min in brackets), in ms, headed by the machine's load average;
"contexts captured" is the fewest and most over the snapshots (ctx.Err() values read
whole), and "cut" how many snapshots' notes say the capture stopped at its pause budget
(SIDEEYE_CAPTURE_PAUSE_MS, default 10 ms). After a pre-read (the default) the chains of
the goroutines not walked again are read and their answers decoded before the pause
(capture/prewalk.py): the pause reads those answers' bytes again and decodes the changed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye.engine import take as engine  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

RULE = ["context:main.userKey"]
CANCELS_RULE = ["context:main.idxKey"]


def measure(pid: int, reps: int, capture=None) -> dict:
    engine.take_snapshot([pid], capture=capture)   # warm: programs, plan, tables
    rows = []
    for _ in range(reps):
        time.sleep(0.05)
        p = engine.take_snapshot([pid], capture=capture).processes[0]
        if p.error:
            raise SystemExit(f"snapshot failed: {p.error}")
        labeled = sum(1 for g in p.goroutines if g.labels)
        contexts = sum(1 for g in p.goroutines for f in g.frames for v in f.variables
                       if v.name.endswith(".Err()") and not v.error)
        cut = any(n.startswith("capture stopped at its pause budget") for n in p.notes)
        rows.append((p.pause_ns, p.pause_parts_ns.get("labels", 0),
                     p.pause_parts_ns.get("capture", 0), labeled, contexts, len(p.goroutines),
                     cut))
    col = lambda i: [r[i] for r in rows]  # noqa: E731
    return {"pause": statistics.median(col(0)), "pause_min": min(col(0)),
            "labels": statistics.median(col(1)), "labels_min": min(col(1)),
            "capture": statistics.median(col(2)), "capture_min": min(col(2)),
            "labeled": rows[0][3], "contexts": (min(col(4)), max(col(4))),
            "goroutines": rows[0][5], "cut": sum(col(6)), "reps": len(rows)}


def _span(lo_hi: tuple[int, int]) -> str:
    lo, hi = lo_hi
    return str(lo) if lo == hi else f"{lo}-{hi}"


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--go", default="1.24.11")
    ap.add_argument("--contexts-only", action="store_true",
                    help="only the ctxzoo + context:main.userKey row")
    args = ap.parse_args()
    os.environ.setdefault("SIDEEYE_AGENT", "0")
    results = []
    if not args.contexts_only:
        many = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", args.go)
        with start_app(many, "-n", str(args.n)) as app:
            time.sleep(0.5)
            results.append(("manyparked, no labels", measure(app.pid, args.reps)))
    zoo = toolchains.build(ROOT / "fixtures" / "goapps" / "ctxzoo", args.go)
    with tempfile.TemporaryDirectory() as tmp, \
            start_app(zoo, "-out", f"{tmp}/seen.json", "-n", str(args.n)) as app:
        time.sleep(0.5)
        if not args.contexts_only:
            results.append(("ctxzoo, a label set each", measure(app.pid, args.reps)))
        results.append(("ctxzoo + context:main.userKey", measure(app.pid, args.reps, RULE)))
    flip = toolchains.build(ROOT / "fixtures" / "goapps" / "ctxflip", args.go)
    with start_app(flip, "-n", "0", "-cancels", str(args.n)) as app:
        time.sleep(0.5)
        results.append(("ctxflip -cancels + context:main.idxKey",
                        measure(app.pid, args.reps, CANCELS_RULE)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"$ .venv/bin/python benchmarks/labels_contexts_bench.py {' '.join(sys.argv[1:])}")
    print(f"Go {args.go}, {args.n} parked goroutines, {args.reps} snapshots each; "
          f"load average {load} (2 cores)")
    head = ["target", "goroutines", "labeled", "contexts captured", "cut", "pause ms (min)",
            "labels ms (min)", "capture ms (min)"]
    rows = [[name, str(r["goroutines"]), str(r["labeled"]), _span(r["contexts"]),
             f"{r['cut']}/{r['reps']}", f"{ms(r['pause'])} ({ms(r['pause_min'])})",
             f"{ms(r['labels'])} ({ms(r['labels_min'])})",
             f"{ms(r['capture'])} ({ms(r['capture_min'])})"]
            for name, r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    for line in [head, *rows]:
        print(" | ".join(x.ljust(w) for x, w in zip(line, widths)))


if __name__ == "__main__":
    main()
