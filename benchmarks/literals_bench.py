"""Pause cost of capturing string literals on pages the target never touched (issue 24.4).

The `literals` fixture parks goroutines on literals it never reads (three of them inside
a 768 KiB literal, 128 KiB apart) and on maps of literal keys; each snapshot captures them
all. Per capture path (SIDEEYE_BPF_CAPTURE 1 and 0) and page-cache state (warm; cold: the
binary's unmapped pages dropped from the page cache before every snapshot), over --procs
fresh processes of --snaps snapshots each: the pause and its capture part (medians, min in
brackets), how many captured values were cut (and in how many snapshots the capture ran
past its pause budget, SIDEEYE_CAPTURE_PAUSE_MS), and how many of the far literals' pages the
snapshots left mapped in the target (they are read from the executable file, after the
resume: none, unless the iterator captured in BPF).

    .venv/bin/python benchmarks/literals_bench.py [--go 1.24.11] [--procs 3] [--snaps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import start_app  # noqa: E402

from pytest_sideeye.engine import take as engine  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

SPEC = {"main.greet": ["banner"], "main.show": ["text"], "main.settle": ["o.Tags"]}
FAR = [f"literal: far {c}|".encode() for c in "ABC"]
PAGE = 4096


def drop_from_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def far_pages(exe) -> list[int]:
    """Link-time page addresses of the far literals (a non-PIE build: runtime too)."""
    from elftools.elf.elffile import ELFFile
    with open(exe, "rb") as f:
        data = f.read()
        segs = [(s["p_vaddr"], s["p_offset"], s["p_filesz"]) for s in ELFFile(f).iter_segments()
                if s["p_type"] == "PT_LOAD" and not s["p_flags"] & 3]
    out = []
    for text in FAR:
        off = data.index(text)
        out += [(v + off - o) // PAGE * PAGE for v, o, n in segs if o <= off < o + n]
    return out


def mapped(pid: int, pages: list[int]) -> int:
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        n = 0
        for p in pages:
            f.seek(p // PAGE * 8)
            n += int.from_bytes(f.read(8), "little") >> 63
        return n


def run(exe, bpf: str, cold: bool, procs: int, snaps: int) -> dict:
    os.environ["SIDEEYE_BPF_CAPTURE"] = bpf
    pages = far_pages(exe)
    pauses, caps, cuts, over, left_mapped = [], [], 0, 0, 0
    for _ in range(procs):
        drop_from_page_cache(exe)
        with start_app(exe) as app:
            engine.take_snapshot([app.pid])     # warm-up: programs loaded, binary analysed
            for _ in range(snaps):
                if cold:
                    drop_from_page_cache(exe)
                p = engine.take_snapshot([app.pid], capture=SPEC).processes[0]
                pauses.append(p.pause_ns / 1e6)
                caps.append(p.pause_parts_ns["capture"] / 1e6)
                values = [v.value for g in p.goroutines for f in g.frames for v in f.variables]
                cuts += json.dumps(values).count('"$cut')
                over += any("pause budget" in n for n in p.notes)
            left_mapped += mapped(app.pid, pages)
    return {"pause": pauses, "capture": caps, "cuts": cuts, "over": over, "mapped": left_mapped,
            "pages": len(pages) * procs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--go", default=toolchains.default_version())
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--snaps", type=int, default=10)
    args = ap.parse_args()
    exe = toolchains.build(ROOT / "fixtures" / "goapps" / "literals", args.go)
    print(f"load average {os.getloadavg()[0]:.1f}; Go {args.go}; "
          f"{args.procs} processes x {args.snaps} snapshots")
    print("| BPF capture | page cache | pause ms (min) | capture part ms (min) | cut values "
          "(snapshots past the capture's pause budget) | far pages left mapped |")
    print("|---|---|---|---|---|---|")
    for bpf in ("1", "0"):
        for cold in (False, True):
            r = run(exe, bpf, cold, args.procs, args.snaps)
            print(f"| {bpf} | {'cold' if cold else 'warm'} | "
                  f"{statistics.median(r['pause']):.3f} ({min(r['pause']):.3f}) | "
                  f"{statistics.median(r['capture']):.3f} ({min(r['capture']):.3f}) | "
                  f"{r['cuts']} ({r['over']}) | {r['mapped']} of {r['pages']} |")


if __name__ == "__main__":
    main()
