"""The reliability gauntlet (issue 7) at full size: the target never stays paused, nothing
is lost under load, churn never breaks a snapshot. Prints one table per part.

    .venv/bin/python benchmarks/gauntlet.py [--parts kill,frozen,load,churn] [--kills 200]
        [--frozen 20] [--max-pause 2.0] [--snapshots 500] [--seconds 25] [--rate 3000]
        [--churn-snapshots 300] [--go 1.24.11]

The same routines run at CI size in tests/test_reliability.py (they import this module),
so the figures here and the assertions there measure the same thing.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye.engine import take as engine
from pytest_sideeye.services import toolchains  # noqa: E402
from pytest_sideeye.snapshot.model import STATUSES, Process  # noqa: E402

GOAPPS = ROOT / "fixtures" / "goapps"
RESUME_GOAL_S = 0.100      # a killed collector's target must run again within this
LEFT_STOPPED_AFTER_S = 1.0  # below the guardian's own 2 s deadline: that one must not count


# --- small /proc readers -------------------------------------------------------------------

def state(pid: int) -> str:
    """One-letter state from /proc/PID/stat ('' when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return chr(data[data.rindex(b")") + 2])


def is_stopped(pid: int) -> bool:
    return state(pid) in ("t", "T")


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def mappings(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/maps") as f:
        return sum(1 for _ in f)


def wait_running(pid: int, timeout: float) -> float | None:
    """Seconds until `pid` is no longer stopped (None if it still is after `timeout`).
    Polls every 0.1 ms: spinning would take a core from the guardian being measured."""
    t0 = time.perf_counter()
    while is_stopped(pid):
        if time.perf_counter() - t0 > timeout:
            return None
        time.sleep(0.0001)
    return time.perf_counter() - t0


def wait_stopped(pid: int, timeout: float) -> bool:
    t0 = time.perf_counter()
    while not is_stopped(pid):
        if time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.0001)
    return True


def wait_state(pid: int, letters: str, timeout: float) -> bool:
    t0 = time.perf_counter()
    while state(pid) not in tuple(letters):
        if time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.001)
    return True


def binary(app: str, version: str) -> Path:
    return toolchains.build(GOAPPS / app, version)


# --- part 1: the collector killed at random moments -----------------------------------------

# A warm parent ("zygote") compiles and loads the BPF program once, then forks one collector
# per trial that takes snapshots back to back until it is SIGKILLed. Forking keeps each trial
# at milliseconds instead of the ~10 s a fresh interpreter spends compiling with bcc; the
# forked collector is the real engine with its own guardian (the pipe dies with it).
ZYGOTE = r"""
import ctypes, os, sys
sys.path.insert(0, sys.argv[1])
from pytest_sideeye.engine import take as engine
from pytest_sideeye.engine import pause
targets = [engine.Target(int(a)) for a in sys.argv[2:]]
engine.warm(targets)   # each target prepared as a snapshot would (binary, program, plans)
# Killed collectors orphan their guardians: become their reaper so none lingers as a zombie.
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
print("WARM", flush=True)
for line in sys.stdin:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    pid = os.fork()
    if pid == 0:
        pause.Guardian._proc = None
        try:
            while True:
                engine.take_snapshot(targets)
        finally:
            os._exit(3)
    print(pid, flush=True)
"""


