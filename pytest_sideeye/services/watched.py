"""Containers the plugin did not start: what testcontainers, pytest-docker, compose or the
user's own Docker SDK calls started. `Watched` is their handle, shaped like a go_service
`Service` where the plugin reads one (name, pids, logs, container_info, host_ports);
`references_in` finds the containers behind a fixture's value; `watched_containers`
turns references into handles.

Hands off: nothing here stops, removes or relabels a container. The plugin only reads
them (their processes, logs and published ports).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import images
from pytest_sideeye.services.containers import (
    L_SESSION,
    SESSION_ID,
    Service,
    _container_logs,
    _is_go_executable,
    _pids_in_namespace_of,
)
from pytest_sideeye.snapshot import Container

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
TESTCONTAINERS_SESSION = "org.testcontainers.session-id"
NO_GO = "runs no Go program"
HOST_PID_NOTE = ("the container shares the host's PID namespace (pid: host): only the "
                 "processes of its own cgroup are snapshotted")


class Watched:
    """A running container someone else started: its Go processes, logs and ports."""

    def __init__(self, container: Any, name: str) -> None:
        self.container = container
        self.name = name
        self.image = (container.attrs.get("Config") or {}).get("Image") or container.image.id
        self.notes: list[str] = []
        self._host_pid = (container.attrs.get("HostConfig") or {}).get("PidMode") == "host"
        if self._host_pid:
            self.notes.append(HOST_PID_NOTE)

    def __repr__(self) -> str:
        return f"<Watched {self.name} {self.container.short_id}>"

    @property
    def root_pid(self) -> int:
        self.container.reload()
        state = self.container.attrs.get("State") or {}
        return int(state.get("Pid") or 0) if state.get("Running") else 0

    def processes(self) -> list[int]:
        """Host PIDs of every process of the container, its init first."""
        root = self.root_pid
        if not root:
            return []
        pids = _pids_in_namespace_of(root)
        if self._host_pid:  # the namespace is the host's: keep the container's cgroup
            own = _cgroup(root)
            pids = [p for p in pids if p == root or (own and _cgroup(p) == own)]
        return pids

    @property
    def pids(self) -> list[int]:
        """Host PIDs of the Go processes in the container."""
        return [p for p in self.processes() if _is_go_executable(p)]

    def logs(self) -> str:
        return _container_logs(self.container)

    def container_info(self) -> Container:
        return Container(id=self.container.id, name=self.container.name, image=self.image)

    def host_ports(self) -> set[int]:
        """The host ports the container publishes (read from the container)."""
        self.container.reload()
        ports = (self.container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        return {int(b["HostPort"]) for key, binds in ports.items() if key.endswith("/tcp")
                for b in (binds or ()) if b.get("HostPort")}


def _cgroup(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


# --- fixture values -> references ---

@dataclass(frozen=True)
class Reference:
    """A container by id, or the running containers of a compose project (or one of its
    services); `fixture` is the fixture whose value named it."""
    container_id: str | None = None
    project: str | None = None
    service: str | None = None
    fixture: str | None = None


def references_in(value: Any, fixture: str | None = None) -> list[Reference]:
    """The containers behind a fixture's value: a Docker SDK container, a testcontainers
    container or compose environment, pytest-docker's docker_services; lists, tuples and
    dicts of these one level deep. Anything else gives nothing."""
    found = _references_of(value, fixture)
    if found or isinstance(value, (str, bytes)):
        return found
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return []
    # Each member named after its key or index: fixture[key], fixture[0]...
    return [r for k, v in items
            for r in _references_of(v, f"{fixture}[{k}]" if fixture else None)]


def _references_of(value: Any, fixture: str | None) -> list[Reference]:
    if isinstance(value, Service):
        return []   # the plugin's own: already a target
    if _is_sdk_container(value):
        return [Reference(container_id=value.id, fixture=fixture)]
    cid = getattr(value, "ID", None)   # testcontainers' ComposeContainer
    if isinstance(cid, str) and cid:
        return [Reference(container_id=cid, fixture=fixture)]
    wrapped = getattr(value, "get_wrapped_container", None)
    if callable(wrapped):   # testcontainers' DockerContainer
        try:
            inner = wrapped()
        except Exception:   # noqa: BLE001 - not started: nothing to snapshot
            return []
        return [Reference(container_id=inner.id, fixture=fixture)] \
            if _is_sdk_container(inner) else []
    executor = getattr(value, "_docker_compose", None)   # pytest-docker's Services
    project = getattr(executor, "_compose_project_name", None)
    if isinstance(project, str) and project:
        return [Reference(project=project, fixture=fixture)]
    if callable(getattr(value, "get_containers", None)) and hasattr(value, "context"):
        return _testcontainers_compose(value, fixture)
    return []


def _is_sdk_container(value: Any) -> bool:
    if not type(value).__module__.startswith("docker."):
        return False   # (and a test that uses no Docker does not import it)
    from docker.models.containers import Container as SdkContainer
    return isinstance(value, SdkContainer)


def _testcontainers_compose(compose: Any, fixture: str | None) -> list[Reference]:
    """A testcontainers DockerCompose: its containers as compose lists them, else (its
    `ps --format json` needs compose v2) the project compose names after the folder."""
    try:
        return [Reference(container_id=c.ID, fixture=fixture) for c in compose.get_containers()
                if c.ID]
    except Exception:   # noqa: BLE001 - the project label still finds them
        return [Reference(project=compose_project_name(Path(compose.context).name),
                          fixture=fixture)]


def compose_project_name(text: str) -> str:
    """What compose makes of a project name (lower case, [-_a-z0-9] kept)."""
    return re.sub(r"[^-_a-z0-9]", "", text.lower())


# --- references -> running containers ---

def containers_of(ref: Reference) -> list[Any]:
    """The running SDK containers a reference names; SideeyeError when an id is unknown."""
    from docker.errors import NotFound

    client = images.docker_client()
    if ref.container_id is not None:
        try:
            return [client.containers.get(ref.container_id)]
        except NotFound:
            raise SideeyeError(f"container {ref.container_id[:12]} is gone") from None
    labels = [f"{COMPOSE_PROJECT}={ref.project}"]
    if ref.service:
        labels.append(f"{COMPOSE_SERVICE}={ref.service}")
    return client.containers.list(filters={"label": labels}, ignore_removed=True)


def display_name(container: Any, fixture: str | None = None) -> str:
    """compose's project/service, else the fixture's name, else the container's name."""
    labels = container.labels or {}
    if labels.get(COMPOSE_PROJECT) and labels.get(COMPOSE_SERVICE):
        return f"{labels[COMPOSE_PROJECT]}/{labels[COMPOSE_SERVICE]}"
    return fixture or container.name


