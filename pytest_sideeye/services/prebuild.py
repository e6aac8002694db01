"""Building every image a session's tests will need before the first test starts, so that
a cold `go build` is never counted in a test's timeout (the demo's first run used to fail
its 10 s timeout inside a build).

The plugin calls `build_images` once collection is done, with the specs of the go_service
fixtures the collected tests use. Builds of one machine take turns through a file lock
beside the build cache: with pytest-xdist the first worker builds, the others find the
image built. A failed build is remembered: each test needing that service errors with the
build's own message, without building again.
"""
from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from pytest_sideeye import settings
from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import toolchains
from pytest_sideeye.services.containers import ServiceSpec

_failed: dict[ServiceSpec, str] = {}      # spec -> the build's one-line error
_ready: set[ServiceSpec] = set()


def build_error(spec: ServiceSpec) -> str | None:
    return _failed.get(spec)


@contextmanager
def machine_lock() -> Iterator[None]:
    """One builder at a time on this machine (all pytest-xdist workers included)."""
    folder = settings.build_cache()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".images.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def describe(spec: ServiceSpec) -> str:
    if spec.source is not None:
        version = spec.go_version or toolchains.default_version()
        return f"{spec.name} from {spec.source} with Go {version}"
    if spec.dockerfile is not None:
        return f"{spec.name} from {spec.dockerfile}"
    return f"{spec.name}: image {spec.image}"


def build_images(specs: Iterable[ServiceSpec], say: Callable[[str], None]) -> None:
    """Build (or find) each spec's image, one line each: what, and how long it took."""
    todo = [s for s in dict.fromkeys(specs) if s not in _ready and s not in _failed]
    if not todo:
        return
    with machine_lock():
        for spec in todo:
            start = time.monotonic()
            try:
                tag = spec.image_tag()
            except SideeyeError as e:
                _failed[spec] = str(e)
                say(f"sideeye: building {describe(spec)} ... FAILED: {e}")
                continue
            _ready.add(spec)
            say(f"sideeye: building {describe(spec)} ... done in "
                f"{time.monotonic() - start:.1f} s ({tag})")
