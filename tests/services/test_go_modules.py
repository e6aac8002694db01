"""go_service(source=...) builds a Go module as teams have it: with its vendor/ folder, or
from the module proxy and module cache their environment names (GOPROXY, GOMODCACHE,
GOFLAGS, GOSUMDB...), and the build cache key covers go.sum, vendor/modules.txt and the
module's other packages.

The dependency is a real library: github.com/google/go-cmp from Debian's
golang-github-google-go-cmp-dev (/usr/share/gocode, installed by scripts/setup.sh with
golang-google-grpc-dev, which depends on it), served by a module proxy made of plain files
(GOPROXY=file://, the layout `go mod download` reads), so no network is needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from support import missing

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import toolchains

CMP_SOURCE = Path("/usr/share/gocode/src/github.com/google/go-cmp")
CMP_MODULE, CMP_VERSION = "github.com/google/go-cmp", "v0.5.9"   # Debian 12's 0.5.9-1
# Go settings a test must not inherit from whoever runs the suite.
GO_SETTINGS = ("GOFLAGS", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GONOSUMDB", "GOSUMDB",
               "GOMODCACHE", "GOPATH", "GOWORK")

MAIN_GO = """\
package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/google/go-cmp/cmp"
)

type order struct {
	ID    int
	Items []string
}

func diff() string {
	return cmp.Diff(order{1, []string{"tea"}}, order{1, []string{"tea", "cake"}})
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "diff" {
		fmt.Print(diff())
		return
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/diff", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, diff())
	})
	fmt.Println(http.ListenAndServe(":8080", nil))
}
"""


@pytest.fixture
def go_settings_unset(monkeypatch):
    for name in GO_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def file_proxy(folder: Path) -> Path:
    """A GOPROXY folder serving go-cmp from Debian's source: @v/list, .info, .mod and a
    .zip whose entries start with `module@version/`, as proxy.golang.org serves them."""
    if not (CMP_SOURCE / "go.mod").is_file():
        missing(f"{CMP_SOURCE} is missing: install golang-github-google-go-cmp-dev")
    at = folder / CMP_MODULE / "@v"
    at.mkdir(parents=True)
    (at / "list").write_text(CMP_VERSION + "\n")
    (at / f"{CMP_VERSION}.info").write_text(
        json.dumps({"Version": CMP_VERSION, "Time": "2022-08-01T00:00:00Z"}))
    (at / f"{CMP_VERSION}.mod").write_bytes((CMP_SOURCE / "go.mod").read_bytes())
    with zipfile.ZipFile(at / f"{CMP_VERSION}.zip", "w") as z:
        for p in sorted(CMP_SOURCE.rglob("*")):
            if p.is_file():
                z.write(p, f"{CMP_MODULE}@{CMP_VERSION}/{p.relative_to(CMP_SOURCE)}")
    return folder


def service_module(folder: Path, main: str = "cmd/cmpsvc") -> Path:
    """A module requiring go-cmp, laid out as services often are (main package in
    cmd/cmpsvc) or with its main package at the top; returns the main package's folder."""
    (folder / main).mkdir(parents=True, exist_ok=True)
    (folder / "go.mod").write_text(f"module example.com/cmpsvc\n\ngo 1.21\n\n"
                                   f"require {CMP_MODULE} {CMP_VERSION}\n")
    (folder / main / "main.go").write_text(MAIN_GO)
    return folder / main


def vendor(module: Path, proxy: Path, modcache: Path, steps=("tidy", "vendor")) -> None:
    """What a team does once: `go mod tidy` (go.sum) and `go mod vendor` (vendor/ with its
    modules.txt), by Go itself."""
    version = toolchains.default_version()
    env = {k: v for k, v in os.environ.items() if k not in GO_SETTINGS}
    env.update(GOROOT=str(toolchains.goroot(version)), GOTOOLCHAIN="local", GO111MODULE="on",
               GOPROXY=f"file://{proxy}", GOSUMDB="off", GOMODCACHE=str(modcache),
               GOFLAGS="-modcacherw", GOCACHE=str(toolchains.gocache(version)))
    for step in steps:
        subprocess.run([str(toolchains.go_binary(version)), "mod", step], cwd=module,
                       env=env, check=True, capture_output=True, text=True, timeout=120)
    if "vendor" in steps:
        modules = (module / "vendor" / "modules.txt").read_text()
        assert f"# {CMP_MODULE} {CMP_VERSION}" in modules


@pytest.mark.slow
@pytest.mark.usefixtures("needs_root", "needs_docker")
def test_a_module_with_a_vendored_dependency_builds_and_runs_under_go_service(tmp_path):
    service_module(tmp_path / "svc")
    vendor(tmp_path / "svc", file_proxy(tmp_path / "proxy"), tmp_path / "modcache")
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from pytest_sideeye import go_service
        cmpsvc = go_service("cmpsvc", source="svc/cmd/cmpsvc", ports=[8080],
                            ready_http=(8080, "/healthz"), ready_timeout=20)
    """))
    (tmp_path / "test_cmpsvc.py").write_text(textwrap.dedent("""
        import urllib.request

        def test_diff(cmpsvc):
            with urllib.request.urlopen(cmpsvc.url(8080, "/diff"), timeout=10) as r:
                body = r.read().decode()
            assert '"cake"' in body and "Items" in body, body
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # The user's plain environment: no GOPROXY (builds stay off the network), no GOFLAGS.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k not in GO_SETTINGS}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "-p", "no:hypothesispytest", "--junitxml=junit.xml"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    print(r.stdout[-6000:], r.stderr[-3000:])
    built = [line for line in r.stdout.splitlines() if line.startswith("sideeye: building")]
    assert len(built) == 1 and " ... done in " in built[0], built
    assert r.returncode == 0


