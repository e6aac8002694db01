"""The BPF programs. Compiles bpf/snapshot.bpf.c twice with bcc
(the target's runtime layout baked in as macros): as a *sleepable* task iterator, loaded
with plain bpf(2) calls (bcc 0.26 cannot load sleepable programs) and run in passes, and
as the *stop hook*, a raw tracepoint program on sched_switch that walks the goroutines in
the target's own context once its stop is complete. Both share one set of maps.

See ../shared/design/ENGINE-NOTES.md for why each step is done this way.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from pytest_sideeye import install
from pytest_sideeye.engine import pins
from pytest_sideeye.errors import BpfUnavailable, NoPermission, TargetGone
from pytest_sideeye.files import JsonCache

# The C lives at the top of the checkout (bpf/) and ships in the wheel as pytest_sideeye/bpf/.
_SOURCE_PLACES = (Path(__file__).resolve().parents[1] / "bpf" / "snapshot.bpf.c",
                  Path(__file__).resolve().parents[2] / "bpf" / "snapshot.bpf.c")


@lru_cache(maxsize=None)
def bpf_source() -> Path:
    for place in _SOURCE_PLACES:
        if place.is_file():
            return place
    raise BpfUnavailable("this installation of pytest-sideeye lacks its BPF program "
                         "(pytest_sideeye/bpf/snapshot.bpf.c): reinstall the package")


@lru_cache(maxsize=1)
def bpf_text() -> bytes:
    """The C, read once per process. The Python side's record layouts were loaded with the
    process, so the C it compiles, hashes and parses structs from must be the one that
    matched them then: a long-lived agent whose files are replaced by an upgrade keeps
    compiling the C it started with, never a mix of old Python and new C."""
    return bpf_source().read_bytes()


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], list[str]]]:
    """clang and libbpf print straight to fd 2: keep what they say off the user's one line.
    Yields a function returning the non-empty lines printed so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield lambda: [line.strip() for line in (log.seek(0), log.read())[1].splitlines()
                           if line.strip()]
        finally:
            os.dup2(saved, 2)
            os.close(saved)

# bpf(2) commands and constants (uapi/linux/bpf.h).
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_ITER_CREATE = 33
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_ITER = 28
BPF_F_SLEEPABLE = 1 << 4
SYS_BPF = 321  # x86-64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf_syscall(cmd: int, attr: bytearray) -> int:
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    rc = _libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


# --- the running kernel's BTF ------------------------------------------------------------

_BTF_KIND_EXTRA = {  # bytes after the 12-byte btf_type header: (fixed, per vlen item)
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
    8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
    15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}
BTF_KIND_STRUCT, BTF_KIND_FUNC = 4, 12


KFUNCS = ("bpf_iter_num_new", "bpf_iter_num_next", "bpf_iter_num_destroy")
# Placeholder helper ids in bpf/snapshot.bpf.c (KF_ITER_*), in the order of KFUNCS.
KFUNC_PLACEHOLDERS = (0x7FF0001, 0x7FF0002, 0x7FF0003)
BPF_PSEUDO_KFUNC_CALL = 2


# Kernel struct fields the programs read, by (struct, member): their offsets come from the
# running kernel's BTF, never from headers. The first is required, the others only by the
# stop hook (a kernel without them gets the iterator alone).
KERNEL_FIELDS = (("task_struct", "pid"), ("task_struct", "signal"),
                 ("signal_struct", "group_stop_count"), ("signal_struct", "flags"))


@dataclass(frozen=True)
class KernelBtf:
    iter_task_func_id: int   # BTF id of FUNC bpf_iter_task: the iterator's attach point
    task_pid_offset: int     # byte offset of task_struct.pid (the thread id)
    kfunc_ids: tuple[int, ...]  # BTF ids of KFUNCS
    # Offsets for the stop hook (None when this kernel's BTF lacks one of them).
    task_signal_offset: int | None = None
    signal_gsc_offset: int | None = None
    signal_flags_offset: int | None = None

    def hook_macros(self) -> dict[str, int] | None:
        offs = (self.task_signal_offset, self.signal_gsc_offset, self.signal_flags_offset)
        if None in offs:
            return None
        return dict(zip(("TASK_SIGNAL_OFF", "SIGNAL_GSC_OFF", "SIGNAL_FLAGS_OFF"), offs))


