"""The sideeye agent's benchmark (issue 14): wall time of the whole command
`sideeye snapshot --pid P --json FILE` for a 1,000-goroutine target (manyparked), through
a warm agent, without one (programs pinned in bpffs by an earlier command), and without
either (each command loads and verifies the BPF programs itself).

    .venv/bin/python benchmarks/agent_bench.py [--reps 9] [--n 1000] [--go 1.24.11]

Runs as root: it starts its own agent on a socket of its own (never the machine's). Prints
a table: median, min and max over --reps runs of each way, and the first (cold) command
through the fresh agent.
"""
from __future__ import annotations

import argparse
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

from pytest_sideeye.agent import health  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

SIDEEYE = [sys.executable, "-m", "pytest_sideeye.cli.main"]


def timed_snapshot(pid: int, out: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([*SIDEEYE, "snapshot", "--pid", str(pid), "--json", str(out)],
                       env=env, capture_output=True, text=True, cwd="/")
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"sideeye snapshot failed: {r.stderr.strip()}")
    return took


def start_agent(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    sock = folder / "agent.sock"
    proc = subprocess.Popen([*SIDEEYE, "agent", "--socket", str(sock), "--log",
                             str(folder / "agent.log")], env=env, cwd="/")
    deadline = time.monotonic() + 30
    while True:
        try:
            health(str(sock))
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the agent did not start") from None
            time.sleep(0.05)


def row(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | "
            f"{max(ms):.0f} ms |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--go", default=toolchains.default_version())
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the agent, and the snapshots without it)")
    binary = toolchains.build(ROOT / "fixtures" / "goapps" / "manyparked", args.go)
    folder = Path(tempfile.mkdtemp(prefix="sideeye-agent-bench-"))
    sock = folder / "agent.sock"
    env = {**os.environ, "SIDEEYE_AGENT_SOCKET": str(sock), "SIDEEYE_AGENT": "1"}
    pins = folder / "pins"   # bpffs must be mounted (scripts/setup.sh)
    alone = {**env, "SIDEEYE_AGENT": "0", "SIDEEYE_BPF_PINS": "0"}
    pinned = {**env, "SIDEEYE_AGENT": "0", "SIDEEYE_BPF_PINS": f"/sys/fs/bpf/{pins.parent.name}"}
    env["SIDEEYE_BPF_PINS"] = "0"   # the agent's first snapshot loads: nothing pinned helps it
    out = folder / "s.json"
    with start_app(binary, "-n", str(args.n)) as app:
        time.sleep(0.5)
        agent = start_agent(folder, env)
        try:
            cold = timed_snapshot(app.pid, out, env)
            warm = [timed_snapshot(app.pid, out, env) for _ in range(args.reps)]
        finally:
            agent.terminate()
            agent.wait(10)
        without = [timed_snapshot(app.pid, out, alone) for _ in range(max(3, args.reps // 3))]
        timed_snapshot(app.pid, out, pinned)   # loads and pins
        from_pins = [timed_snapshot(app.pid, out, pinned) for _ in range(args.reps)]
    subprocess.run(["rm", "-rf", pinned["SIDEEYE_BPF_PINS"]], check=False)
    print(f"`sideeye snapshot --pid P --json FILE`, {args.n} parked goroutines "
          f"(manyparked, Go {args.go}), wall time of the whole command:\n")
    print("| way | runs | median | min | max |\n| --- | ---: | ---: | ---: | ---: |")
    print(row("through a warm agent", warm))
    print(row("through a fresh agent (its first snapshot: loads the programs)", [cold]))
    print(row("without an agent, programs pinned by an earlier command", from_pins))
    print(row("without an agent or pins (each command loads the programs)", without))


if __name__ == "__main__":
    main()
