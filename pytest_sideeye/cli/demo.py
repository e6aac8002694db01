"""`python -m pytest_sideeye.cli.demo`: run the example shop suite (examples/: gateway -> orders
-> ledger in Docker) with the plugin, let its hidden deadlock hang one test, and point at
the report the timeout produced.

Exit 0 when the run went as expected (two tests pass, the deadlocked one fails on the
timeout with a snapshot showing the stuck goroutines), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pytest_sideeye.plugin import sanitise
from pytest_sideeye.snapshot import Snapshot, chain_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HANGING_TEST = "test_shop.py::test_cancel_during_rush"
DEADLOCKED = ("main.(*service).place", "main.(*service).cancel")


@dataclass
class Outcome:
    passed: list[str]
    failed: list[str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pytest_sideeye.cli.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="sideeye-reports",
                   help="where the reports go (default: ./sideeye-reports)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="the suite's --sideeye-timeout in seconds (default 10)")
    return p.parse_args(argv)


def run_suite(report_dir: Path, timeout: float, junit: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--tb=short",
           "--sideeye-on-timeout", "--sideeye-on-failure", f"--sideeye-timeout={timeout:g}",
           f"--sideeye-dir={report_dir}", f"--junitxml={junit}",
           "-o", "junit_logging=system-out", "-v",
           # bcc 0.26 warns about str program text at each compile; not the demo's story.
           "-W", "ignore::DeprecationWarning:bcc"]
    print("$ " + " ".join(cmd), f"  (in {EXAMPLES})", flush=True)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)  # the demo's flags are the point: keep them alone
    return subprocess.run(cmd, cwd=EXAMPLES, env=env).returncode


def read_outcome(junit: Path) -> Outcome:
    passed, failed = [], []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        bad = case.find("failure") is not None or case.find("error") is not None
        (failed if bad else passed).append(name)
    return Outcome(passed, failed)


def stuck_goroutines(snap: Snapshot) -> list[str]:
    """One line per goroutine blocked in the deadlocked handlers."""
    lines = []
    for p in snap.processes:
        for g in p.goroutines:
            hit = next((f for f in g.frames if f.function in DEADLOCKED), None)
            if hit is not None:
                values = " ".join(f"{v.name}={json.dumps(v.value)}" for v in hit.variables
                                  if v.available and v.error is None)
                lines.append(f"  {p.service}: goroutine {g.id} [{g.wait_reason or g.status}] "
                             f"in {hit.function} ({Path(hit.file).name}:{hit.line})"
                             + (f"\n      {values}" if values else ""))
    return lines


def judge(outcome: Outcome, report: Path) -> tuple[bool, list[str]]:
    notes: list[str] = []
    ok = True
    hang_name = HANGING_TEST.split("::")[-1]
    if hang_name not in outcome.failed:
        ok = False
        notes.append(f"expected {hang_name} to fail on the timeout; it did not")
    others = [n for n in outcome.failed if n != hang_name]
    if others:
        ok = False
        notes.append(f"unexpected failures: {', '.join(others)}")
    json_path = report.with_suffix(".json")
    if not json_path.is_file():
        return False, notes + [f"no report at {json_path}"]
    snap = Snapshot.load(json_path)
    stuck = stuck_goroutines(snap)
    errors = [f"  {p.service}: {p.error}" for p in snap.processes if p.error]
    if stuck:
        notes.append("goroutines stuck in the deadlock:")
        notes += stuck
    else:
        ok = False
        notes.append("the snapshot shows no goroutine in the deadlocked handlers")
        notes += errors
    chains = deadlock_chains(snap)
    if chains:
        notes.append("wait chains across the services (the test's requests, as they went):")
        notes += [f"  {c}" for c in chains]
    else:
        ok = False
        notes.append("the snapshot links no gateway goroutine to the stuck orders handlers")
    return ok, notes


def deadlock_chains(snap: Snapshot) -> list[str]:
    """The wait chains that end in the deadlocked handlers: gateway -> orders."""
    out = []
    for c in snap.chains():
        last = snap.goroutine(*c.goroutines[-1])
        if len(c.goroutines) > 1 and last is not None and \
                any(f.function in DEADLOCKED for f in last.frames):
            out.append(chain_text(snap, c))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report_dir = Path(args.dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "demo-junit.xml"
    run_suite(report_dir, args.timeout, junit)
    if not junit.is_file():
        print("\ndemo: pytest did not finish the suite (no junit XML)", file=sys.stderr)
        return 1
    report = report_dir / sanitise(HANGING_TEST) / "timeout.html"
    ok, notes = judge(read_outcome(junit), report)
    print()
    print("=" * 72)
    if ok:
        print("demo: as expected, test_cancel_during_rush hung on the orders service's "
              "deadlock,\n      and the timeout took a snapshot of all three services first.")
    else:
        print("demo: the run did not go as expected")
    for n in notes:
        print(n)
    print(f"\nOpen the report:  {report}")
    print(f"(text form: {report.with_suffix('.txt')}; junit: {junit})")
    print("=" * 72)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