@lru_cache(maxsize=1)
def kernel_btf(path: str = "/sys/kernel/btf/vmlinux") -> KernelBtf:
    """Scan vmlinux BTF for what the programs need from the running kernel: attach points,
    kfunc ids and a few struct field offsets."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BpfUnavailable(f"cannot read kernel BTF at {path} ({e.strerror}); "
                             "the kernel needs CONFIG_DEBUG_INFO_BTF") from None
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = \
        struct.unpack_from("<HBBIIIII", data, 0)
    if magic != 0xEB9F:
        raise BpfUnavailable(f"{path} is not BTF")
    types = hdr_len + type_off
    strs = hdr_len + str_off

    def name(off: int) -> bytes:
        end = data.index(b"\0", strs + off)
        return data[strs + off:end]

    func_id = None
    wanted = {k.encode(): None for k in KFUNCS}
    fields: dict[tuple[bytes, bytes], int | None] = \
        {(s.encode(), m.encode()): None for s, m in KERNEL_FIELDS}
    structs = {s for s, _m in fields}
    pos, end, tid = types, types + type_len, 1
    while pos < end and (func_id is None or None in wanted.values()
                         or None in fields.values()):
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, per = _BTF_KIND_EXTRA.get(kind, (0, 0))
        if kind == BTF_KIND_FUNC:
            n = name(name_off)
            if n == b"bpf_iter_task":
                func_id = tid
            elif n in wanted:
                wanted[n] = tid
        elif kind == BTF_KIND_STRUCT and name(name_off) in structs:
            sname, kflag = name(name_off), info >> 31
            for i in range(vlen):
                m_name, _m_type, m_off = struct.unpack_from("<III", data, pos + 12 + 12 * i)
                key = (sname, name(m_name))
                if key in fields and fields[key] is None:
                    fields[key] = (m_off & 0xFFFFFF if kflag else m_off) // 8
        pos += 12 + fixed + per * vlen
        tid += 1
    pid_off = fields[(b"task_struct", b"pid")]
    if func_id is None:
        raise BpfUnavailable("the kernel has no BPF task iterator (bpf_iter_task); "
                             "Linux 6.1 or newer is needed")
    if pid_off is None:
        raise BpfUnavailable("task_struct.pid not found in kernel BTF")
    if None in wanted.values():
        raise BpfUnavailable("the kernel lacks open-coded iterators (bpf_iter_num_*); "
                             "Linux 6.4 or newer is needed")
    return KernelBtf(func_id, pid_off, tuple(wanted[k.encode()] for k in KFUNCS),
                     fields[(b"task_struct", b"signal")],
                     fields[(b"signal_struct", b"group_stop_count")],
                     fields[(b"signal_struct", b"flags")])


def patch_kfunc_calls(insns: bytes, kfunc_ids: tuple[int, ...]) -> bytes:
    """Turn `call KF_*` placeholder helper calls into calls of the kernel's kfuncs."""
    out = bytearray(insns)
    table = dict(zip(KFUNC_PLACEHOLDERS, kfunc_ids))
    for off in range(0, len(out), 8):
        code, regs, _off, imm = struct.unpack_from("<BBhi", out, off)
        if code == 0x85 and regs == 0 and imm in table:
            struct.pack_into("<BBhi", out, off, code, BPF_PSEUDO_KFUNC_CALL << 4, 0, table[imm])
    return bytes(out)


# --- compiling and loading ---------------------------------------------------------------

def _pow2_at_least(n: int) -> int:
    p = 8
    while p < n:
        p *= 2
    return p


