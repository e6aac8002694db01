"""Benchmark of stage 1 (binary analysis): prints a table of analyze() cold and warm,
Symtab build time and 100k frames_for_pc lookups, for the inlines fixture and for
cmd/pprof built from a toolchain's GOROOT (a ~18 MB Go program with DWARF).

    .venv/bin/python benchmarks/binary_bench.py [--go 1.24.11] [--lookups 100000]
"""
from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_sideeye.binary import info as gobinary
from pytest_sideeye.binary.elf import StaticImage  # noqa: E402
from pytest_sideeye.memo import MEMO  # noqa: E402
from pytest_sideeye.services import toolchains  # noqa: E402

BENCH_DIR = Path.home() / ".cache" / "sideeye" / "bench"


def build_pprof(version: str) -> Path:
    """cmd/pprof from the toolchain's own sources (vendored deps: no network)."""
    out = BENCH_DIR / f"pprof-go{version}"
    if out.is_file():
        return out
    root = toolchains.goroot(version)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOROOT=str(root), GOTOOLCHAIN="local", GOPROXY="off",
               GOFLAGS="-mod=vendor", CGO_ENABLED="0",
               GOCACHE=str(Path.home() / ".cache" / "sideeye" / "gocache" / version))
    subprocess.run([str(toolchains.go_binary(version)), "build", "-o", str(out), "."],
                   cwd=root / "src" / "cmd" / "pprof", env=env, check=True)
    return out


def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(path: Path, lookups: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SIDEEYE_BINARY_CACHE"] = cache

        def cold():
            for f in Path(cache).glob("*"):
                f.unlink()
            MEMO.clear()
            gobinary.analyze(path)

        def warm():
            MEMO.clear()
            gobinary.analyze(path)

        t_cold = best_of(3, cold)
        t_warm = best_of(3, warm)
        t_mem = best_of(3, lambda: gobinary.analyze(path))
    data = path.read_bytes()
    t_symtab = best_of(3, lambda: StaticImage(ELFFile(io.BytesIO(data))).symtab())

    st = StaticImage(ELFFile(io.BytesIO(data))).symtab()
    rng = random.Random(7)
    funcs = [f for f in st.funcs() if f.end - f.entry > 1]
    pcs = []
    for _ in range(lookups):
        f = rng.choice(funcs)
        pcs.append(rng.randrange(f.entry + 1, f.end))
    t = time.perf_counter()
    for pc in pcs:
        st.frames_for_pc(pc, is_call_site=True)
    t_first = time.perf_counter() - t      # mostly first-time table decoding
    # A snapshot's goroutines sit at few distinct PCs: 1,000 of them, 100 times each.
    few = pcs[:1000] * (lookups // 1000)
    t = time.perf_counter()
    for pc in few:
        st.frames_for_pc(pc, is_call_site=True)
    t_again = time.perf_counter() - t
    return {
        "binary": f"{path.name} ({len(data) / 1e6:.1f} MB, {len(st)} funcs)",
        "analyze cold": f"{t_cold * 1e3:.0f} ms",
        "analyze warm (disk cache)": f"{t_warm * 1e3:.0f} ms",
        "analyze (memory cache)": f"{t_mem * 1e6:.0f} us",
        "Symtab build": f"{t_symtab * 1e3:.1f} ms",
        f"{lookups // 1000}k frames_for_pc, all distinct PCs": f"{t_first:.2f} s",
        f"{lookups // 1000}k frames_for_pc, 1k distinct PCs": f"{t_again:.2f} s",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--go", default="1.24.11")
    ap.add_argument("--lookups", type=int, default=100_000)
    args = ap.parse_args()
    binaries = [toolchains.build(ROOT / "fixtures" / "goapps" / "inlines", args.go),
                build_pprof(args.go)]
    rows = [bench(b, args.lookups) for b in binaries]
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    cols = [max(len(r[k]) for k in keys) for r in rows]
    for k in keys:
        print(f"{k:<{width}}  " + "  ".join(f"{r[k]:>{c}}" for r, c in zip(rows, cols)))


if __name__ == "__main__":
    main()
