"""What the engine needs to know about a target process before pausing it: which
executable it runs (readable from the host, also inside a container) and where that
executable is loaded (the PIE load bias)."""
from __future__ import annotations

import os
from dataclasses import replace
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


# --- runtime globals found from code (binary/codescan.py): checked before any pause -----------

MAX_GOROUTINES = 50_000_000


def read_memory(pid: int, addr: int, n: int) -> bytes:
    """n bytes of pid's memory at addr (the process runs: a snapshot-free read)."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
            data = os.pread(f.fileno(), n, addr)
    except FileNotFoundError:
        raise TargetGone(f"process {pid} is gone") from None
    except OSError as e:
        raise SideeyeError(f"cannot read process {pid}'s memory at {addr:#x}: "
                           f"{e.strerror or e}") from None
    if len(data) != n:
        raise SideeyeError(f"cannot read process {pid}'s memory at {addr:#x}")
    return data


def check_runtime_globals(pid: int, addrs: dict[str, int], layout, origin: str) -> None:
    """Addresses guessed from a stripped binary's code, and layouts taken from the table
    rather than the binary's DWARF, must hold in the live process, or nothing is paused:
    allglen is len(allgs), the gs it points at are goroutines (the first is the main
    one, id 1; distinct ids, known statuses), and allm's list is the runtime's list of
    threads (see _check_ms). SideeyeError names what did not hold and where the guess
    came from (`origin`)."""
    why = layout_verdict(pid, addrs, layout)
    if why:
        raise SideeyeError(f"process {pid}: the runtime's structures do not check out "
                           f"({why}; layouts: {origin}); nothing was paused")


def pick_layout(pid: int, addrs: dict[str, int], candidates: list, go_version: str):
    """The one layout of `candidates` (the table's layouts of a Go minor version, for a
    patch release it was not made from) that checks out in the live process; SideeyeError
    (nothing paused) when none does or more than one does: a guess between layouts the
    checks cannot tell apart could read every goroutine wrong."""
    verdicts = [(c, layout_verdict(pid, addrs, c)) for c in candidates]
    good = [c for c, why in verdicts if not why]
    if len(good) == 1:
        return replace(good[0], source=f"{good[0].source}, picked by the live process of "
                                       f"{len(candidates)}")
    version = go_version.removeprefix("go")
    if not good:
        whys = "; ".join(f"{c.source}: {why}" for c, why in verdicts)
        raise SideeyeError(f"process {pid}: none of the runtime layouts the table has for "
                           f"Go {version} checks out ({whys}); nothing was paused")
    raise SideeyeError(f"process {pid}: {len(good)} of the runtime layouts the table has for "
                       f"Go {version} check out ({', '.join(c.source for c in good)}) and "
                       "nothing tells them apart: rebuild without -ldflags=-w; nothing was "
                       "paused")


def layout_verdict(pid: int, addrs: dict[str, int], layout) -> str | None:
    """What of the live checks does not hold for these addresses and layout, or None."""
    try:
        return _globals_verdict(pid, addrs, layout)
    except TargetGone:
        raise
    except SideeyeError as e:      # a wrong guess points anywhere: unreadable is wrong
        return str(e)


def _u64(b: bytes, i: int = 0) -> int:
    return int.from_bytes(b[i:i + 8], "little")


def _globals_verdict(pid: int, addrs: dict[str, int], layout) -> str | None:
    why = None
    for _ in range(3):        # allgadd appends, then stores allglen: read again on a race
        hdr = read_memory(pid, addrs["runtime.allgs"], 24)
        ptr, length, cap = _u64(hdr), _u64(hdr, 8), _u64(hdr, 16)
        allglen = _u64(read_memory(pid, addrs["runtime.allglen"], 8))
        if not (0 < length <= cap < MAX_GOROUTINES) or ptr % 8:
            why = f"allgs is not a slice of goroutines (len {length}, cap {cap})"
        elif allglen != length:
            why = f"allglen ({allglen}) is not len(allgs) ({length})"
        else:
            return _check_gs(pid, ptr, min(length, 16), layout) or \
                _check_ms(pid, addrs["runtime.allm"], layout)
    return why


def _check_gs(pid: int, ptr: int, n: int, layout) -> str | None:
    """allgs[0] is the main goroutine (id 1: created first, it lives as long as the
    process); the first n have distinct ids and statuses the runtime has."""
    gs = read_memory(pid, ptr, 8 * n)
    goff = layout.g_offsets["goid"]
    soff = layout.g_offsets["atomicstatus"]
    statuses = set(layout.status_values.values())
    ids = []
    for i in range(n):
        g = _u64(gs, 8 * i)
        if g == 0 or g % 8:
            return f"allgs[{i}] is not a goroutine pointer ({g:#x})"
        ids.append(_u64(read_memory(pid, g + goff, 8)))
        status = int.from_bytes(read_memory(pid, g + soff, 4), "little")
        if status not in statuses:
            return f"allgs[{i}]'s status {status} is not a goroutine status"
    if ids[0] != 1 or len(set(ids)) != len(ids) or max(ids) >= 1 << 48:
        return f"the first goroutines' ids are not ids ({ids[:6]})"
    return None


MAX_MS = 10_000     # the runtime's own limit (debug.SetMaxThreads)
PID_MAX_LIMIT = 1 << 22     # no thread id reaches it (include/linux/threads.h)


def _check_ms(pid: int, allm: int, layout) -> str | None:
    """allm's list, followed through m.alllink, is the runtime's list of threads: each m's
    g0 belongs to it (g0.m is the m), its procid is a thread id (0 for a thread still
    starting; not always a live thread: before Go 1.22 the m of a C thread that called
    into Go keeps it after that thread exits) and some are the process's own threads,
    each m has its own id, and the list ends at m0 (id 0), the first m added. A wrong m
    offset (alllink, id, procid, g0) breaks one of these."""
    tids = _thread_ids(pid)
    moff, goff_m = layout.m_offsets, layout.g_offsets["m"]
    m = _u64(read_memory(pid, allm, 8))
    last_id, ids, seen = None, set(), 0
    for _ in range(MAX_MS):
        if m == 0:
            break
        if m % 8:
            return f"allm's list holds {m:#x}, not an m"
        mid = _u64(read_memory(pid, m + moff["id"], 8))
        if mid in ids or mid >= 1 << 32:      # ids are int64s counting ms made
            return f"allm's list has an m id {mid} that is not an m id"
        g0 = _u64(read_memory(pid, m + moff["g0"], 8))
        if g0 == 0 or g0 % 8 or _u64(read_memory(pid, g0 + goff_m, 8)) != m:
            return f"m {mid}'s g0 is not its own"
        procid = _u64(read_memory(pid, m + moff["procid"], 8))
        if procid >= PID_MAX_LIMIT:
            return f"m {mid}'s thread id {procid} is not a thread id"
        seen += procid in tids
        last_id = mid
        ids.add(mid)
        m = _u64(read_memory(pid, m + moff["alllink"], 8))
    if m != 0 or last_id != 0:
        return f"allm's list does not end at m0 (last m id {last_id})"
    return None if seen or not tids else "no thread of allm's list is one of the " \
        "process's threads"


def _thread_ids(pid: int) -> set[int]:
    """The process's thread ids as the host sees them and as its own PID namespace does
    (m.procid holds the latter: inside a container they differ)."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        out.add(int(t))
        try:
            status = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                out.update(int(x) for x in line.split()[1:])
    return out