def layout_macros(layout) -> dict[str, int]:
    """The -D macros of bpf/snapshot.bpf.c for one runtime layout (binary/layout.py)."""
    g, m, st = layout.g_offsets, layout.m_offsets, layout.status_values
    need = ["goid", "atomicstatus", "waitreason", "waitsince", "gopc", "m", "stack.lo",
            "stack.hi", "sched.sp", "sched.pc", "sched.bp", "syscallsp", "syscallpc"]
    missing = [f for f in need if f not in g]
    if missing:
        raise BpfUnavailable(f"runtime.g lacks fields {missing} in this binary's DWARF")
    macros = {
        "OFF_GOID": g["goid"], "OFF_STATUS": g["atomicstatus"],
        "OFF_WAITREASON": g["waitreason"], "OFF_WAITSINCE": g["waitsince"],
        "OFF_GOPC": g["gopc"], "OFF_M": g["m"], "OFF_STACK_LO": g["stack.lo"],
        "OFF_STACK_HI": g["stack.hi"], "OFF_SCHED_SP": g["sched.sp"],
        "OFF_SCHED_PC": g["sched.pc"], "OFF_SCHED_BP": g["sched.bp"],
        "OFF_SYSCALLSP": g["syscallsp"], "OFF_SYSCALLPC": g["syscallpc"],
        "OFF_M_PROCID": m["procid"], "OFF_M_CURG": m["curg"], "OFF_M_ALLLINK": m["alllink"],
        "GSTATUS_DEAD": st["_Gdead"], "GSTATUS_RUNNING": st["_Grunning"],
        "GSTATUS_SYSCALL": st["_Gsyscall"],
    }
    if "parentGoid" in g:
        macros["OFF_PARENT"] = g["parentGoid"]
    if "syscallbp" in g:
        macros["OFF_SYSCALLBP"] = g["syscallbp"]
    if "trackingSeq" in g:
        macros["OFF_TRACKSEQ"] = g["trackingSeq"]
    if "labels" in g:
        macros["OFF_LABELS"] = g["labels"]
    g_end = max(v for k, v in macros.items() if k.startswith("OFF_") and "_M_" not in k) + 8
    m_end = max(m["procid"], m["curg"], m["alllink"]) + 8
    macros["G_COPY"] = _pow2_at_least(g_end)
    macros["M_COPY"] = _pow2_at_least(m_end)
    return macros


def source_constants() -> dict[str, int]:
    """Numeric #defines of the C source, so the Python side reads the same sizes."""
    out = {}
    for line in bpf_text().decode().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[2].lstrip("-").isdigit():
            out[parts[1]] = int(parts[2])
    c = out
    c["READ_OUT"] = c["READS_PER_PASS"] * 512
    return c


MAP_NAMES = ("cfg", "out", "gout", "conts", "todo", "reads", "scratch", "capq", "captab",
             "capbits", "capops", "capbuf", "cappy", "pre", "changed", "redo")
MMAPPED = ("cfg", "out", "gout", "conts", "todo", "reads", "capq", "captab", "capbits", "capops",
           "capbuf", "cappy", "pre", "changed", "redo")
BPF_MAP_CREATE = 0
CACHE = JsonCache("bpf", schema=1)


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


