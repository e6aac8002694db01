"""Images for go_service: the Docker client, and Go sources built into `FROM scratch`
images without any registry, cached by content.

No registry is reachable on the machines this runs on, so an image holds only a static Go
binary; the tag is `sideeye/<name>:<content hash>` and an existing tag is never rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from pathlib import Path

from pytest_sideeye import install
from pytest_sideeye.errors import DockerUnavailable, SideeyeError, one_line
from pytest_sideeye.services import toolchains

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
IMAGE_LABEL = "pytest-sideeye"
# Sources and binaries never change during a run: hash them once per process.
_tags: dict[tuple, str] = {}
_client = None
_client_lock = threading.Lock()


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def docker_client(timeout: int = 60):
    """The process-wide Docker SDK client; DockerUnavailable (one line) when the daemon
    does not answer."""
    global _client
    with _client_lock:
        if _client is None:
            _client = connect(timeout)
        return _client


def connect(timeout: int = 60):
    """A new client, checked with a ping (used on its own by cleanup paths and doctor)."""
    import docker
    import requests

    try:
        # "auto" matters: the SDK's default API version is newer than Debian's dockerd.
        client = docker.from_env(version="auto", timeout=timeout)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        raise DockerUnavailable(f"Docker is not answering at {docker_host()}: "
                                f"{install.start_docker()}") from None


def exe_name(name: str) -> str:
    """The service name as a file/repository name: it becomes the process's comm."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._")
    return slug or "service"


def go_image(name: str, source: Path, go_version: str | None = None,
             gopath: str | None = None) -> str:
    """Build the Go main package in `source` statically and wrap it in a scratch image
    (`gopath`: libraries for a source without go.mod, toolchains.build)."""
    version = go_version or toolchains.default_version()
    binary = toolchains.build(source, version, static=True, gopath=gopath)
    key = ("go", name, str(binary))
    if key in _tags:
        return _tags[key]
    exe = exe_name(name)
    dockerfile = (f"FROM scratch\nCOPY {exe} /{exe}\n"
                  f"LABEL {IMAGE_LABEL}=1\nENTRYPOINT [\"/{exe}\"]\n")
    digest = hashlib.sha256(dockerfile.encode())
    digest.update(binary.read_bytes())
    tag = f"sideeye/{exe}:{digest.hexdigest()[:16]}"
    if not image_exists(tag):
        context = _tar_context({"Dockerfile": (dockerfile.encode(), 0o644),
                                exe: (binary.read_bytes(), 0o755)})
        _build(tag, fileobj=context, custom_context=True)
    _tags[key] = tag
    return tag


def dockerfile_image(name: str, dockerfile: Path) -> str:
    """Build a user's Dockerfile; its folder is the context and the tag hashes that folder."""
    dockerfile = Path(dockerfile)
    if not dockerfile.is_file():
        raise SideeyeError(f"go_service {name!r}: dockerfile {dockerfile} does not exist")
    context_dir = dockerfile.parent
    key = ("dockerfile", name, str(dockerfile))
    if key in _tags:
        return _tags[key]
    tag = f"sideeye/{exe_name(name)}:{_dir_digest(context_dir)}"
    if not image_exists(tag):
        _build(tag, path=str(context_dir), dockerfile=dockerfile.name)
    _tags[key] = tag
    return tag


def prebuilt_image(name: str, image: str) -> str:
    """A prebuilt image must be present locally (no registry is assumed); try a pull once."""
    import docker

    if image_exists(image):
        return image
    try:
        docker_client().images.pull(image)
        return image
    except docker.errors.APIError as e:
        raise SideeyeError(f"go_service {name!r}: image {image!r} is not present locally and "
                           f"could not be pulled ({one_line(e)})") from None


def forget(tag: str) -> None:
    """Drop a tag from this process's cache, so the next request checks Docker again."""
    for key in [k for k, v in _tags.items() if v == tag]:
        del _tags[key]


def prune(keep: int = 1, dry_run: bool = False,
          repository: str = "sideeye/") -> list[tuple[str, str, int]]:
    """Remove the old images built for go_service: in each sideeye/<name> repository all
    but the `keep` newest tags (every change of a service's source makes a new one). An
    image a container still uses, running or not, is kept. Only repositories starting
    with `repository` are looked at. Returns (tag, what was done, image size in bytes),
    repositories in order, newest tag first."""
    import docker

    client = docker_client()
    used = {c.attrs.get("Image") for c in client.containers.list(all=True)}
    repos: dict[str, list] = {}
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith("sideeye/") and tag.startswith(repository):
                repos.setdefault(tag.rsplit(":", 1)[0], []).append(image)
    done = []
    for repo in sorted(repos):
        images = sorted(repos[repo], key=lambda im: im.attrs.get("Created", ""), reverse=True)
        for rank, image in enumerate(images):
            tag = next(t for t in image.tags if t.rsplit(":", 1)[0] == repo)
            size = int(image.attrs.get("Size") or 0)
            if rank < max(keep, 0):
                done.append((tag, "kept: newest", size))
            elif image.id in used:
                done.append((tag, "kept: a container uses it", size))
            elif dry_run:
                done.append((tag, "would remove", size))
            else:
                try:
                    client.images.remove(tag)
                    forget(tag)
                    done.append((tag, "removed", size))
                except docker.errors.APIError as e:
                    done.append((tag, f"kept: {one_line(e)}", size))
    return done


def image_exists(tag: str) -> bool:
    import docker

    try:
        docker_client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _build(tag: str, **kw) -> None:
    import docker

    try:
        docker_client().images.build(tag=tag, rm=True, forcerm=True, **kw)
    except docker.errors.BuildError as e:
        lines = [c.get("stream", "") or c.get("error", "") for c in e.build_log]
        last = [l.strip() for l in lines if l.strip()][-1:] or [str(e)]
        raise SideeyeError(f"docker build of {tag} failed: {last[0]}") from None
    except docker.errors.APIError as e:
        raise SideeyeError(f"docker build of {tag} failed: {one_line(e)}") from None


def _tar_context(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _dir_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and ".git" not in q.parts):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]
