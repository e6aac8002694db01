"""The `go_service` fixture factory: what a user declares in conftest.py (validated into a
ServiceSpec), and the pytest fixture that starts it for each test that asks for it
(containers.py does the Docker side: image, network, start, readiness, cleanup).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from pytest_sideeye.errors import SideeyeError, one_line
from pytest_sideeye.services import images
from pytest_sideeye.services.containers import (
    SCOPES,
    Service,
    ServiceSpec,
    once_per_process,
    start,
    wait_ready,
)
from pytest_sideeye.services.prebuild import build_error


def go_service(name: str, *, source: str | os.PathLike | None = None, image: str | None = None,
               dockerfile: str | os.PathLike | None = None, ports: Iterable[int] = (),
               args: Iterable[str] = (), env: dict[str, str] | None = None,
               scope: str = "function", ready_http: tuple[int, str] | int | None = None,
               ready_tcp: int | Iterable[int] | None = None, ready_log: str | None = None,
               ready_timeout: float = 30, go_version: str | None = None,
               networks: Iterable[str] = (), aliases: Iterable[str] = (),
               labels: dict[str, str] | None = None, gopath: str | None = None) -> Callable:
    """A pytest fixture named `name` that runs a Go service in Docker and yields a Service.

    Exactly one of `source` (a Go main package, relative to the calling file's folder),
    `dockerfile` (likewise) or `image` (a local image). Readiness (all given checks must
    pass, from the host): `ready_http=(port, path)` answers < 500, `ready_tcp=port(s)`
    accept connections, `ready_log=regex` appears in the logs. With none given and ports
    published, every port must accept TCP connections.

    `ports` are published on 127.0.0.1 at random host ports (Service.url/host_port);
    `args` follow the image's entrypoint; `env` may name other services of the test
    ("http://ledger:8080"): every service is reachable by its name (and `aliases`) on its
    scope's network. `networks` are existing Docker networks to join as well, `labels`
    extra container labels, `go_version` a toolchain from toolchains.installed_versions(),
    `gopath` a GOPATH of libraries for a `source` without go.mod (built with
    GO111MODULE=off: Debian's /usr/share/gocode, where golang-*-dev packages put them)."""
    base = _caller_dir()
    spec = _make_spec(name, base, source=source, image=image, dockerfile=dockerfile,
                      ports=ports, args=args, env=env, scope=scope, ready_http=ready_http,
                      ready_tcp=ready_tcp, ready_log=ready_log, ready_timeout=ready_timeout,
                      go_version=go_version, networks=networks, aliases=aliases,
                      labels=labels, gopath=gopath)

    def service_fixture(request: pytest.FixtureRequest) -> "Service":
        return _start_for_request(spec, request)

    service_fixture.__name__ = service_fixture.__qualname__ = name
    service_fixture.__doc__ = f"Go service {name!r} in Docker ({scope} scope)."
    service_fixture.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    service_fixture.sideeye_spec = spec   # what the plugin builds before the first test
    return pytest.fixture(scope=scope, name=name)(service_fixture)


def specs_of_items(items: Iterable[Any]) -> list[ServiceSpec]:
    """The go_service specs the collected test items use, directly or through other
    fixtures, in first-use order."""
    found: dict[ServiceSpec, None] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for defs in (info.name2fixturedefs.values() if info is not None else ()):
            for fd in defs:
                spec = getattr(fd.func, "sideeye_spec", None)
                if spec is not None:
                    found.setdefault(spec, None)
    return list(found)


def _caller_dir() -> Path:
    """The folder of the conftest (or module) that called go_service: paths are relative
    to it, like a Dockerfile's COPY is relative to its context."""
    caller = sys._getframe(2).f_globals.get("__file__")
    return Path(caller).resolve().parent if caller else Path.cwd()


def _make_spec(name: str, base: Path, *, source, image, dockerfile, ports, args, env, scope,
               ready_http, ready_tcp, ready_log, ready_timeout, go_version, networks,
               aliases, labels, gopath=None) -> ServiceSpec:
    if not name.isidentifier():
        raise SideeyeError(f"go_service name {name!r} must be a Python identifier "
                           "(tests request it as an argument)")
    if sum(x is not None for x in (source, image, dockerfile)) != 1:
        raise SideeyeError(f"go_service {name!r} needs exactly one of source=, image= "
                           "or dockerfile=")
    if scope not in SCOPES:
        raise SideeyeError(f"go_service {name!r}: scope must be one of {', '.join(SCOPES)}")
    src = (base / source).resolve() if source is not None else None
    if src is not None and not src.exists():
        raise SideeyeError(f"go_service {name!r}: source {src} does not exist")
    if isinstance(ready_http, int):
        ready_http = (ready_http, "/")
    if ready_http is not None and not str(ready_http[1]).startswith("/"):
        ready_http = (ready_http[0], "/" + str(ready_http[1]))
    tcp = (ready_tcp,) if isinstance(ready_tcp, int) else tuple(ready_tcp or ())
    ports = tuple(int(p) for p in ports)
    checked = tcp + ((ready_http[0],) if ready_http else ())
    for p in checked:
        if p not in ports:
            raise SideeyeError(f"go_service {name!r}: readiness port {p} is not in ports=")
    if ready_log is not None:
        re.compile(ready_log)
    return ServiceSpec(
        name=name, source=src, image=image,
        dockerfile=(base / dockerfile).resolve() if dockerfile is not None else None,
        ports=ports, args=tuple(str(a) for a in args),
        env=tuple((str(k), str(v)) for k, v in (env or {}).items()), scope=scope,
        ready_http=(int(ready_http[0]), str(ready_http[1])) if ready_http else None,
        ready_tcp=tcp, ready_log=ready_log, ready_timeout=float(ready_timeout),
        go_version=go_version, networks=tuple(networks), aliases=tuple(aliases),
        labels=tuple((labels or {}).items()), gopath=gopath)


def _start_for_request(spec: ServiceSpec, request: pytest.FixtureRequest) -> Service:
    import docker

    failed = build_error(spec)
    if failed:   # the build before the first test failed: its message, not a rebuild
        pytest.fail(failed, pytrace=False)
    try:
        once_per_process()
        image = spec.image_tag()
    except SideeyeError as e:
        pytest.fail(str(e), pytrace=False)

    node = request.node
    chain = [n.nodeid for n in node.listchain()]
    try:
        try:
            svc = start(spec, image, node.nodeid, chain, session=request.session)
        except docker.errors.ImageNotFound:
            # Removed behind our back (an image prune mid-run): build it again, once.
            images.forget(image)
            image = spec.image_tag()
            svc = start(spec, image, node.nodeid, chain, session=request.session)
    except docker.errors.APIError as e:
        pytest.fail(f"service {spec.name!r} could not start: {one_line(e)}",
                    pytrace=False)
    except SideeyeError as e:
        pytest.fail(str(e), pytrace=False)
    request.addfinalizer(svc.stop)
    problem = wait_ready(svc)
    if problem:
        pytest.fail(problem, pytrace=False)
    return svc