class Program:
    """The compiled and loaded collector programs with their maps, for one runtime layout:
    the iterator (always) and the stop hook (when this kernel allows it).

    The bytecode is cached on disk per (source, layout, kernel): a cached program is loaded
    without bcc, its maps created here and their fds patched into the instructions. Loaded
    programs and their maps are pinned in bpffs (pins.py): a later process opens them
    instead of loading (`from_pins`), and shares their maps: take.py holds
    pins.lock(pins_folder), the folder they came from (None: maps of this process only)."""

    def __init__(self, macros: dict[str, int]):
        self.macros = dict(macros)
        self.const = source_constants()
        self.map_fds: dict[str, int] = {}
        self.pins_folder: int | None = None
        templates, specs = _cached_program(self.macros)
        if not templates:
            templates, specs = _compile_templates(self.macros)
            _store_program(self.macros, templates, specs)
        self.specs = {s.name: s for s in specs}
        self.pin_key = _cache_key(self.macros)
        self.from_pins = self._open_pins(specs)
        if not self.from_pins:
            self._load(templates, specs)
            self.pins_folder = pins.pin(bpf_syscall, self.pin_key, self._fds_to_pin())
        for name in MMAPPED:
            setattr(self, name, self._mmap(name))

    def _open_pins(self, specs: list[MapSpec]) -> bool:
        """Take the maps and programs another process pinned (pins.py), if complete."""
        got = pins.open_pinned(bpf_syscall, self.pin_key,
                               [s.name for s in specs] + ["iter", "hook"])
        if got is None:
            return False
        fds, self.pins_folder = got
        self.map_fds = {s.name: fds[s.name] for s in specs}
        self.prog_fd = fds["iter"]
        self.hook_fd = fds.get("hook")
        self.hook_error = None if self.hook_fd is not None else \
            "the pinned programs have no stop hook (this kernel refused it when they were loaded)"
        return True

    def _fds_to_pin(self) -> dict[str, int]:
        out = {**self.map_fds, "iter": self.prog_fd}
        if self.hook_fd is not None:
            out["hook"] = self.hook_fd
        return out

    def _load(self, templates: dict[str, str], specs: list[MapSpec]) -> None:
        """Create the maps and load the programs: BPF_PROG_LOAD runs the verifier (seconds)."""
        for spec in specs:
            self.map_fds[spec.name] = _map_create(spec)
        fds = [self.map_fds[s.name] for s in specs]
        kfuncs = kernel_btf().kfunc_ids
        insns = patch_kfunc_calls(_relocate(bytes.fromhex(templates["iter"]), fds), kfuncs)
        self.prog_fd = _load_sleepable_iter(insns)
        self.hook_fd = None
        self.hook_error = "this kernel's BTF lacks the fields the stop hook reads"
        if "hook" in templates:
            hook = patch_kfunc_calls(_relocate(bytes.fromhex(templates["hook"]), fds), kfuncs)
            try:
                self.hook_fd = _prog_load(hook, 1, BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, 0,
                                          b"sideeye_hook")[0]
                self.hook_error = None
            except (BpfUnavailable, NoPermission) as e:
                self.hook_error = str(e)

    def _mmap(self, name: str) -> mmap.mmap:
        spec = self.specs[name]
        size = ((spec.value_size + 7) & ~7) * spec.max_entries
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        return mmap.mmap(self.map_fds[name], size, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)

    def link(self, pid: int) -> int:
        """A link restricted to the threads of process `pid` (kernel >= 6.1)."""
        info = bytearray(struct.pack("<III4x", 0, pid, 0))
        info_buf = (ctypes.c_char * len(info)).from_buffer(info)
        attr = bytearray(64)
        struct.pack_into("<IIII", attr, 0, self.prog_fd, 0, BPF_TRACE_ITER, 0)
        struct.pack_into("<QI", attr, 16, ctypes.addressof(info_buf), len(info))
        try:
            return bpf_syscall(BPF_LINK_CREATE, attr)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone(f"process {pid} is gone") from None
            raise BpfUnavailable(f"cannot attach the task iterator to pid {pid}: {e.strerror}") \
                from None

    def attach_hook(self) -> int | None:
        """Attach the stop hook to sched_switch; returns the link fd (closing it detaches,
        waiting for any run in progress to finish), or None when there is no hook."""
        if self.hook_fd is None:
            return None
        name = ctypes.create_string_buffer(b"sched_switch")
        attr = bytearray(16)
        struct.pack_into("<QI", attr, 0, ctypes.addressof(name), self.hook_fd)
        try:
            return bpf_syscall(BPF_RAW_TRACEPOINT_OPEN, attr)
        except OSError as e:
            self.hook_error = f"cannot attach the stop hook to sched_switch: {e.strerror}"
            return None

    def run(self, link_fd: int, buf: bytearray) -> None:
        """One pass: a fresh iterator fd, read() runs the program over the linked threads."""
        attr = bytearray(struct.pack("<II", link_fd, 0))
        fd = bpf_syscall(BPF_ITER_CREATE, attr)
        try:
            while os.readv(fd, [buf]) > 0:
                pass
        finally:
            os.close(fd)

    def close(self) -> None:
        for name in MMAPPED:
            getattr(self, name).close()
        os.close(self.prog_fd)
        if self.hook_fd is not None:
            os.close(self.hook_fd)
        for fd in self.map_fds.values():
            os.close(fd)
        if self.pins_folder is not None:
            os.close(self.pins_folder)