def belongs_to_another_run(container: Any) -> bool:
    """True for a container another pytest process (an xdist worker, another job on the
    daemon) started: a go_service of another session, a testcontainers container of
    another session, a pytest-docker project of another process (`pytest<pid>`)."""
    labels = container.labels or {}
    if labels.get(L_SESSION, SESSION_ID) != SESSION_ID:
        return True
    if labels.get(TESTCONTAINERS_SESSION, _testcontainers_session()) != \
            _testcontainers_session():
        return True
    project = labels.get(COMPOSE_PROJECT, "")
    m = re.fullmatch(r"pytest(\d+)", project)
    return bool(m) and int(m.group(1)) != os.getpid()


def _testcontainers_session() -> str | None:
    try:
        from testcontainers.core.labels import SESSION_ID as TC_SESSION
    except ImportError:
        return None
    return TC_SESSION


def watched_containers(refs: Iterable[tuple[Any, str | None]], taken: Iterable[str] = ()
                       ) -> list[Watched]:
    """Handles for (container, fixture) pairs: each container once, none of `taken` (the
    ids already covered)."""
    seen = set(taken)
    out: list[Watched] = []
    for container, fixture in refs:
        if container.id in seen:
            continue
        seen.add(container.id)
        out.append(Watched(container, display_name(container, fixture)))
    return out


def unique_names(names: Iterable[str], watched: list[Watched]) -> None:
    """Rename watched containers whose name is already used (by a go_service or an
    earlier one): name, name-2, name-3..."""
    used = set(names)
    for w in watched:
        base, n = w.name, 1
        while w.name in used:
            n += 1
            w.name = f"{base}-{n}"
        used.add(w.name)
