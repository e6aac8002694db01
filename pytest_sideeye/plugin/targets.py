"""What to snapshot for a test: its go_service services, and the containers others
started that it uses: those behind its fixture values (`auto`, on unless `none` is
named), those its selectors pick (`--sideeye-containers`, ini `sideeye_containers`,
`SIDEEYE_CONTAINERS`, the marker's `containers=`), and those registered with
`sideeye_watch`. Then the engine's targets for them (`build_targets`).

Registered as a plugin of its own by hooks.py: it tracks which fixture is being set up
(`sideeye_watch` takes that fixture's scope) and when each test's setup began (the
`events` selector).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

import pytest

from pytest_sideeye import settings as env_settings
from pytest_sideeye.errors import SideeyeError, one_line
from pytest_sideeye.snapshot import Process

_SELECTORS = pytest.StashKey[list]()
_SETUP_AT = pytest.StashKey[float]()


# --------------------------------------------------------------------------- settings

def add_container_options(group: Any, parser: pytest.Parser) -> None:
    group.addoption("--sideeye-containers", action="append", default=None, metavar="SEL",
                    help="containers to snapshot besides the test's fixtures (repeatable): "
                         "auto, none, events, compose:PROJECT[/SERVICE], label:KEY=VALUE, "
                         "name:GLOB, id:ID")
    parser.addini("sideeye_containers", "like --sideeye-containers, one selector a line",
                  type="linelist")


def configure(config: pytest.Config) -> None:
    """Check the selectors of the command line, ini and environment now (a bad one is one
    line before any test runs), and register this module's hooks and fixture."""
    import sys

    from pytest_sideeye.services import parse_selectors
    config.pluginmanager.register(sys.modules[__name__], "sideeye-targets")
    try:
        config.stash[_SELECTORS] = (
            parse_selectors(config.getoption("sideeye_containers"), "--sideeye-containers")
            + parse_selectors(config.getini("sideeye_containers"), "ini sideeye_containers")
            + parse_selectors(env_settings.containers(), "SIDEEYE_CONTAINERS"))
    except SideeyeError as e:
        raise pytest.UsageError(str(e)) from None


def item_selectors(item: pytest.Item) -> list[Any]:
    """The run's selectors and every sideeye marker's containers= (SideeyeError for a bad
    one)."""
    from pytest_sideeye.services import parse_selectors
    found = list(item.config.stash.get(_SELECTORS, []))
    for marker in item.iter_markers("sideeye"):
        found += parse_selectors(marker.kwargs.get("containers"), "sideeye marker containers=")
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SETUP_AT] = time.time()
    try:
        item_selectors(item)
        problem = None
    except SideeyeError as e:   # a bad marker fails the test at setup, in one line
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)


# --------------------------------------------------------------------------- sideeye_watch

@dataclass
class _Watch:
    what: Any              # the object or id given
    name: str | None
    scope_nodeid: str
    fixture: str | None    # the fixture that registered it; None: the test itself


class _Watches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[_Watch] = []
        self.setting_up: list[tuple[Any, Any]] = []   # (fixturedef, request) being set up
        self.current_item: pytest.Item | None = None

    def add(self, w: _Watch) -> None:
        with self._lock:
            self._live.append(w)

    def remove(self, w: _Watch) -> None:
        with self._lock:
            if w in self._live:
                self._live.remove(w)

    def for_item(self, item: pytest.Item) -> list[_Watch]:
        with self._lock:
            live = list(self._live)
        names = set(getattr(item, "fixturenames", ()))
        return [w for w in live if w.scope_nodeid == item.nodeid
                or (w.fixture in names and _encloses(w.scope_nodeid, item.nodeid))]


def _encloses(scope_nodeid: str, nodeid: str) -> bool:
    return scope_nodeid == "" or nodeid == scope_nodeid or \
        nodeid.startswith((scope_nodeid.rstrip("/") + "/", scope_nodeid + "::"))


_watches = _Watches()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any):
    _watches.setting_up.append((fixturedef, request))
    try:
        yield
    finally:
        _watches.setting_up.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item):
    _watches.current_item = item
    try:
        yield
    finally:
        _watches.current_item = None


def watch(obj_or_id: Any, name: str | None = None) -> None:
    """Snapshot this container with the tests that use the calling fixture (or with the
    calling test): a Docker SDK container, a testcontainers container or compose
    environment, pytest-docker's docker_services, or a container id or name. Kept until
    that fixture is torn down (or the test ends); never stopped by the plugin."""
    from pytest_sideeye.services import references_in
    if not isinstance(obj_or_id, str) and not references_in(obj_or_id):
        raise SideeyeError(f"sideeye_watch: {type(obj_or_id).__name__} is not a container "
                           "(want a Docker SDK or testcontainers container, a compose "
                           "environment, docker_services, or a container id)")
    if _watches.setting_up:
        fixturedef, request = _watches.setting_up[-1]
        entry = _Watch(obj_or_id, name, _scope_nodeid(request), fixturedef.argname)
        fixturedef.addfinalizer(lambda: _watches.remove(entry))
    elif _watches.current_item is not None:
        item = _watches.current_item
        entry = _Watch(obj_or_id, name, item.nodeid, None)
        item.addfinalizer(lambda: _watches.remove(entry))
    else:
        raise SideeyeError("sideeye_watch: call it from a fixture or a test")
    _watches.add(entry)


