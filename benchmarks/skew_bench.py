"""How far apart in time the processes of one snapshot are collected (issue 28): the
spread (max - min of the processes' monotonic_ns, the snapshot's skew_ns) and each
process's pause, for 2, 8 (and --sizes) warm processes, through a private agent and
without one (SIDEEYE_AGENT=0: the engine in this process, kept warm), in both modes: one
after the other (each process stopped, collected and resumed in turn) and together
(SIDEEYE_TOGETHER=1: every process stopped before the first is collected, each resumed
once collected, so a process's pause includes the collection of those before it).
Medians over --reps (max in brackets).

    .venv/bin/python benchmarks/skew_bench.py [--reps 9] [--sizes 2,8] [--go 1.24.11]
        [--modes after,together]

The targets are fixture `peers`: N/2 servers and N/2 clients, each client with its
requests parked in its server's handlers and a raw TCP connection both ends of which
read, so that every snapshot must link each client to its server. Also printed: how
many snapshots had every client linked to its server. Runs as root; the agent is its
own (`sideeye agent --socket` in a temporary folder, running this tree's code), never the
machine's. benchmarks/skew_bench.out holds a run before issue 28 and one after (the
"before" ran this script from an export of the older commit, git archive), then both
modes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye import agent  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

SIDEEYE = [sys.executable, "-m", "pytest_sideeye.cli.main"]


def start_pairs(exe: Path, n: int, stack: contextlib.ExitStack) -> list[tuple[int, int]]:
    """n/2 (server pid, client pid) pairs of fixture peers, each client parked on its
    server."""
    pairs = []
    for _ in range(max(1, n // 2)):
        server = stack.enter_context(start_app(exe, "server"))
        http_port, tcp_port = server.ready_line.split()[1:3]
        client = stack.enter_context(start_app(exe, "client", f"127.0.0.1:{http_port}",
                                               f"127.0.0.1:{tcp_port}"))
        deadline = time.monotonic() + 30
        while sum(x.startswith("parked") for x in server.output) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the requests did not reach their handlers")
            time.sleep(0.05)
        pairs.append((server.pid, client.pid))
    return pairs


def start_agent(folder: Path) -> subprocess.Popen:
    sock = folder / "agent.sock"
    proc = subprocess.Popen([*SIDEEYE, "agent", "--socket", str(sock), "--log",
                             str(folder / "agent.log")], cwd="/",
                            # This tree's engine, whichever is installed (--before runs).
                            env={**os.environ, "SIDEEYE_BPF_PINS": "0",
                                 "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while True:
        try:
            agent.health(str(sock))
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the agent did not start") from None
            time.sleep(0.05)


def all_linked(snap, pairs: list[tuple[int, int]]) -> bool:
    """Every client has its two HTTP links and its TCP link to its own server."""
    ends = [(ln.kind, ln.client.pid, ln.server.pid) for ln in snap.links
            if ln.client is not None and ln.server is not None]
    return all(ends.count(("http", c, s)) == 2 and ends.count(("tcp", c, s)) == 1
               for s, c in pairs)


def measure(pairs: list[tuple[int, int]], reps: int) -> dict:
    pids = [p for pair in pairs for p in pair]
    agent.take_snapshot(pids)          # warm-up: programs loaded, binaries analysed
    spreads, pauses, linked = [], [], 0
    for _ in range(reps):
        time.sleep(0.05)
        snap = agent.take_snapshot(pids)
        for p in snap.processes:
            if p.error:
                raise SystemExit(f"snapshot of {p.pid} failed: {p.error}")
        if snap.together != (os.environ.get("SIDEEYE_TOGETHER") == "1"):
            raise SystemExit(f"asked SIDEEYE_TOGETHER={os.environ.get('SIDEEYE_TOGETHER')}, "
                             f"the snapshot says together={snap.together}")
        stops = [p.monotonic_ns for p in snap.processes]
        spreads.append(max(stops) - min(stops))
        pauses += [p.pause_ns for p in snap.processes]
        linked += all_linked(snap, pairs)
    return {"spread": spreads, "pause": pauses, "linked": linked}


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f}"


MODES = {"after": ("one after the other", "0"), "together": ("together", "1")}


def row(route: str, mode: str, n: int, r: dict, reps: int) -> str:
    s, p = r["spread"], r["pause"]
    return (f"| {route} | {MODES[mode][0]} | {n} | {ms(statistics.median(s))} ({ms(max(s))}) | "
            f"{ms(statistics.median(p))} ({ms(max(p))}) | {r['linked']}/{reps} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--sizes", default="2,8")
    ap.add_argument("--go", default=toolchains.default_version())
    ap.add_argument("--modes", default="after,together",
                    help="after (one after the other), together (SIDEEYE_TOGETHER=1)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the agent, and the snapshots without it)")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"Go {args.go}, load average {load}, medians of {args.reps} snapshots (max); ms\n")
    print("| route | mode | processes | spread | pause per process | all linked |")
    print("|---|---|---|---|---|---|")
    exe = toolchains.build(ROOT / "fixtures" / "goapps" / "peers", args.go)
    folder = Path(tempfile.mkdtemp(prefix="sideeye-skew-bench-"))
    proc = start_agent(folder)
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            with contextlib.ExitStack() as stack:
                pairs = start_pairs(exe, n, stack)
                for mode in args.modes.split(","):
                    # Set in this process's environment, it travels to the agent with each
                    # request like every per-snapshot setting.
                    os.environ["SIDEEYE_TOGETHER"] = MODES[mode][1]
                    os.environ.update(SIDEEYE_AGENT="1",
                                      SIDEEYE_AGENT_SOCKET=str(folder / "agent.sock"))
                    print(row("private agent", mode, n, measure(pairs, args.reps), args.reps),
                          flush=True)
                    os.environ["SIDEEYE_AGENT"] = "0"
                    print(row("SIDEEYE_AGENT=0", mode, n, measure(pairs, args.reps), args.reps),
                          flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