# --- compiling and the bytecode cache ----------------------------------------------------
# The cache keeps each build's instructions with every map fd replaced by the index of its
# map in the spec list; loading creates the maps and puts their fds back (_relocate).

def _cache_key(macros: dict[str, int]) -> str:
    h = hashlib.sha256(bpf_text())
    h.update(repr(sorted(macros.items())).encode())
    h.update(repr(kernel_btf()).encode())
    h.update(os.uname().release.encode())
    return h.hexdigest()[:24]


def _is_map_ref(insns: bytes, off: int) -> bool:
    code, regs = insns[off], insns[off + 1]
    return code == 0x18 and (regs >> 4) == 1   # ld_imm64 with BPF_PSEUDO_MAP_FD


def _template(insns: bytes, index: dict[int, int]) -> str | None:
    """Instructions with map fds replaced by map indexes (None: a map we do not know)."""
    out = bytearray(insns)
    for off in range(0, len(out), 8):
        if _is_map_ref(out, off):
            fd = struct.unpack_from("<i", out, off + 4)[0]
            if fd not in index:
                return None
            struct.pack_into("<i", out, off + 4, index[fd])
    return out.hex()


def _compile_templates(macros: dict[str, int]) -> tuple[dict[str, str], list[MapSpec]]:
    """Both builds as templates over the iterator build's map specs (same declarations)."""
    templates: dict[str, str] = {}
    b = _compile(macros, in_context=False)
    try:
        specs = []
        for name in MAP_NAMES:
            t = b[name.encode()]
            specs.append(MapSpec(name, t.ttype, ctypes.sizeof(t.Key), ctypes.sizeof(t.Leaf),
                                 t.max_entries, t.flags))
        index = {b[s.name.encode()].get_fd(): i for i, s in enumerate(specs)}
        templates["iter"] = _template(b.dump_func(b"bpf_iter__task"), index)
    finally:
        b.cleanup()
    if kernel_btf().hook_macros() is not None:
        h = _compile(macros, in_context=True)
        try:
            index = {h[s.name.encode()].get_fd(): i for i, s in enumerate(specs)}
            hook = _template(h.dump_func(b"sideeye_stop_hook"), index)
            if hook is not None:
                templates["hook"] = hook
        finally:
            h.cleanup()
    if templates["iter"] is None:
        raise BpfUnavailable("bcc produced a program referring to an unknown map")
    return templates, specs


def _store_program(macros, templates: dict[str, str], specs: list[MapSpec]) -> None:
    CACHE.store(_cache_key(macros), {"programs": templates, "maps": [s.__dict__ for s in specs]})


def _cached_program(macros) -> tuple[dict[str, str], list[MapSpec]]:
    doc = CACHE.load(_cache_key(macros))
    try:
        programs = doc["programs"]
        if not isinstance(programs, dict) or "iter" not in programs:
            return {}, []
        return programs, [MapSpec(**m) for m in doc["maps"]]
    except (ValueError, KeyError, TypeError):
        return {}, []


def _relocate(template: bytes, fds: list[int]) -> bytes:
    out = bytearray(template)
    for off in range(0, len(out), 8):
        if _is_map_ref(out, off):
            i = struct.unpack_from("<i", out, off + 4)[0]
            struct.pack_into("<i", out, off + 4, fds[i])
    return bytes(out)


