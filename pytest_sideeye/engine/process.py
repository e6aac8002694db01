"""What the engine needs to know about a target process before pausing it: which
executable it runs (readable from the host, also inside a container) and where that
executable is loaded (the PIE load bias)."""
from __future__ import annotations

import os
from pathlib import Path

from pytest_sideeye.binary import BinaryInfo
from pytest_sideeye.errors import NoPermission, NotGoBinary, SideeyeError, TargetGone

# task_struct flags of a kernel thread (include/linux/sched.h), field 9 of /proc/PID/stat.
PF_KTHREAD = 0x00200000


def exe_for_pid(pid: int) -> str:
    """The executable of a running process, as a path readable from the host (also for a
    process inside a container: /proc/PID/exe resolves through its mount namespace)."""
    exe = f"/proc/{pid}/exe"
    try:
        os.stat(exe)
    except OSError as e:
        raise unreadable_exe(pid, e) from None
    return exe


def unreadable_exe(pid: int, e: OSError) -> SideeyeError:
    """The one line for a /proc/PID/exe that cannot be read: a kernel thread has none, a
    process that exited has none; "run as root" only to who is not root (root is refused
    for another reason: a security module, or missing capabilities, so say what the kernel
    said)."""
    kthread = kernel_thread_name(pid)
    if kthread is not None:
        return NotGoBinary(f"process {pid} is a kernel thread ({kthread}), not a Go program")
    if isinstance(e, FileNotFoundError):
        return TargetGone(f"process {pid} is gone")
    if isinstance(e, PermissionError) and os.geteuid() != 0:
        return NoPermission(f"cannot read the executable of process {pid}: run as root")
    return SideeyeError(f"cannot read /proc/{pid}/exe: {e.strerror or e}")


def kernel_thread_name(pid: int) -> str | None:
    """The name of process pid when it is a kernel thread (PF_KTHREAD in its flags), else
    None (also when it is gone). Not an empty cmdline: a zombie has one too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    close = data.rindex(b")")
    fields = data[close + 2:].split()   # from field 3 (state) on: flags is field 9
    try:
        flags = int(fields[6])
    except (IndexError, ValueError):
        return None
    if not flags & PF_KTHREAD:
        return None
    return data[data.index(b"(") + 1:close].decode(errors="replace")


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
