"""`sideeye prune-images`: old go_service images go, the newest and those in use stay.
Real dockerd; the images are tiny FROM scratch ones in a repository of this test's own."""
from __future__ import annotations

import io
import tarfile
import time
import uuid

import pytest

from pytest_sideeye.cli import main as cli
from pytest_sideeye.services import images

pytestmark = pytest.mark.usefixtures("needs_docker")


def _build(tag: str, content: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY f /f\n"), ("f", content)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    images.docker_client().images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)


def test_prune_keeps_the_newest_and_what_containers_use(capsys):
    client = images.docker_client()
    repo = f"sideeye/prune-test-{uuid.uuid4().hex[:8]}"
    tags = [f"{repo}:{i}" for i in range(4)]
    container = None
    try:
        for i, tag in enumerate(tags):      # oldest first
            _build(tag, f"version {i}".encode())
            time.sleep(1.1)                 # Created has a resolution of one second here
        container = client.containers.create(tags[1], command=["/f"])

        assert cli.main(["prune-images", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"would remove                 {tags[0]}" in out
        assert all(images.image_exists(t) for t in tags)

        done = {t: what for t, what, _s in images.prune(keep=1, repository=repo + ":")}
        assert done == {tags[3]: "kept: newest", tags[2]: "removed",
                        tags[1]: "kept: a container uses it", tags[0]: "removed"}
        assert [images.image_exists(t) for t in tags] == [False, True, False, True]
    finally:
        if container is not None:
            container.remove(force=True)
        for tag in tags:
            if images.image_exists(tag):
                client.images.remove(tag, force=True)
