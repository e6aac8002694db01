"""Pinned programs: the first process to load a layout's programs pins them in bpffs, the
next process opens the pins instead of paying the kernel verifier, and its snapshots are
as full as ever; stale pins (another version or key) are replaced; processes sharing the
pinned maps take turns."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from oracle import start_app
from support import missing

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]

BPFFS = Path("/sys/fs/bpf")

# One process: snapshot `pid` `reps` times; print whether its programs came from pins and
# the number of parked goroutines each snapshot saw.
SNAPSHOTS = """
import json, sys
from pytest_sideeye import engine
from pytest_sideeye.engine.take import _programs
pid, reps = int(sys.argv[1]), int(sys.argv[2])
counts = []
for _ in range(reps):
    p = engine.take_snapshot([pid]).processes[0]
    assert p.error is None, p.error
    counts.append(sum(any(f.function == "main.parkedLeaf" for f in g.frames)
                      for g in p.goroutines))
print(json.dumps({"from_pins": [prog.from_pins for prog in _programs.values()],
                  "parked": counts}))
"""


@pytest.fixture
def pins_root():
    if not os.path.ismount(BPFFS):
        missing("bpffs is not mounted at /sys/fs/bpf (scripts/setup.sh mounts it)")
    root = BPFFS / f"sideeye-test-{uuid.uuid4().hex[:8]}"
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def parked(go_build):
    with start_app(go_build("manyparked"), "-n", "1000") as app:
        yield app


def snapshots(pid: int, reps: int, pins_root: Path) -> subprocess.Popen:
    env = {**os.environ, "SIDEEYE_BPF_PINS": str(pins_root), "SIDEEYE_AGENT": "0"}
    return subprocess.Popen([sys.executable, "-c", SNAPSHOTS, str(pid), str(reps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_a_second_process_opens_the_pins_instead_of_loading(pins_root, parked):
    pins_root.mkdir()
    (pins_root / "v0_0_1-stale").mkdir()       # an older version's pins
    first = result(snapshots(parked.pid, 1, pins_root))
    assert first == {"from_pins": [False], "parked": [1000]}
    assert not (pins_root / "v0_0_1-stale").exists()
    pinned, = pins_root.iterdir()
    assert {"iter", "cfg", "out"} <= {p.name for p in pinned.iterdir()}
    second = result(snapshots(parked.pid, 2, pins_root))
    assert second == {"from_pins": [True], "parked": [1000, 1000]}


def test_processes_sharing_pinned_maps_take_turns(pins_root, parked):
    result(snapshots(parked.pid, 1, pins_root))   # loads and pins
    both = [snapshots(parked.pid, 6, pins_root) for _ in range(2)]
    for r in map(result, both):
        assert r == {"from_pins": [True], "parked": [1000] * 6}


# One process holding pinned maps: opens them (a snapshot of `pid`), says so, then on each
# line of stdin takes the engine's own lock of its maps (take._pins_held), says when it
# has it, and keeps it until the next line.
HOLDER = """
import sys, time, types
from pytest_sideeye import engine
from pytest_sideeye.engine.take import _pins_held, _programs
engine.take_snapshot([int(sys.argv[1])])
prog, = _programs.values()
print("OPEN", prog.from_pins, flush=True)
sys.stdin.readline()
with _pins_held([types.SimpleNamespace(program=prog)]):
    print("HELD", flush=True)
    sys.stdin.readline()
print("RELEASED", flush=True)
"""


def test_processes_sharing_pinned_maps_take_turns_after_their_folder_is_gone(
        pins_root, parked, go_build):
    """Two processes hold a layout's pinned maps; another layout's pinning removes their
    folder (pins of other keys are stale); they must still take turns. The lock was taken
    by the folder's path, which was gone: both went on at once, and one snapshot's records
    overwrote the other's in the shared maps (seen: 199 of 1,000 parked goroutines)."""
    result(snapshots(parked.pid, 1, pins_root))   # loads and pins this layout
    env = {**os.environ, "SIDEEYE_BPF_PINS": str(pins_root), "SIDEEYE_AGENT": "0"}
    holders = [subprocess.Popen([sys.executable, "-u", "-c", HOLDER, str(parked.pid)],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for h in holders:
            assert h.stdout.readline().split() == ["OPEN", "True"], h.stderr.read()
        pinned, = pins_root.iterdir()
        with start_app(go_build("manyparked", "1.21.13"), "-n", "10") as other:
            result(snapshots(other.pid, 1, pins_root))   # another layout pins its own
        assert not pinned.exists()
        first, second = holders
        say(first, "")
        assert first.stdout.readline() == "HELD\n"
        say(second, "")
        assert not readable(second, 1.5), "both hold the shared maps at once"
        say(first, "")
        assert first.stdout.readline() == "RELEASED\n"
        assert readable(second, 30) and second.stdout.readline() == "HELD\n"
        say(second, "")
        assert second.stdout.readline() == "RELEASED\n"
    finally:
        for h in holders:
            h.kill()
            h.communicate()


def say(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def readable(proc: subprocess.Popen, timeout: float) -> bool:
    return bool(select.select([proc.stdout], [], [], timeout)[0])


# One process: a snapshot of `pid` in which, between its collect phase (the pins' lock
# held) and the decoding of what it read, another process takes a snapshot of `other`
# with the same pinned maps (the SNAPSHOTS script): a delay a loaded machine can put there.
DECODED_LATE = """
import json, subprocess, sys
from pytest_sideeye import engine
from pytest_sideeye.engine import take
pid, other, script = int(sys.argv[1]), sys.argv[2], sys.argv[3]
engine.take_snapshot([pid])   # loads and pins, or opens the pins
finish = take._finish

def late_finish(*args, **kw):
    got = subprocess.run([sys.executable, "-c", script, other, "1"], check=True,
                         capture_output=True, text=True).stdout
    print(got, end="", flush=True)
    return finish(*args, **kw)

take._finish = late_finish
p = engine.take_snapshot([pid]).processes[0]
print(json.dumps({"parked": sum(any(f.function == "main.parkedLeaf" for f in g.frames)
                                for g in p.goroutines), "notes": p.notes}))
"""


def test_a_snapshot_decoded_after_another_process_reused_the_pinned_maps(
        pins_root, parked, go_build):
    """The last records a snapshot read stay a view of the pinned map until decoded, after
    the pins' lock is let go: another process's snapshot (here of another program of the
    same Go, a few goroutines) then wrote its own records there, and the first showed
    those in place of as many of its own. The walk in the pause (no pre-read, or one that
    gave way to it) is the one leaving its records in the map."""
    env = {**os.environ, "SIDEEYE_BPF_PINS": str(pins_root), "SIDEEYE_AGENT": "0",
           "SIDEEYE_PREREAD": "0"}
    with start_app(go_build("typerules")) as other:
        out = subprocess.run([sys.executable, "-c", DECODED_LATE, str(parked.pid),
                              str(other.pid), SNAPSHOTS], env=env, capture_output=True,
                             text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    between, first = map(json.loads, out.stdout.splitlines())
    assert between == {"from_pins": [True], "parked": [0]}   # it did share the maps
    assert first == {"parked": 1000, "notes": []}
