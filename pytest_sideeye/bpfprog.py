"""Stage 3 of the pipeline: the BPF program. Compiles bpf/snapshot.bpf.c with bcc (the
target's runtime layout baked in as macros), loads it as a *sleepable* task iterator with
plain bpf(2) calls (bcc 0.26 cannot load sleepable programs), and runs passes.

See ../shared/design/ENGINE-NOTES.md for why each step is done this way.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import BpfUnavailable, NoPermission

BPF_SOURCE = Path(__file__).resolve().parent.parent / "bpf" / "snapshot.bpf.c"

# bpf(2) commands and constants (uapi/linux/bpf.h).
BPF_PROG_LOAD = 5
BPF_LINK_CREATE = 28
BPF_ITER_CREATE = 33
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


@dataclass(frozen=True)
class KernelBtf:
    iter_task_func_id: int   # BTF id of FUNC bpf_iter_task: the iterator's attach point
    task_pid_offset: int     # byte offset of task_struct.pid (the thread id)
    kfunc_ids: tuple[int, ...]  # BTF ids of KFUNCS


@lru_cache(maxsize=1)
def kernel_btf(path: str = "/sys/kernel/btf/vmlinux") -> KernelBtf:
    """Scan vmlinux BTF for the two facts the collector needs from the running kernel."""
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

    func_id = pid_off = None
    wanted = {k.encode(): None for k in KFUNCS}
    pos, end, tid = types, types + type_len, 1
    while pos < end and (func_id is None or pid_off is None or None in wanted.values()):
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, per = _BTF_KIND_EXTRA.get(kind, (0, 0))
        if kind == BTF_KIND_FUNC:
            n = name(name_off)
            if n == b"bpf_iter_task":
                func_id = tid
            elif n in wanted:
                wanted[n] = tid
        elif kind == BTF_KIND_STRUCT and pid_off is None and name(name_off) == b"task_struct":
            kflag = info >> 31
            for i in range(vlen):
                m_name, _m_type, m_off = struct.unpack_from("<III", data, pos + 12 + 12 * i)
                if name(m_name) == b"pid":
                    pid_off = (m_off & 0xFFFFFF if kflag else m_off) // 8
                    break
        pos += 12 + fixed + per * vlen
        tid += 1
    if func_id is None:
        raise BpfUnavailable("the kernel has no BPF task iterator (bpf_iter_task); "
                             "Linux 6.1 or newer is needed")
    if pid_off is None:
        raise BpfUnavailable("task_struct.pid not found in kernel BTF")
    if None in wanted.values():
        raise BpfUnavailable("the kernel lacks open-coded iterators (bpf_iter_num_*); "
                             "Linux 6.4 or newer is needed")
    return KernelBtf(func_id, pid_off, tuple(wanted[k.encode()] for k in KFUNCS))


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
    """The -D macros of bpf/snapshot.bpf.c for one runtime layout (runtime_layout.py)."""
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
    g_end = max(v for k, v in macros.items() if k.startswith("OFF_") and "_M_" not in k) + 8
    m_end = max(m["procid"], m["curg"], m["alllink"]) + 8
    macros["G_COPY"] = _pow2_at_least(g_end)
    macros["M_COPY"] = _pow2_at_least(m_end)
    return macros


def source_constants() -> dict[str, int]:
    """Numeric #defines of the C source, so the Python side reads the same sizes."""
    out = {}
    for line in BPF_SOURCE.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[2].lstrip("-").isdigit():
            out[parts[1]] = int(parts[2])
    c = out
    c["READ_OUT"] = c["READS_PER_PASS"] * 512
    return c


MAP_NAMES = ("cfg", "out", "gout", "conts", "todo", "reads", "scratch")
BPF_MAP_CREATE = 0
BPF_F_MMAPABLE = 1 << 10
CACHE_DIR = Path(os.environ.get("SIDEEYE_BPF_CACHE", Path.home() / ".cache" / "sideeye" / "bpf"))


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


class Program:
    """One compiled and loaded collector program with its maps, for one runtime layout.

    The bytecode is cached on disk per (source, layout, kernel): a cached program is loaded
    without bcc, its maps created here and their fds patched into the instructions."""

    def __init__(self, macros: dict[str, int]):
        self.macros = dict(macros)
        self.const = source_constants()
        self._bcc = None
        self.map_fds: dict[str, int] = {}
        insns, specs = _cached_program(self.macros)
        if insns is None:
            insns, specs = self._compile_and_cache()
        else:
            insns = self._create_maps(insns, specs)
        self.specs = {s.name: s for s in specs}
        self.insns = insns
        self.prog_fd = _load_sleepable_iter(self.insns)
        self.cfg, self.out, self.gout, self.conts, self.todo, self.reads = (
            self._mmap(n) for n in ("cfg", "out", "gout", "conts", "todo", "reads"))

    def _compile_and_cache(self):
        self._bcc = _compile(self.macros)
        raw = self._bcc.dump_func(b"bpf_iter__task")
        specs = []
        for name in MAP_NAMES:
            t = self._bcc[name.encode()]
            self.map_fds[name] = t.get_fd()
            specs.append(MapSpec(name, t.ttype, ctypes.sizeof(t.Key), ctypes.sizeof(t.Leaf),
                                 t.max_entries, t.flags))
        _store_program(self.macros, raw, specs, self.map_fds)
        return patch_kfunc_calls(raw, kernel_btf().kfunc_ids), specs

    def _create_maps(self, template: bytes, specs: list[MapSpec]) -> bytes:
        for spec in specs:
            self.map_fds[spec.name] = _map_create(spec)
        fds = [self.map_fds[s.name] for s in specs]
        return patch_kfunc_calls(_relocate(template, fds), kernel_btf().kfunc_ids)

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
                from .errors import TargetGone
                raise TargetGone(f"process {pid} is gone") from None
            raise BpfUnavailable(f"cannot attach the task iterator to pid {pid}: {e.strerror}") \
                from None

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
        for mm in (self.cfg, self.out, self.gout, self.conts, self.todo, self.reads):
            mm.close()
        os.close(self.prog_fd)
        if self._bcc is not None:
            self._bcc.cleanup()
        else:
            for fd in self.map_fds.values():
                os.close(fd)


