"""What the engine needs to know about a target process before pausing it: which
executable it runs (readable from the host, also inside a container) and where that
executable is loaded (the PIE load bias)."""
from __future__ import annotations

import os
from pathlib import Path

from pytest_sideeye.binary import BinaryInfo
from pytest_sideeye.errors import NoPermission, SideeyeError, TargetGone


def exe_for_pid(pid: int) -> str:
    """The executable of a running process, as a path readable from the host (also for a
    process inside a container: /proc/PID/exe resolves through its mount namespace)."""
    exe = f"/proc/{pid}/exe"
    try:
        os.stat(exe)
    except FileNotFoundError:
        raise TargetGone(f"process {pid} is gone") from None
    except PermissionError:
        raise NoPermission(f"cannot read the executable of process {pid}: run as root") \
            from None
    return exe


def load_bias(pid: int, info: BinaryInfo) -> int:
    """What to add to link-time addresses to get addresses in process pid: 0 for a
    non-PIE executable; for PIE the start of the executable's first mapping minus its
    link-time address (from /proc/PID/maps)."""
    if not info.pie:
        return 0
    try:
        target = os.readlink(f"/proc/{pid}/exe")
        st = os.stat(f"/proc/{pid}/exe")
        maps = Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:
        raise TargetGone(f"process {pid} is gone") from None
    except PermissionError:
        raise NoPermission(f"cannot read /proc/{pid}/maps: run as root") from None
    target = target.removesuffix(" (deleted)")
    starts = []
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        addr, _perm, offset, _dev, inode, name = parts
        name = name.removesuffix(" (deleted)")
        if name == target or int(inode) == st.st_ino:
            starts.append(int(addr.split("-")[0], 16) - int(offset, 16))
    if not starts:
        raise SideeyeError(f"process {pid}: its executable is not in /proc/{pid}/maps")
    return min(starts) - info.first_load_vaddr