class Zygote:
    """The warm parent of the collectors killed in kill_trials."""

    def __init__(self, target_pids: list[int], env: dict[str, str] | None = None):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(ROOT), *map(str, target_pids)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=dict(os.environ, **(env or {})))
        line = self.proc.stdout.readline()
        if line.strip() != "WARM":
            raise RuntimeError(f"collector parent failed to start: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def fork(self) -> int:
        self.proc.stdin.write("fork\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class KillResult:
    trials: int = 0
    mid_pause: int = 0                   # kills that landed while the target was stopped
    left_stopped: int = 0                # targets still stopped LEFT_STOPPED_AFTER_S later
    resume_s: list[float] = field(default_factory=list)   # kill -> running, mid-pause kills
    exit_s: list[float] = field(default_factory=list)     # kill -> collector dead, same kills
    foreign_kept_stopped: bool = True    # the target someone else stopped stayed stopped

    @property
    def worst_resume_s(self) -> float:
        return max(self.resume_s, default=0.0)

    def over_goal(self) -> int:
        return sum(1 for s in self.resume_s if s >= RESUME_GOAL_S)


def after_kill(target: int, collector: int, timeout: float) -> tuple[float | None, float]:
    """(kill -> target running, kill -> collector dead) in seconds, the first None when the
    target is still stopped after `timeout`. The collector's death is when the kernel has
    closed its files, the guardian's pipe among them: the guardian cannot act earlier."""
    t0 = time.perf_counter()
    resumed = dead = None
    while resumed is None or dead is None:
        now = time.perf_counter() - t0
        if resumed is None and not is_stopped(target):
            resumed = now
        if dead is None and state(collector) in ("Z", "X", ""):
            dead = now
        if now > timeout:
            break
        time.sleep(0.0001)
    return resumed, dead if dead is not None else timeout


def kill_trials(target_pid: int, foreign_stopped_pid: int, n: int,
                rng: random.Random) -> KillResult:
    """SIGKILL a collector snapshotting [target, foreign] n times: odd trials at a random
    moment (before the stop, in decoding, ...), even ones inside a pause: half as soon as
    the stop is seen, half at a random moment up to 1 ms later. Aimed, not timed: the
    pre-read pause of 20,000 goroutines lasts ~2-4 ms, so a kill up to 10 ms after the
    stop (as before) landed after the resume more often than not on a quiet machine.
    Measures how long the target stays stopped."""
    res = KillResult()
    with Zygote([target_pid, foreign_stopped_pid]) as zygote:
        for i in range(n):
            child = zygote.fork()
            if i % 2:
                time.sleep(rng.uniform(0, 0.3))
            elif wait_stopped(target_pid, 5.0) and i % 4 == 2:
                time.sleep(rng.uniform(0, 0.001))
            stopped_at_kill = is_stopped(target_pid)
            os.kill(child, signal.SIGKILL)
            latency, died = after_kill(target_pid, child, LEFT_STOPPED_AFTER_S)
            res.trials += 1
            if latency is None:
                res.left_stopped += 1
                os.kill(target_pid, signal.SIGCONT)   # keep the next trials meaningful
            elif stopped_at_kill:
                res.mid_pause += 1
                res.resume_s.append(latency)
                res.exit_s.append(died)
            if not is_stopped(foreign_stopped_pid):
                res.foreign_kept_stopped = False
    return res


def run_kills(n: int, version: str, goroutines: int, seed: int = 7) -> KillResult:
    with start_app(binary("manyparked", version), "-n", str(goroutines)) as app, \
            start_app(binary("manyparked", version), "-n", "10") as foreign:
        os.kill(foreign.pid, signal.SIGSTOP)
        try:
            return kill_trials(app.pid, foreign.pid, n, random.Random(seed))
        finally:
            os.kill(foreign.pid, signal.SIGCONT)


@dataclass
class TogetherKillResult:
    trials: int = 0
    mid_way: int = 0        # kills with some targets still stopped and some collected already
    while_stopped: int = 0  # kills with at least one target stopped
    left_stopped: int = 0   # trials where a target was still stopped LEFT_STOPPED_AFTER_S later
    resume_s: list[float] = field(default_factory=list)  # kill -> every target running


def kill_trials_together(target_pids: list[int], n: int, rng: random.Random,
                         window_s: float) -> TogetherKillResult:
    """SIGKILL a collector snapshotting every target in together mode (SIDEEYE_TOGETHER=1:
    all stopped before the first is collected, each resumed once collected) at a random
    moment: the guardian must resume those still stopped, every one of them. A third of
    the kills come as soon as all of them are seen stopped, a third as soon as the first
    is seen running again (mid-way), a third at a random moment within `window_s`: aimed
    at the moments that matter rather than timed, which a fast or a loaded machine (or
    this process's own polling, on 2 CPUs) would shift."""
    res = TogetherKillResult()
    with Zygote(target_pids, {"SIDEEYE_TOGETHER": "1"}) as zygote:
        for trial in range(n):
            child = zygote.fork()
            deadline = time.perf_counter() + 20.0
            while not all(is_stopped(p) for p in target_pids):
                if time.perf_counter() > deadline:
                    raise RuntimeError("the collector never stopped its targets together")
                time.sleep(0.0001)
            if trial % 3 == 1:
                while all(is_stopped(p) for p in target_pids) and \
                        time.perf_counter() < deadline:
                    pass
            elif trial % 3 == 2:
                time.sleep(rng.uniform(0, window_s))
            stopped = [p for p in target_pids if is_stopped(p)]
            os.kill(child, signal.SIGKILL)
            t0 = time.perf_counter()
            while any(is_stopped(p) for p in target_pids) and \
                    time.perf_counter() - t0 < LEFT_STOPPED_AFTER_S:
                time.sleep(0.0001)
            res.trials += 1
            still = [p for p in target_pids if is_stopped(p)]
            if still:
                res.left_stopped += 1
                for p in still:
                    os.kill(p, signal.SIGCONT)   # keep the next trials meaningful
            elif stopped:
                res.resume_s.append(time.perf_counter() - t0)
            res.while_stopped += bool(stopped)
            res.mid_way += 0 < len(stopped) < len(target_pids)
            # The next collector must find every target running (no foreign stop).
            for p in target_pids:
                wait_running(p, 1.0)
    return res


def run_kills_together(n: int, version: str, processes: int, goroutines: int,
                       seed: int = 11) -> TogetherKillResult:
    """`processes` manyparked targets of `goroutines` each, snapshotted together."""
    import contextlib
    with contextlib.ExitStack() as stack:
        apps = [stack.enter_context(start_app(binary("manyparked", version), "-n",
                                              str(goroutines))) for _ in range(processes)]
        # Each target's collection takes ~1 ms a thousand goroutines, more on a loaded
        # machine: kills land before, between and after the targets' resumes.
        window_s = processes * max(goroutines, 300) * 5e-6
        return kill_trials_together([a.pid for a in apps], n, random.Random(seed), window_s)


# --- part 1b: the collector frozen mid-pause ---------------------------------------------------

def frozen_trials(target_pid: int, n: int, max_pause_s: float) -> list[float | None]:
    """SIGSTOP a collector while its target is paused (a hung collector: alive, its pipe
    open, so only the guardian's deadline can help). Seconds until the target runs again
    per trial (None: still stopped 2 s past the deadline)."""
    out: list[float | None] = []
    # The capture budget must fit in the shortened hard limit (settings refuses otherwise).
    env = {"SIDEEYE_MAX_PAUSE_S": str(max_pause_s),
           "SIDEEYE_CAPTURE_PAUSE_MS": str(min(10.0, max_pause_s * 1000 / 4))}
    with Zygote([target_pid], env) as zygote:
        for _ in range(n):
            child = zygote.fork()
            if not wait_stopped(target_pid, 5.0):
                raise RuntimeError("the collector never stopped its target")
            os.kill(child, signal.SIGSTOP)
            # The guardian's clock started at the collector's "S" line, a little before this.
            resumed = wait_running(target_pid, max_pause_s + 2.0)
            out.append(resumed)
            os.kill(child, signal.SIGKILL)
            if resumed is None:
                os.kill(target_pid, signal.SIGCONT)
    return out


def run_frozen(n: int, version: str, goroutines: int, max_pause_s: float) -> list[float | None]:
    with start_app(binary("manyparked", version), "-n", str(goroutines)) as app:
        return frozen_trials(app.pid, n, max_pause_s)


# --- part 2: load -----------------------------------------------------------------------------

@dataclass
class LoadResult:
    baseline: dict
    loaded: dict                                   # the client's figures with snapshots
    baseline_after: dict = field(default_factory=dict)   # noise check: the same run again
    snapshots: int = 0
    snapshot_errors: list[str] = field(default_factory=list)
    pauses_ms: list[float] = field(default_factory=list)
    # Per snapshot: its walk (pre-read or in the pause, why), the share re-walked.
    walks: list[str] = field(default_factory=list)
    rewalked_share: list[float] = field(default_factory=list)
    target_goroutines: tuple[int, int] = (0, 0)    # idle, before and after
    target_rss_kib: tuple[int, int] = (0, 0)
    collector_rss_kib: tuple[int, int] = (0, 0)
    collector_fds: tuple[int, int] = (0, 0)
    collector_maps: tuple[int, int] = (0, 0)


def goroutine_total(app) -> int:
    """The target's own count (net/http/pprof), independent of our snapshots."""
    first = app.get("/debug/pprof/goroutine?debug=1").split(b"\n", 1)[0].decode()
    return int(first.rsplit(None, 1)[-1])   # "goroutine profile: total N"


def start_client(client: Path, url: str, rate: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([str(client), "-url", url, "-rate", str(rate),
                             "-seconds", str(seconds), "-conns", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def client_result(p: subprocess.Popen, timeout: float) -> dict:
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"load client failed: {err.strip()}")
    return json.loads(out)


def settle_idle(app, timeout: float = 5.0) -> int:
    """The goroutine count once keep-alive connections of a finished client are gone."""
    deadline = time.monotonic() + timeout
    last = goroutine_total(app)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = goroutine_total(app)
        if now == last:
            return now
        last = now
    return last


def run_load(snapshots: int, seconds: float, rate: int, version: str) -> LoadResult:
    """Baseline run of the client, then the same run with `snapshots` snapshots spread
    evenly over it (each one starts as soon as its slot comes, back to back if late), then
    the baseline again: on a shared machine the two baselines show what is noise."""
    client = binary("loadclient", version)
    with start_app(binary("loadserver", version)) as app:
        url = app.url("/work?rounds=20&hold=0")
        for _ in range(5):   # compile, load and fill the caches before measuring
            engine.take_snapshot([app.pid])
        baseline = client_result(start_client(client, url, rate, seconds), seconds + 60)
        g0, rss0 = settle_idle(app), rss_kib(app.pid)
        c0 = (rss_kib(), open_fds(), mappings())
        p = start_client(client, url, rate, seconds)
        res = LoadResult(baseline, {})
        t0 = time.monotonic()
        for i in range(snapshots):
            slot = t0 + seconds * i / snapshots
            time.sleep(max(0.0, slot - time.monotonic()))
            proc = engine.take_snapshot([app.pid]).processes[0]
            res.snapshots += 1
            if proc.error or not proc.goroutines:
                res.snapshot_errors.append(proc.error or "no goroutines")
            else:
                res.pauses_ms.append(proc.pause_ns / 1e6)
                res.walks.append(proc.walk or "in the pause (no pre-read)")
                if proc.rewalked is not None:
                    res.rewalked_share.append(proc.rewalked / len(proc.goroutines))
        res.loaded = client_result(p, seconds + 60)
        c1 = (rss_kib(), open_fds(), mappings())
        res.baseline_after = client_result(start_client(client, url, rate, seconds), seconds + 60)
        res.target_goroutines = (g0, settle_idle(app))
        res.target_rss_kib = (rss0, rss_kib(app.pid))
        res.collector_rss_kib, res.collector_fds, res.collector_maps = zip(c0, c1)
    return res


# --- part 3: churn ----------------------------------------------------------------------------

# Functions a stack can never end in: a chain stopping there was cut without saying so.
NEVER_OUTERMOST = frozenset({
    "runtime.gopark", "runtime.goparkunlock", "runtime.park_m", "runtime.mcall",
    "runtime.selectgo", "runtime.chanrecv", "runtime.chanrecv1", "runtime.chanrecv2",
    "runtime.chansend", "runtime.chansend1", "runtime.semacquire1", "runtime.notetsleepg",
    "sync.runtime_Semacquire", "sync.runtime_SemacquireMutex", "time.Sleep",
    "runtime.netpollblock", "internal/poll.runtime_pollWait", "runtime.systemstack",
    "runtime.morestack", "runtime.goexit"})
# Where churn's own goroutines start (goroutine 1 under runtime.main).
CHURN_ROOTS = frozenset({"main.shortLived", "main.serveHTTP", "runtime.main"})


def _is_go_wrapper(function: str) -> bool:
    """A go statement with arguments starts its goroutine in a compiler-made wrapper
    (`main.spawnFor.gowrap2`): a goroutine caught before its first instruction ran sits at
    that wrapper's entry, which is its true outermost frame."""
    return ".gowrap" in function


def consistency_problems(p: Process, roots: frozenset[str] = CHURN_ROOTS) -> list[str]:
    """What is wrong with one process of a snapshot, one line each (empty: consistent)."""
    if p.error:
        return [f"process error: {p.error}"]
    problems = []
    seen: set[int] = set()
    for g in p.goroutines:
        if g.id in seen:
            problems.append(f"goroutine {g.id} twice")
        seen.add(g.id)
        if g.status not in STATUSES:
            problems.append(f"goroutine {g.id}: status {g.status!r} not in the allowed set")
        if g.truncated:
            continue
        if not g.frames:
            problems.append(f"goroutine {g.id} [{g.status}]: no frames and no truncation mark")
            continue
        last = g.frames[-1].function
        if [f.function for f in g.frames] == ["runtime.goexit"]:
            continue   # its function has returned: it is exiting (decode.symbolize)
        if last in NEVER_OUTERMOST:
            problems.append(f"goroutine {g.id}: stack ends in {last} without a truncation mark")
        elif any(f.function.startswith("main.") for f in g.frames) and last not in roots \
                and not _is_go_wrapper(last):
            problems.append(f"goroutine {g.id}: user stack ends in {last}, not a goroutine start")
    return problems


@dataclass
class ChurnResult:
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)
    goroutines_seen: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    worst_snapshot_s: float = 0.0
    target_alive: bool = False


def run_churn(snapshots: int, version: str, rate: int = 20000) -> ChurnResult:
    """Snapshots back to back of a program starting `rate` goroutines a second; the program
    must still be running normally afterwards (not stopped, not crashed)."""
    res = ChurnResult()
    seconds = 600
    with start_app(binary("churn", version), "-seconds", str(seconds), "-rate", str(rate)) as app:
        engine.take_snapshot([app.pid])   # compile outside the timed loop
        for _ in range(snapshots):
            t0 = time.perf_counter()
            proc = engine.take_snapshot([app.pid]).processes[0]
            res.worst_snapshot_s = max(res.worst_snapshot_s, time.perf_counter() - t0)
            res.snapshots += 1
            res.problems += consistency_problems(proc)
            res.goroutines_seen += len(proc.goroutines)
            res.truncated += sum(1 for g in proc.goroutines if g.truncated)
            for g in proc.goroutines:
                res.statuses[g.status] = res.statuses.get(g.status, 0) + 1
        res.target_alive = app.alive() and is_running_normally(app.pid)
    return res


def is_running_normally(pid: int) -> bool:
    return state(pid) not in ("", "t", "T", "Z", "X")


# --- the table ----------------------------------------------------------------------------------

def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_kills(r: KillResult, goroutines: int) -> None:
    print(f"\nCollector SIGKILLed ({r.trials} trials, target manyparked -n {goroutines})")
    print(_row("trials", "killed mid-pause", "targets left stopped (goal 0)",
               "worst resume ms (goal <100)", "resumes >= 100 ms", "median resume ms",
               "worst collector exit ms", "median collector exit ms",
               "foreign-stopped target left stopped"))
    print("|" + "---|" * 9)
    med = statistics.median(r.resume_s) * 1e3 if r.resume_s else 0.0
    emed = statistics.median(r.exit_s) * 1e3 if r.exit_s else 0.0
    print(_row(r.trials, r.mid_pause, r.left_stopped, f"{r.worst_resume_s * 1e3:.2f}",
               r.over_goal(), f"{med:.2f}", f"{max(r.exit_s, default=0) * 1e3:.2f}",
               f"{emed:.2f}", "yes" if r.foreign_kept_stopped else "NO"))
    slow = sorted(zip(r.resume_s, r.exit_s), reverse=True)[:5]
    print("slowest resumes (resume ms / collector exit ms): "
          + ", ".join(f"{a * 1e3:.1f}/{b * 1e3:.1f}" for a, b in slow))


def print_frozen(times: list[float | None], max_pause_s: float, goroutines: int) -> None:
    done = [t for t in times if t is not None]
    print(f"\nCollector frozen (SIGSTOP) mid-pause, SIDEEYE_MAX_PAUSE_S={max_pause_s:g}, "
          f"target manyparked -n {goroutines}")
    print(_row("trials", "left stopped (goal 0)", "min s to resume", "max s to resume"))
    print("|---|---|---|---|")
    print(_row(len(times), len(times) - len(done), f"{min(done, default=0):.3f}",
               f"{max(done, default=0):.3f}"))


def print_load(r: LoadResult, rate: int, seconds: float) -> None:
    print(f"\nLoad: loadserver at {rate} req/s for {seconds:g} s, {r.snapshots} snapshots "
          f"({r.snapshots / seconds:.0f}/s), {len(r.snapshot_errors)} snapshot errors")
    print(_row("run", "requests", "failed (goal 0)", "req/s", "p50 ms", "p99 ms",
               "p99.9 ms", "max ms"))
    print("|" + "---|" * 8)
    for name, d in (("without snapshots", r.baseline), ("with snapshots", r.loaded),
                    ("without snapshots, again", r.baseline_after)):
        print(_row(name, d["sent"], d["failed"], f"{d['rate']:.0f}", f"{d['p50_us'] / 1e3:.2f}",
                   f"{d['p99_us'] / 1e3:.2f}", f"{d['p999_us'] / 1e3:.2f}",
                   f"{d['max_us'] / 1e3:.2f}"))
    if r.pauses_ms:
        print(f"pause per snapshot: median {statistics.median(r.pauses_ms):.3f} ms, "
              f"max {max(r.pauses_ms):.3f} ms")
    if r.walks:
        pre = sum(w == "pre-read" for w in r.walks)
        others = sorted({w[:80] for w in r.walks if w != "pre-read"})[:3]
        print(f"walked after a pre-read: {pre} of {len(r.walks)} snapshots"
              + (f" (others, e.g.: {'; '.join(others)})" if others else ""))
    if r.rewalked_share:
        print(f"share of goroutines walked again in the pause: median "
              f"{statistics.median(r.rewalked_share):.1%}, max {max(r.rewalked_share):.1%}")
    print(_row("resource", "before", "after"))
    print("|---|---|---|")
    for name, (a, b) in (("target goroutines (idle)", r.target_goroutines),
                         ("target RSS KiB", r.target_rss_kib),
                         ("collector RSS KiB", r.collector_rss_kib),
                         ("collector open fds", r.collector_fds),
                         ("collector mappings", r.collector_maps)):
        print(_row(name, a, b))
    for e in r.snapshot_errors[:5]:
        print(f"snapshot error: {e}")


def print_churn(r: ChurnResult) -> None:
    print(f"\nChurn: {r.snapshots} snapshots back to back")
    print(_row("snapshots", "goroutines read", "inconsistencies (goal 0)", "truncated",
               "statuses", "worst snapshot ms", "target still running"))
    print("|" + "---|" * 7)
    print(_row(r.snapshots, r.goroutines_seen, len(r.problems), r.truncated,
               ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items())),
               f"{r.worst_snapshot_s * 1e3:.1f}", "yes" if r.target_alive else "NO"))
    for p in r.problems[:10]:
        print(f"problem: {p}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="kill,frozen,load,churn")
    ap.add_argument("--frozen", type=int, default=20)
    ap.add_argument("--max-pause", type=float, default=2.0,
                    help="SIDEEYE_MAX_PAUSE_S for the frozen-collector trials")
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--kill-goroutines", type=int, default=20000)
    ap.add_argument("--snapshots", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--churn-snapshots", type=int, default=300)
    ap.add_argument("--go", default=toolchains.default_version())
    args = ap.parse_args()
    parts = args.parts.split(",")
    print(f"Go {args.go}; {os.cpu_count()} CPUs")
    if "kill" in parts:
        print_kills(run_kills(args.kills, args.go, args.kill_goroutines), args.kill_goroutines)
    if "frozen" in parts:
        print_frozen(run_frozen(args.frozen, args.go, args.kill_goroutines, args.max_pause),
                     args.max_pause, args.kill_goroutines)
    if "load" in parts:
        print_load(run_load(args.snapshots, args.seconds, args.rate, args.go), args.rate,
                   args.seconds)
    if "churn" in parts:
        print_churn(run_churn(args.churn_snapshots, args.go))


if __name__ == "__main__":
    main()