# --- the bytecode cache ------------------------------------------------------------------

def _cache_key(macros: dict[str, int]) -> str:
    import hashlib
    h = hashlib.sha256(BPF_SOURCE.read_bytes())
    h.update(repr(sorted(macros.items())).encode())
    h.update(repr(kernel_btf()).encode())
    h.update(os.uname().release.encode())
    return h.hexdigest()[:24]


def _is_map_ref(insns: bytes, off: int) -> bool:
    code, regs = insns[off], insns[off + 1]
    return code == 0x18 and (regs >> 4) == 1   # ld_imm64 with BPF_PSEUDO_MAP_FD


def _store_program(macros, insns: bytes, specs: list[MapSpec], fds: dict[str, int]) -> None:
    """Keep the bytecode with each map fd replaced by the index of its map in `specs`."""
    import json
    index = {fds[s.name]: i for i, s in enumerate(specs)}
    template = bytearray(insns)
    for off in range(0, len(template), 8):
        if _is_map_ref(template, off):
            fd = struct.unpack_from("<i", template, off + 4)[0]
            if fd not in index:
                return  # not a map we know: do not cache
            struct.pack_into("<i", template, off + 4, index[fd])
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    doc = {"insns": template.hex(), "maps": [s.__dict__ for s in specs]}
    tmp = CACHE_DIR / f".{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, CACHE_DIR / f"{_cache_key(macros)}.json")


def _cached_program(macros) -> tuple[bytes | None, list[MapSpec]]:
    import json
    try:
        doc = json.loads((CACHE_DIR / f"{_cache_key(macros)}.json").read_text())
        return bytes.fromhex(doc["insns"]), [MapSpec(**m) for m in doc["maps"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None, []


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


def _compile(macros: dict[str, int]):
    try:
        from bcc import BPF
    except ImportError:
        raise BpfUnavailable("bcc is not importable: install Debian's python3-bpfcc and use "
                             "a venv with --system-site-packages (scripts/setup.sh does)") \
            from None
    cflags = [f"-D{k}={v}" for k, v in sorted(macros.items())]
    cflags.append(f"-DTASK_PID_OFF={kernel_btf().task_pid_offset}")
    try:
        return BPF(text=BPF_SOURCE.read_bytes(), cflags=cflags)
    except Exception as e:  # bcc raises bare Exceptions for missing headers and the like
        raise BpfUnavailable(f"bcc could not compile {BPF_SOURCE.name}: {e}") from None


def _prog_load(insns: bytes, log_level: int, name: bytes = b"sideeye_iter") -> tuple[int, str]:
    """BPF_PROG_LOAD as a sleepable task iterator; returns (fd, verifier log)."""
    log = ctypes.create_string_buffer(1 << 22)
    lic = ctypes.create_string_buffer(b"GPL")
    prog = ctypes.create_string_buffer(insns, len(insns))
    attr = bytearray(128)
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_TRACING, len(insns) // 8,
                     ctypes.addressof(prog), ctypes.addressof(lic), log_level, len(log),
                     ctypes.addressof(log))
    struct.pack_into("<I", attr, 44, BPF_F_SLEEPABLE)
    attr[48:48 + len(name)] = name
    struct.pack_into("<I", attr, 68, BPF_TRACE_ITER)
    struct.pack_into("<I", attr, 108, kernel_btf().iter_task_func_id)
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


def verifier_stats(insns: bytes) -> str:
    """The verifier's closing statistics for a program (for benchmarks and debugging)."""
    fd, log = _prog_load(insns, 4)
    os.close(fd)
    return log.strip().splitlines()[-1]


_TRIAL_SOURCE = b"""
struct bpf_iter_meta { void *seq; u64 session_id; u64 seq_num; };
struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; };
struct bpf_iter_num { u64 opaque; } __attribute__((aligned(8)));
static int (*iter_new)(struct bpf_iter_num *it, int start, int end) = (void *)0x7ff0001;
static int *(*iter_next)(struct bpf_iter_num *it) = (void *)0x7ff0002;
static void (*iter_destroy)(struct bpf_iter_num *it) = (void *)0x7ff0003;
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