def _scope_nodeid(request: Any) -> str:
    node = getattr(request, "node", None)
    return getattr(node, "nodeid", "") if node is not None else ""


@pytest.fixture(scope="session", name="sideeye_watch")
def sideeye_watch_fixture() -> Any:
    """sideeye_watch(obj_or_id, name=None): snapshot a container the plugin did not start
    with the tests that use the calling fixture (see pytest_sideeye.sideeye_watch)."""
    return watch


# --------------------------------------------------------------------------- a test's targets

def services_of(item: pytest.Item) -> list[Any]:
    """The test's go_service services, then the other containers it uses (each once, names
    unique). Never raises: a container that cannot be looked up is left out."""
    try:
        from pytest_sideeye.services import services_for
    except ImportError:
        return []
    own = list(services_for(item.nodeid))
    try:
        return own + watched_of(item, own)
    except Exception as e:   # Docker down...: the go_service ones still go, the report says why
        return own + [_Unresolved(e)]


class _Unresolved:
    """Stands for the containers that could not be looked up: the report lists it with
    the reason (build_targets turns its container_info() error into the process error)."""
    name = "containers"
    image = None
    notes: list[str] = []
    pids: list[int] = []

    def __init__(self, error: Exception) -> None:
        self.error = error

    def container_info(self) -> Any:
        raise SideeyeError(f"could not be looked up: {one_line(self.error)}")

    def logs(self) -> str:
        return ""

    def host_ports(self) -> set[int]:
        return set()


def watched_of(item: pytest.Item, own: list[Any]) -> list[Any]:
    from pytest_sideeye.services import select, unique_names, watched_containers
    selectors = item_selectors(item)
    kinds = {s.kind for s in selectors}
    found: list[tuple[Any, str | None, str | None]] = []   # (container, fixture, name)
    if "none" not in kinds:
        for fixture, value in list(getattr(item, "funcargs", {}).items()):
            found += _resolved(value, fixture, None)
    for w in _watches.for_item(item):
        found += _resolved(w.what, w.fixture, w.name, by_id=True)
    found += [(c, None, None) for c in select(selectors, item.stash.get(_SETUP_AT, None))
              if c is not None]
    watched = watched_containers([(c, f) for c, f, _ in found],
                                 taken=[s.container.id for s in own])
    names = {c.id: n for c, _, n in found if n}
    for w in watched:
        w.name = names.get(w.container.id, w.name)
    unique_names([s.name for s in own], watched)
    return watched


def _resolved(value: Any, fixture: str | None, name: str | None, *, by_id: bool = False
              ) -> list[tuple]:
    """(container, fixture, name) for what a value names; a string is a container id or
    name only when given to sideeye_watch (a fixture's string is just a string)."""
    from pytest_sideeye.services import Reference, containers_of, references_in
    refs = [Reference(container_id=value, fixture=fixture)] if isinstance(value, str) and by_id \
        else references_in(value, fixture)
    out = []
    for ref in refs:
        try:
            out += [(c, ref.fixture, name) for c in containers_of(ref)]
        except SideeyeError:
            continue   # gone since: nothing left to read
    return out


def _pids(service: Any) -> list[int]:
    pids = service.pids
    return list(pids() if callable(pids) else pids)


def build_targets(services: list[Any]) -> tuple[list[Any], list[Process]]:
    """Targets for the engine, and a Process for every service that has none: errored
    when its container is gone or never started (the report says so instead of omitting
    it), plain with a note for a container that runs no Go program."""
    from pytest_sideeye.engine import Target
    from pytest_sideeye.services import NO_GO, Watched
    targets: list[Any] = []
    gone: list[Process] = []
    for svc in services:
        try:
            container = svc.container_info()
            pids = _pids(svc)
            root = svc.root_pid if isinstance(svc, Watched) and not pids else 0
        except Exception as e:
            gone.append(Process(pid=0, service=svc.name,
                                error=f"service {svc.name}: {one_line(e)}"))
            continue
        if not pids and root:
            gone.append(Process(pid=root, container=container, service=svc.name,
                                notes=[*svc.notes, NO_GO]))
            continue
        if not pids:
            from pytest_sideeye.agent import container_target  # the agent sees what we cannot
            found = container_target(container.id, svc.name) if container else None
            if found is not None:
                targets.append(found)
                continue
            gone.append(Process(pid=0, container=container, service=svc.name,
                                error=f"service {svc.name}: no running process"))
        targets.extend(Target(pid=p, container=container, service=svc.name) for p in pids)
    return targets, gone


def add_notes(processes: Iterable[Process], services: list[Any]) -> None:
    """A watched container's remarks (pid: host...) on each of its processes."""
    notes = {s.name: s.notes for s in services if getattr(s, "notes", None)}
    for p in processes:
        p.notes += [n for n in notes.get(p.service or "", ()) if n not in p.notes]