def _map_create(spec: MapSpec) -> int:
    attr = bytearray(72)
    struct.pack_into("<IIIII", attr, 0, spec.type, spec.key_size, spec.value_size,
                     spec.max_entries, spec.flags)
    name = spec.name.encode()[:15]
    attr[28:28 + len(name)] = name
    try:
        return bpf_syscall(BPF_MAP_CREATE, attr)
    except OSError as e:
        if e.errno == errno.EPERM and os.geteuid() != 0:
            raise NoPermission("creating BPF maps needs root (or CAP_BPF)") from None
        raise BpfUnavailable(f"the kernel refused bpf(2) (creating map {spec.name}: "
                             f"{e.strerror}): BPF is disabled or filtered here "
                             "(a seccomp profile? a container?)") from None


def _compile(macros: dict[str, int], in_context: bool):
    try:
        from bcc import BPF
    except ImportError:
        raise BpfUnavailable("bcc is not importable: " + install.fix(
            "install Debian's python3-bpfcc and use a venv with --system-site-packages")) \
            from None
    cflags = [f"-D{k}={v}" for k, v in sorted(macros.items())]
    btf = kernel_btf()
    cflags.append(f"-DTASK_PID_OFF={btf.task_pid_offset}")
    cflags.append(f"-DIN_CONTEXT={int(in_context)}")
    if in_context:
        cflags += [f"-D{k}={v}" for k, v in sorted(btf.hook_macros().items())]
    text = bpf_text()
    with captured_stderr() as said:
        try:
            return BPF(text=text, cflags=cflags)
        except Exception as e:  # bcc raises bare Exceptions for missing headers and the like
            why = said()
            raise BpfUnavailable(f"bcc could not compile {bpf_source().name}: {e}"
                                 + (f" ({why[0]})" if why else "")) from None


def _prog_load(insns: bytes, log_level: int, prog_type: int = BPF_PROG_TYPE_TRACING,
               flags: int = BPF_F_SLEEPABLE, attach_type: int = BPF_TRACE_ITER,
               attach_btf_id: int | None = None,
               name: bytes = b"sideeye_iter") -> tuple[int, str]:
    """BPF_PROG_LOAD (by default as a sleepable task iterator); returns (fd, verifier log)."""
    if attach_btf_id is None:
        attach_btf_id = kernel_btf().iter_task_func_id
    log = ctypes.create_string_buffer(1 << 22)
    lic = ctypes.create_string_buffer(b"GPL")
    prog = ctypes.create_string_buffer(insns, len(insns))
    attr = bytearray(128)
    struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(insns) // 8,
                     ctypes.addressof(prog), ctypes.addressof(lic), log_level, len(log),
                     ctypes.addressof(log))
    struct.pack_into("<I", attr, 44, flags)
    attr[48:48 + len(name)] = name
    struct.pack_into("<I", attr, 68, attach_type)
    struct.pack_into("<I", attr, 108, attach_btf_id)
    try:
        return bpf_syscall(BPF_PROG_LOAD, attr), log.value.decode(errors="replace")
    except OSError as e:
        if e.errno == errno.EPERM and os.geteuid() != 0:
            raise NoPermission("loading BPF programs needs root (or CAP_BPF+CAP_PERFMON)") \
                from None
        tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise BpfUnavailable(f"the kernel refused the collector program ({e.strerror}): "
                             + " | ".join(tail)) from None


def _load_sleepable_iter(insns: bytes) -> int:
    return _prog_load(insns, 1)[0]



_KFUNC_DECLS = b"""
struct bpf_iter_num { u64 opaque; } __attribute__((aligned(8)));
static int (*iter_new)(struct bpf_iter_num *it, int start, int end) = (void *)0x7ff0001;
static int *(*iter_next)(struct bpf_iter_num *it) = (void *)0x7ff0002;
static void (*iter_destroy)(struct bpf_iter_num *it) = (void *)0x7ff0003;
"""

_TRIAL_SOURCE = _KFUNC_DECLS + b"""
struct bpf_iter_meta { void *seq; u64 session_id; u64 seq_num; };
struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; };
BPF_ARRAY(seen, u64, 1);
int bpf_iter__task(struct bpf_iter__task *ctx) {
  struct task_struct *task = ctx->task;
  if (!task)
    return 0;
  u32 zero = 0;
  u64 *n = seen.lookup(&zero);
  struct bpf_iter_num it;
  iter_new(&it, 0, 4);
  while (iter_next(&it)) {
    u64 word = 0;
    if (n && bpf_copy_from_user_task(&word, 8, (void *)0x1000, task, 0) != 0)
      *n += 1;
  }
  iter_destroy(&it);
  return 0;
}
"""


