"""Loaded programs pinned in bpffs, so that without an agent no process pays the kernel
verifier twice for the same layout: the first process to load a layout's programs pins
them (and their maps) under SIDEEYE_BPF_PINS/v<package version>-<program key>/, the next
ones open the pins instead of loading (BPF_OBJ_GET, microseconds instead of seconds).

Pins of another package version or program key are stale (the C, the layout or the kernel
changed) and are replaced: each pinning removes the folders of other versions. The pinned
maps are shared by every process using them, so a snapshot holds `lock(key)` (an flock
beside the pins' folder) while it uses them. Like the disk caches, pins are only a
shortcut: anything failing here means loading as before, never an error.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

from pytest_sideeye import settings

# bpf.py's bpf_syscall, passed in by it (bpf.py imports this module, not the reverse).
Syscall = Callable[[int, bytearray], int]

BPF_OBJ_PIN, BPF_OBJ_GET = 6, 7
BPF_FS_MAGIC = 0xCAFE4A11


def package_version() -> str:
    try:
        return metadata.version("pytest-sideeye")
    except metadata.PackageNotFoundError:
        return "0"


def _folder(key: str) -> Path | None:
    """The pins' folder. bpffs refuses names with a dot: the version's become _."""
    root = settings.bpf_pins()
    return None if root is None else root / f"v{package_version().replace('.', '_')}-{key}"


def _is_bpffs(path: Path) -> bool:
    """Pins only work on a mounted bpffs (statfs f_type BPF_FS_MAGIC)."""
    buf = ctypes.create_string_buffer(120)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), buf) != 0:
        return False
    return struct.unpack_from("<q", buf, 0)[0] == BPF_FS_MAGIC


def _obj(syscall: Syscall, cmd: int, path: Path, fd: int = 0) -> int:
    name = ctypes.create_string_buffer(str(path).encode())
    attr = bytearray(16)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name), fd)
    return syscall(cmd, attr)


def open_pinned(syscall: Syscall, key: str, names: list[str]) -> dict[str, int] | None:
    """fds of every pinned object named (all or None); "hook" may be absent."""
    folder = _folder(key)
    try:
        if folder is None or not (folder / "iter").exists():
            return None
    except OSError:
        return None
    fds: dict[str, int] = {}
    try:
        for name in names:
            if name == "hook" and not (folder / name).exists():
                continue
            fds[name] = _obj(syscall, BPF_OBJ_GET, folder / name)
    except OSError:
        for fd in fds.values():
            os.close(fd)
        return None
    return fds


def pin(syscall: Syscall, key: str, fds: dict[str, int]) -> None:
    """Pin every fd under the key's folder: into a private folder first, renamed into
    place, so another process sees all of them or none. Stale folders go."""
    folder = _folder(key)
    if folder is None:
        return
    try:
        folder.parent.mkdir(exist_ok=True)
        if not _is_bpffs(folder.parent):
            return
        _remove_stale(folder)
        tmp = folder.with_name(f"tmp_{os.getpid()}_{folder.name}")
        tmp.mkdir()
        for name, fd in fds.items():
            _obj(syscall, BPF_OBJ_PIN, tmp / name, fd)
        try:
            os.rename(tmp, folder)
        except OSError:
            _remove(tmp)   # another process pinned first: its pins serve
    except OSError:
        pass


def _remove_stale(keep: Path) -> None:
    for other in keep.parent.iterdir():
        if other.name != keep.name and not other.name.startswith("tmp_"):
            _remove(other)


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


@contextlib.contextmanager
def lock(key: str | None) -> Iterator[None]:
    """Hold the pinned maps of `key` for one snapshot: an flock on the pins' own folder,
    which every process using them opens (other processes wait)."""
    folder = _folder(key) if key is not None else None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if folder is not None else None
    except OSError:
        fd = None   # the pins were removed meanwhile: this process's fds still work
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
