"""The agent's memory over a long life (issue 24): a private `sideeye agent` takes --snapshots
snapshots (with a capture) of 1,000-goroutine targets built as --binaries distinct binaries
(fixtures/goapps/manyparked linked with -X main.build=N: each has its own build id), then a
few snapshots of a 100,000-goroutine target; prints the agent's resident memory (VmRSS of
/proc/PID/status) along the way, as a table.

    .venv/bin/python benchmarks/agent_soak.py [--binaries 50] [--snapshots 1000] [--big 3]
                                              [--big-n 100000] [--budget-mb N] [--go 1.24.11]

Runs as root: it starts its own agent on a socket of its own (never the machine's), with
SIDEEYE_BPF_PINS=0 (nothing shared with other agents). --budget-mb sets the agent's
SIDEEYE_MEMO_MB (default: the agent's own default). Goal: at most 400 MB resident
whatever the number of binaries seen, and back within 10% of the steady state (the row
after the last ordinary snapshot) after each 100,000-goroutine snapshot.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent_bench import start_agent  # noqa: E402  (this folder: the same private agent)
from oracle import start_app  # noqa: E402

from pytest_sideeye.agent import health, snapshot_bytes  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

SIDEEYE = [sys.executable, "-m", "pytest_sideeye.cli.main"]
MANYPARKED = ROOT / "fixtures" / "goapps" / "manyparked"
CAPTURE = {"main.parkedLeaf": ["i", "name", "j", "j.Tags", "started"]}
MILESTONES = (1, 10, 30, 50)


def build_binaries(count: int, go: str) -> list[Path]:
    """`count` manyparked binaries that differ only by their build id: the -X flag names a
    variable the program does not have, so only the link's inputs (and with them the build
    id and the build info's -ldflags) change."""
    return [toolchains.build(MANYPARKED, go, ldflags=f"-X main.build={i}") for i in range(count)]


def stop(agent: subprocess.Popen) -> None:
    """SIGTERM; an agent holding GBs may take a while to exit (its objects are freed)."""
    agent.terminate()
    try:
        agent.wait(120)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, agent: subprocess.Popen, sock: Path):
        self.agent, self.sock = agent, str(sock)
        self.snapshots = 0
        self.rows: list[tuple[str, int, float, str]] = []

    def snapshot(self, pid: int) -> None:
        _body, processes = snapshot_bytes([pid], CAPTURE, socket_path=self.sock, timeout=600)
        if processes[0].get("error"):
            raise SystemExit(f"snapshot of {pid} failed: {processes[0]['error']}")
        self.snapshots += 1

    def row(self, when: str) -> float:
        rss = rss_mb(self.agent.pid)
        memo = health(self.sock).get("memo")
        cache = f"{memo['bytes'] / 2**20:.0f} MB, {memo['binaries']} binaries" if memo else "-"
        self.rows.append((when, self.snapshots, rss, cache))
        print(f"  {when}: {rss:.0f} MB", file=sys.stderr, flush=True)
        return rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binaries", type=int, default=50)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1000, help="goroutines of each ordinary target")
    ap.add_argument("--big", type=int, default=3, help="snapshots of the large target")
    ap.add_argument("--big-n", type=int, default=100_000)
    ap.add_argument("--budget-mb", type=float, default=None)
    ap.add_argument("--go", default=toolchains.default_version())
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the agent)")
    print(f"building {args.binaries} binaries ...", file=sys.stderr, flush=True)
    binaries = build_binaries(args.binaries, args.go)
    folder = Path(tempfile.mkdtemp(prefix="sideeye-agent-soak-"))
    sock = folder / "agent.sock"
    env = {**os.environ, "SIDEEYE_AGENT_SOCKET": str(sock), "SIDEEYE_BPF_PINS": "0"}
    if args.budget_mb is not None:
        env["SIDEEYE_MEMO_MB"] = f"{args.budget_mb:g}"
    agent = start_agent(folder, env)
    soak = Soak(agent, sock)
    soak.row("fresh agent")
    try:
        with contextlib.ExitStack() as apps:
            pids = []
            for i, binary in enumerate(binaries, 1):
                pids.append(apps.enter_context(start_app(binary, "-n", str(args.n))).pid)
                soak.snapshot(pids[-1])
                if i in MILESTONES or i == len(binaries):
                    soak.row(f"after {i} binaries")
            k = 0
            while soak.snapshots < args.snapshots:
                soak.snapshot(pids[k % len(pids)])
                k += 1
                if soak.snapshots % 250 == 0 and soak.snapshots < args.snapshots:
                    soak.row(f"after {soak.snapshots} snapshots")
            steady = soak.row(f"after {soak.snapshots} snapshots (steady state)")
            if args.big:
                big = apps.enter_context(start_app(binaries[0], "-n", str(args.big_n),
                                                   timeout=300))
                for b in range(1, args.big + 1):
                    soak.row(f"before {args.big_n:,}-goroutine snapshot {b}")
                    soak.snapshot(big.pid)
                    after = soak.row(f"after {args.big_n:,}-goroutine snapshot {b}")
                    for _ in range(5):
                        soak.snapshot(pids[k % len(pids)])
                        k += 1
                    soak.row(f"after 5 more ordinary snapshots ({b})")
                print(f"\nlast large snapshot: {after / steady - 1:+.0%} of the steady state",
                      file=sys.stderr)
    finally:
        stop(agent)
    print(f"\n`sideeye agent` resident memory (VmRSS), {args.binaries} binaries of manyparked "
          f"(Go {args.go}, {args.n} goroutines each), capture {CAPTURE}"
          + (f", SIDEEYE_MEMO_MB={args.budget_mb:g}" if args.budget_mb is not None else "")
          + ":\n")
    print("| when | snapshots | agent RSS | agent's memo |\n| --- | ---: | ---: | ---: |")
    for when, n, rss, cache in soak.rows:
        print(f"| {when} | {n} | {rss:.0f} MB | {cache} |")


if __name__ == "__main__":
    main()
