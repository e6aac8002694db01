"""Loaded programs pinned in bpffs, so that without an agent no process pays the kernel
verifier twice for the same layout: the first process to load a layout's programs pins
them (and their maps) under SIDEEYE_BPF_PINS/v<package version>-<program key>/, the next
ones open the pins instead of loading (BPF_OBJ_GET, microseconds instead of seconds).

Pins of another package version or program key are stale (the C, the layout or the kernel
changed) and are replaced: each pinning removes the folders of other versions. The pinned
maps are shared by every process using them, so a snapshot holds `lock(folder)` while it
uses them: an flock on the very folder its maps came from, kept open by the process from
the moment it got them. Not the folder's path: a pinning of another key removes the folder
while processes still hold its maps, and a lock taken by path then locked nothing (or
another set of maps' folder), so two of them overwrote each other's records in the shared
maps and a snapshot silently showed a third of the goroutines. Like the disk caches, pins
are only a shortcut: anything failing here means loading as before, never an error.
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


def open_pinned(syscall: Syscall, key: str,
                names: list[str]) -> tuple[dict[str, int], int] | None:
    """fds of every pinned object named (all or None; "hook" may be absent), and an fd of
    the folder they came from (what `lock` locks): the folder is opened first and must
    still be the one at its path once every object is open, else another process replaced
    it meanwhile and the objects may come from two folders (None: load instead)."""
    folder = _folder(key)
    try:
        if folder is None or not (folder / "iter").exists():
            return None
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    fds: dict[str, int] = {}
    try:
        for name in names:
            if name == "hook" and not (folder / name).exists():
                continue
            fds[name] = _obj(syscall, BPF_OBJ_GET, folder / name)
        if not _same_file(folder, folder_fd):
            raise OSError("the pins' folder was replaced while opened")
    except OSError:
        for fd in [*fds.values(), folder_fd]:
            os.close(fd)
        return None
    return fds, folder_fd


def _same_file(path: Path, fd: int) -> bool:
    st, held = os.stat(path), os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def pin(syscall: Syscall, key: str, fds: dict[str, int]) -> int | None:
    """Pin every fd under the key's folder: into a private folder first, renamed into
    place, so another process sees all of them or none. Stale folders go. Returns an fd of
    the folder (what `lock` locks; a rename keeps the folder), or None when the maps stay
    this process's own (not pinned: nobody shares them, no lock is needed)."""
    folder = _folder(key)
    if folder is None:
        return None
    try:
        folder.parent.mkdir(exist_ok=True)
        if not _is_bpffs(folder.parent):
            return None
        _remove_stale(folder)
        tmp = folder.with_name(f"tmp_{os.getpid()}_{folder.name}")
        tmp.mkdir()
        for name, fd in fds.items():
            _obj(syscall, BPF_OBJ_PIN, tmp / name, fd)
        folder_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rename(tmp, folder)
        except OSError:
            os.close(folder_fd)
            _remove(tmp)   # another process pinned first: its pins serve
            return None
        return folder_fd
    except OSError:
        return None


def _remove_stale(keep: Path) -> None:
    for other in keep.parent.iterdir():
        if other.name != keep.name and not other.name.startswith("tmp_"):
            _remove(other)


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def folder_id(folder_fd: int) -> tuple[int, int]:
    """Which folder an fd holds: processes and programs holding the same one share maps."""
    st = os.fstat(folder_fd)
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def lock(folder_fd: int | None) -> Iterator[None]:
    """Hold the pinned maps of the folder `folder_fd` (from open_pinned or pin) for one
    snapshot: an flock on that folder, which every process holding its maps has open
    (other processes wait), even once another pinning removed it. None: maps of this
    process only."""
    if folder_fd is None:
        yield
        return
    # A fresh open of the folder each time, as before: an flock belongs to an open file,
    # which a forked child shares with its parent (they would not exclude each other).
    fd = os.open(f"/proc/self/fd/{folder_fd}", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
