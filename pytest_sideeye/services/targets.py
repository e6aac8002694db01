"""Resolving a Docker container to the host PIDs of the Go processes inside it (for
`sideeye snapshot --container`; the pytest plugin gets the same from its services)."""
from __future__ import annotations

from pytest_sideeye.errors import DockerUnavailable, SideeyeError
from pytest_sideeye.snapshot.model import Container


def container_targets(name_or_id: str):
    from pytest_sideeye.engine import take as engine
    from pytest_sideeye.services.fixture import _is_go_executable, _pids_in_namespace_of

    container = _docker_container(name_or_id)
    root = container.attrs.get("State", {}).get("Pid") or 0
    if not container.attrs.get("State", {}).get("Running") or not root:
        raise SideeyeError(f"container {name_or_id} is not running")
    info = Container(id=container.id, name=container.name,
                     image=(container.image.tags or [container.image.id])[0])
    pids = [p for p in _pids_in_namespace_of(root) if _is_go_executable(p)]
    if not pids:
        raise SideeyeError(f"container {name_or_id} runs no Go program")
    return [engine.Target(pid, container=info) for pid in pids]


def _docker_container(name_or_id: str):
    from docker.errors import DockerException, NotFound

    from pytest_sideeye.services.images import docker_client
    try:
        return docker_client().containers.get(name_or_id)
    except NotFound:
        raise SideeyeError(f"no container named or with id {name_or_id!r}") from None
    except DockerException as e:
        raise DockerUnavailable(f"Docker failed to look up {name_or_id!r}: "
                                f"{str(e).splitlines()[0][:160]}") from None