@pytest.mark.usefixtures("go_settings_unset")
def test_a_vendored_module_builds_from_vendor_with_no_module_cache_and_no_proxy(
        tmp_path, monkeypatch):
    main = service_module(tmp_path / "svc", main=".")
    vendor(tmp_path / "svc", file_proxy(tmp_path / "proxy"), tmp_path / "modcache")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "empty-modcache"))
    binary = toolchains.build(main, output=tmp_path / "cmpsvc")
    out = subprocess.run([str(binary), "diff"], capture_output=True, text=True, timeout=30)
    assert '"cake"' in out.stdout, out
    assert not (tmp_path / "empty-modcache").exists()    # vendor/ only, as `go build` does


@pytest.mark.usefixtures("go_settings_unset")
def test_a_dependency_comes_from_the_users_module_proxy_into_the_users_module_cache(
        tmp_path, monkeypatch):
    main = service_module(tmp_path / "svc")          # go.mod only: no go.sum, no vendor/
    monkeypatch.setenv("GOPROXY", f"file://{file_proxy(tmp_path / 'proxy')}")
    monkeypatch.setenv("GOSUMDB", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("GOFLAGS", "-mod=mod -modcacherw")
    binary = toolchains.build(main, output=tmp_path / "cmpsvc")
    out = subprocess.run([str(binary), "diff"], capture_output=True, text=True, timeout=30)
    assert '"cake"' in out.stdout, out
    download = tmp_path / "modcache" / "cache" / "download" / CMP_MODULE / "@v"
    assert (download / f"{CMP_VERSION}.zip").is_file()


@pytest.mark.usefixtures("go_settings_unset")
def test_a_missing_module_is_not_downloaded_unless_GOPROXY_is_set_and_the_error_says_so(
        tmp_path, monkeypatch):
    main = service_module(tmp_path / "svc")
    # go.sum as a team commits it, and a module cache without go-cmp
    vendor(tmp_path / "svc", file_proxy(tmp_path / "proxy"), tmp_path / "modcache",
           steps=("tidy",))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "empty-modcache"))
    with pytest.raises(SideeyeError) as e:
        toolchains.build(main, output=tmp_path / "cmpsvc")
    message = str(e.value)
    assert "module lookup disabled by GOPROXY=off" in message, message
    assert "go mod vendor" in message and "set GOPROXY" in message, message
    # Without go.sum Go names the missing entry (its last line is only "\tgo get ...").
    (tmp_path / "svc" / "go.sum").unlink()
    with pytest.raises(SideeyeError, match=f"missing go.sum entry .*{CMP_MODULE}/cmp"):
        toolchains.build(main, output=tmp_path / "cmpsvc")


def key_of(src: Path) -> str:
    return toolchains.build_key(src.resolve(), "1.24.11")


@pytest.mark.usefixtures("go_settings_unset")
def test_the_build_key_covers_go_sum_vendor_modules_txt_sibling_packages_and_go_settings(
        tmp_path, monkeypatch):
    main = service_module(tmp_path)
    (tmp_path / "go.sum").write_text(f"{CMP_MODULE} {CMP_VERSION} h1:one=\n")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "modules.txt").write_text(f"# {CMP_MODULE} {CMP_VERSION}\n")
    (tmp_path / "internal").mkdir()
    (tmp_path / "internal" / "lib.go").write_text("package internal\n")
    keys = [key_of(main)]
    assert key_of(main) == keys[0]                     # stable
    (tmp_path / "README.md").write_text("not Go\n")
    assert key_of(main) == keys[0]                     # only what the build reads
    for path, text in (("go.sum", f"{CMP_MODULE} {CMP_VERSION} h1:two=\n"),
                       ("vendor/modules.txt", f"# {CMP_MODULE} v0.6.0\n"),
                       ("internal/lib.go", "package internal\n\nconst X = 1\n")):
        (tmp_path / path).write_text(text)
        keys.append(key_of(main))
        assert keys[-1] not in keys[:-1], path
    for name, value in (("GOPROXY", "https://proxy.golang.org"), ("GOFLAGS", "-mod=mod"),
                        ("GOMODCACHE", str(tmp_path / "mc")), ("GOPRIVATE", "example.com"),
                        ("GONOSUMDB", "example.com")):
        monkeypatch.setenv(name, value)
        keys.append(key_of(main))
        assert keys[-1] not in keys[:-1], name


@pytest.mark.usefixtures("go_settings_unset")
def test_go_settings_are_the_users_when_set_else_offline_defaults(monkeypatch):
    unset = toolchains.go_env(None, module=True)
    assert unset["GOPROXY"] == "off" and unset["GOFLAGS"] == "-buildvcs=false"
    assert "GOPATH" not in unset                       # Go's default: $HOME/go/pkg/mod
    assert "-mod" not in unset["GOFLAGS"]              # vendor/ is Go's own choice
    monkeypatch.setenv("GOPROXY", "https://goproxy.example,direct")
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOPRIVATE", "example.com/*")
    monkeypatch.setenv("GOMODCACHE", "/srv/modcache")
    user = toolchains.go_env(None, module=True)
    assert user["GOPROXY"] == "https://goproxy.example,direct"
    assert user["GOFLAGS"] == "-mod=mod -buildvcs=false"
    assert user["GOPRIVATE"] == "example.com/*" and user["GOMODCACHE"] == "/srv/modcache"
    monkeypatch.setenv("GOFLAGS", "-buildvcs=true")
    assert toolchains.go_env(None, module=True)["GOFLAGS"] == "-buildvcs=true"
    assert toolchains.go_env("/usr/share/gocode", module=False)["GOPATH"] == "/usr/share/gocode"
