"""Record the raw records of real snapshots (tests/data/records/), so that decoding is
tested per Go version without root, BPF or a live process (tests/engine/test_decode_recorded.py).

    sudo .venv/bin/python tests/record_records.py [GO_VERSION ...]

For each version: build parkzoo with -trimpath (a reproducible binary: the test rebuilds
the same one), start it, take a snapshot keeping its Records, check the decoded goroutines
against parkzoo's own debug=2 dumps taken around the snapshot (the oracle: a golden file
must be right, not only stable), and write records + decoded goroutines. Re-record when the
C's record layout or the decoder's output changes on purpose.

Also per version: a pause of profspin that caught spinners' threads in the Go signal
handler (records of their signal frames), checked against the spinners' known stacks.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from oracle import compare, stable_goroutines, start_app  # noqa: E402

from pytest_sideeye import engine  # noqa: E402
from pytest_sideeye.engine.bpf import source_constants  # noqa: E402
from pytest_sideeye.engine.cstructs import c_struct  # noqa: E402
from pytest_sideeye.engine.take import snapshot_process  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402
from pytest_sideeye.snapshot.godump import parse_dump  # noqa: E402

OUT = HERE / "data" / "records"
APP, FLAGS = "parkzoo", ("-trimpath",)
VERSIONS = ("1.21.13", "1.24.11", "1.27.3")


def record_layout() -> dict[str, int]:
    """What recorded bytes depend on: the C's record layout."""
    c = source_constants()
    return {"HDR_WORDS": c["HDR_WORDS"], "MAX_FRAMES": c["MAX_FRAMES"],
            "grec": c_struct("grec").size, "trec": c_struct("trec").size}


def record(version: str) -> Path:
    from pytest_sideeye.binary import analyze
    binary = toolchains.build(HERE.parent / "fixtures" / "goapps" / APP, version, flags=FLAGS)
    with start_app(binary) as app:
        time.sleep(0.3)  # let the last goroutines reach their parking spots
        before = parse_dump(app.dump_debug2())
        kept: list = []
        proc = snapshot_process(engine.Target(app.pid), records_out=kept)
        after = parse_dump(app.dump_debug2())
    if proc.error:
        raise SystemExit(f"go{version}: {proc.error}")
    diffs = compare(proc, stable_goroutines(before, after))
    if diffs:
        raise SystemExit(f"go{version}: the snapshot does not match the oracle:\n"
                         + "\n".join(diffs))
    info = analyze(binary)
    assert not info.pie, "a static Go binary is not PIE: its load bias is 0"
    doc = {"app": APP, "go": version, "flags": list(FLAGS),
           "build_id": info.build_id, "bias": 0, "layout": record_layout(),
           "records": kept[0].to_json(),
           "goroutines": [g.to_json() for g in proc.goroutines]}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{APP}-go{version}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# profspin: a pause that caught spinners' threads in the Go signal handler (their
# goroutines unwound from the signal frames), checked against the spinners' known stacks.
SIGNAL_APP = "profspin"
SPINNERS = (["main.spinLeaf", "main.spinA"],
            ["main.spinLeaf"] + ["main.down"] * 21 + ["main.spinB"])


def record_signal(version: str, tries: int = 300) -> Path:
    from pytest_sideeye.binary import analyze
    binary = toolchains.build(HERE.parent / "fixtures" / "goapps" / SIGNAL_APP, version,
                              flags=FLAGS)
    with start_app(binary, env={"GOMAXPROCS": "4"}) as app:
        time.sleep(0.2)
        for _ in range(tries):
            kept: list = []
            proc = snapshot_process(engine.Target(app.pid), records_out=kept)
            if proc.error:
                raise SystemExit(f"go{version}: {proc.error}")
            running = [g for g in proc.goroutines if g.status == "running"]
            if kept[0].nsignals and len(running) == len(SPINNERS):
                break
        else:
            raise SystemExit(f"go{version}: no pause caught a thread in the signal handler")
    for g in running:
        functions = [f.function for f in g.frames if f.function != "runtime.asyncPreempt"]
        if functions not in SPINNERS or g.truncated:
            raise SystemExit(f"go{version}: goroutine {g.id} decodes to {functions} "
                             f"({g.truncated}), not a spinner's stack")
    info = analyze(binary)
    assert not info.pie, "a static Go binary is not PIE: its load bias is 0"
    doc = {"app": SIGNAL_APP, "go": version, "flags": list(FLAGS),
           "build_id": info.build_id, "bias": 0, "layout": record_layout(),
           "records": kept[0].to_json(),
           "goroutines": [g.to_json() for g in proc.goroutines]}
    path = OUT / f"{SIGNAL_APP}-go{version}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


if __name__ == "__main__":
    for v in sys.argv[1:] or VERSIONS:
        for p in (record(v), record_signal(v)):
            print(p, f"{p.stat().st_size / 1e3:.0f} kB")
