"""Containers the plugin did not start, against the real daemon: a container in the host's
PID namespace is limited to its own cgroup, a container without Go has no Go pids, fixture
values resolve to their containers (one level deep), names come from compose labels."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import GOAPPS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
from containers_support import sleeper_image  # noqa: E402

from pytest_sideeye.services import Watched, images, references_in  # noqa: E402
from pytest_sideeye.services.watched import HOST_PID_NOTE, Reference, display_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("needs_root", "needs_docker")


@pytest.fixture(scope="module")
def client():
    return images.docker_client()


def running(client, image, **kw):
    return client.containers.run(image, detach=True, **kw)


def test_host_pid_namespace_is_limited_to_the_cgroup(client):
    tag = images.go_image("ledger", GOAPPS / "ledger")
    c = running(client, tag, pid_mode="host")
    try:
        w = Watched(c, "ledger")
        pids = w.processes()
        assert pids == [w.root_pid], pids   # not the host's other processes
        assert w.pids == pids and w.notes == [HOST_PID_NOTE]
    finally:
        c.remove(force=True)


def test_a_container_without_go_has_no_go_pids(client, tmp_path):
    c = running(client, sleeper_image(tmp_path))
    try:
        w = Watched(c, "cache")
        assert w.processes() == [w.root_pid] and w.pids == []
    finally:
        c.remove(force=True)


def test_fixture_values_resolve_one_level_deep(client, tmp_path):
    c = running(client, sleeper_image(tmp_path))
    try:
        assert references_in(c, "db") == [Reference(container_id=c.id, fixture="db")]
        assert references_in([c], "dbs") == [Reference(container_id=c.id, fixture="dbs[0]")]
        assert references_in({"a": c}, "dbs") == [Reference(container_id=c.id,
                                                            fixture="dbs[a]")]
        assert references_in([[c]], "deep") == []    # one level only
        assert references_in(c.id, "an id") == []    # a fixture's string is a string
        assert display_name(c, "db") == "db" and display_name(c) == c.name
    finally:
        c.remove(force=True)


def test_compose_labels_name_a_container(client, tmp_path):
    c = running(client, sleeper_image(tmp_path), labels={
        "com.docker.compose.project": "shop", "com.docker.compose.service": "cache"})
    try:
        assert display_name(c, "fixture") == "shop/cache"
    finally:
        c.remove(force=True)


def test_testcontainers_compose_objects_resolve(client, tmp_path):
    """A ComposeContainer by its ID (its get_wrapped_container() returns itself); a
    DockerCompose by the containers it lists, or (its listing needs compose v2) by the
    project compose names after its folder."""
    from testcontainers.compose import ComposeContainer, DockerCompose
    c = running(client, sleeper_image(tmp_path))
    try:
        assert references_in(ComposeContainer(ID=c.id), "svc") == [
            Reference(container_id=c.id, fixture="svc")]
    finally:
        c.remove(force=True)
    folder = tmp_path / "My_Shop"
    folder.mkdir()
    (folder / "docker-compose.yml").write_text("services: {}\n")
    found = references_in(DockerCompose(context=str(folder)), "env")
    assert found in ([Reference(project="my_shop", fixture="env")], []), found


def test_names_are_made_unique(client, tmp_path):
    from pytest_sideeye.services import unique_names
    c = running(client, sleeper_image(tmp_path))
    try:
        watched = [Watched(c, "db"), Watched(c, "db"), Watched(c, "cache")]
        unique_names(["db"], watched)   # "db" is a go_service's already
        assert [w.name for w in watched] == ["db-2", "db-3", "cache"]
    finally:
        c.remove(force=True)