def trial_load() -> str:
    """Compile, load and run a tiny program using every kernel feature the collector needs
    (sleepable task iterator, bpf_copy_from_user_task, open-coded iterators): `sideeye
    doctor` reports the result. Raises BpfUnavailable / NoPermission with one line."""
    btf = kernel_btf()
    try:
        from bcc import BPF
    except ImportError:
        raise BpfUnavailable("bcc is not importable: install Debian's python3-bpfcc") from None
    try:
        b = BPF(text=_TRIAL_SOURCE)
    except Exception as e:  # bcc raises bare Exceptions
        raise BpfUnavailable(f"bcc cannot compile a trial program: {str(e)[:160]}") from None
    try:
        fd = _load_sleepable_iter(patch_kfunc_calls(b.dump_func(b"bpf_iter__task"),
                                                    btf.kfunc_ids))
        try:
            prog = Program.__new__(Program)
            prog.prog_fd = fd
            link = Program.link(prog, os.getpid())
            try:
                Program.run(prog, link, bytearray(64))
            finally:
                os.close(link)
        finally:
            os.close(fd)
        reads = b[b"seen"][ctypes.c_int(0)].value
    finally:
        b.cleanup()
    return (f"sleepable task iterator loaded and ran over this process ({reads} guarded "
            "reads of an unmapped address failed cleanly)")


_TRIAL_HOOK_SOURCE = _KFUNC_DECLS + b"""
BPF_ARRAY(seen, u64, 1);
int trial_hook(struct bpf_raw_tracepoint_args *ctx) {
  u32 zero = 0;
  u64 *n = seen.lookup(&zero);
  if (!n || bpf_get_current_pid_tgid() >> 32 != TRIAL_PID)
    return 0;
  struct bpf_iter_num it;
  iter_new(&it, 0, 2);
  while (iter_next(&it)) {
    u64 word = 0;
    if (bpf_probe_read_user(&word, 8, (void *)0x1000) != 0)
      __sync_fetch_and_add(n, 1);
  }
  iter_destroy(&it);
  return 0;
}
"""


def trial_hook() -> str:
    """Load and attach a tiny program with what the stop hook needs (a raw tracepoint on
    sched_switch, bpf_probe_read_user, open-coded iterators, atomics), and see it run in
    this process's context. Raises BpfUnavailable with one line when it cannot."""

    from bcc import BPF
    btf = kernel_btf()
    if btf.hook_macros() is None:
        raise BpfUnavailable("the kernel's BTF lacks task_struct.signal or signal_struct "
                             "fields the stop hook reads")
    try:
        b = BPF(text=_TRIAL_HOOK_SOURCE, cflags=[f"-DTRIAL_PID={os.getpid()}"])
    except Exception as e:  # bcc raises bare Exceptions
        raise BpfUnavailable(f"bcc cannot compile a trial hook: {str(e)[:160]}") from None
    try:
        insns = patch_kfunc_calls(b.dump_func(b"trial_hook"), btf.kfunc_ids)
        fd = _prog_load(insns, 1, BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, 0, b"sideeye_trial")[0]
        try:
            prog = Program.__new__(Program)
            prog.hook_fd = fd
            link = Program.attach_hook(prog)
            if link is None:
                raise BpfUnavailable(prog.hook_error)
            try:
                time.sleep(0.01)   # switch out at least once
            finally:
                os.close(link)
        finally:
            os.close(fd)
        runs = b[b"seen"][ctypes.c_int(0)].value // 2
    finally:
        b.cleanup()
    if not runs:
        raise BpfUnavailable("the trial hook was attached to sched_switch but never ran")
    return f"a raw tracepoint on sched_switch ran in this process's context ({runs}x in 10 ms)"
