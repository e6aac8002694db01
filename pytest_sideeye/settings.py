"""Every SIDEEYE_* environment variable, declared once, read in one place and validated.

The engine reads the settings at the start of each snapshot (`current()`), so a test or a
user may change them between snapshots; nothing reads them at import time. A bad value is
one line naming the variable and what it takes (pytest-timeout's style), never a traceback.

| variable                  | default                         | meaning |
| SIDEEYE_CAPTURE_PAUSE_MS  | 10                              | pause time variable capture may take per process |
| SIDEEYE_HOOK_BUDGET_US    | 900                             | how long the stop hook may walk (interrupts off) |
| SIDEEYE_STOP_HOOK         | 1                               | 0: the iterator does all the reading |
| SIDEEYE_COLLECT_THREADS   | CPUs available                  | threads walking goroutines in the pause (at most 4) |
| SIDEEYE_BPF_CAPTURE       | 1                               | 0: every captured frame goes through the Python path |
| SIDEEYE_LINKS             | 1                               | 0: no built-in links (no socket reads in the pause)  |
| SIDEEYE_MAX_PAUSE_S       | 2.0                             | the guardian resumes a target paused longer than this |
| SIDEEYE_CACHE             | ~/.cache/sideeye                | root of the disk caches below |
| SIDEEYE_BINARY_CACHE      | $SIDEEYE_CACHE/binaries         | binary analysis by build id |
| SIDEEYE_DWARF_CACHE       | $SIDEEYE_CACHE/dwarf            | DWARF type indexes by build id |
| SIDEEYE_BPF_CACHE         | $SIDEEYE_CACHE/bpf              | compiled BPF programs by layout |
| SIDEEYE_BUILD_CACHE       | $SIDEEYE_CACHE/builds           | Go builds of go_service sources |
| SIDEEYE_TOOLCHAINS        | /opt/sideeye/toolchains         | Go toolchains installed by scripts/setup.sh |
| SIDEEYE_GO_VERSION        | 1.24.11                         | the Go version go_service builds with |
| SIDEEYE_BPF_PINS          | /sys/fs/bpf/sideeye             | where loaded programs are pinned (0: nowhere) |
| SIDEEYE_AGENT_SOCKET      | /run/sideeye/agent.sock         | where the sideeye agent listens (and clients ask) |
| SIDEEYE_AGENT_URL         | (none)                          | https://HOST:PORT of a remote agent (instead of the socket); by default, when DOCKER_HOST names another machine (tcp:// or ssh://), https://THAT_HOST:SIDEEYE_AGENT_PORT |
| SIDEEYE_AGENT_PORT        | 7443                            | the remote agent's port when its address comes from DOCKER_HOST |
| SIDEEYE_AGENT_CERT        | (none)                          | a client certificate (PEM) for the remote agent, instead of its token |
| SIDEEYE_AGENT_KEY         | (the certificate file)          | that certificate's private key |
| SIDEEYE_AGENT_TOKEN_FILE  | (none)                          | the remote agent's token, for SIDEEYE_AGENT_URL |
| SIDEEYE_AGENT_CA          | (system CAs)                    | the CA file that signed the remote agent's certificate |
| SIDEEYE_AGENT             | 1                               | 0: never ask the agent, snapshot in this process |
"""
from __future__ import annotations

import ipaddress
import os
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from pytest_sideeye.errors import SideeyeError


class SettingError(SideeyeError):
    pass


def _number(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} (from the environment) is not a number") from None
    if value != value or value < minimum:  # NaN or below the floor
        raise SettingError(f"{name}={raw!r} (from the environment) must be a number >= {minimum:g}")
    return value


def _switch(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={raw!r} (from the environment) takes 1 or 0")


def _folder(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser() if raw else default


def cache_root() -> Path:
    return _folder("SIDEEYE_CACHE", Path.home() / ".cache" / "sideeye")


# Each disk cache: its own variable, else a folder of SIDEEYE_CACHE.
CACHES = {"binary": ("SIDEEYE_BINARY_CACHE", "binaries"),
          "dwarf": ("SIDEEYE_DWARF_CACHE", "dwarf"),
          "bpf": ("SIDEEYE_BPF_CACHE", "bpf")}


def cache_dir(kind: str) -> Path:
    variable, folder = CACHES[kind]
    return _folder(variable, cache_root() / folder)


def build_cache() -> Path:
    return _folder("SIDEEYE_BUILD_CACHE", cache_root() / "builds")


def toolchains_dir() -> Path:
    return _folder("SIDEEYE_TOOLCHAINS", Path("/opt/sideeye/toolchains"))


def default_go() -> str:
    return os.environ.get("SIDEEYE_GO_VERSION") or "1.24.11"


def bpf_pins() -> Path | None:
    """The bpffs folder of pinned programs, or None when pinning is off."""
    raw = os.environ.get("SIDEEYE_BPF_PINS")
    if raw is not None and raw.strip().lower() in ("0", "off", "no", "false"):
        return None
    return Path(raw).expanduser() if raw and raw.strip() else Path("/sys/fs/bpf/sideeye")


def agent_socket() -> Path:
    return _folder("SIDEEYE_AGENT_SOCKET", Path("/run/sideeye/agent.sock"))


def agent_url() -> str | None:
    """The remote agent to ask: SIDEEYE_AGENT_URL, else the one on the machine DOCKER_HOST
    names when that is another machine: its containers' processes are there, and nothing
    on this machine could read them."""
    explicit = os.environ.get("SIDEEYE_AGENT_URL")
    if explicit:
        return explicit
    host = docker_remote_host()
    if host is None:
        return None
    return f"https://{f'[{host}]' if ':' in host else host}:{agent_port()}"


def agent_port() -> int:
    return int(_number("SIDEEYE_AGENT_PORT", 7443.0, minimum=1))


def docker_remote_host() -> str | None:
    """The host of DOCKER_HOST when it names another machine (tcp:// or ssh://, not a
    loopback address); None for the local socket."""
    raw = os.environ.get("DOCKER_HOST") or ""
    try:
        u = urllib.parse.urlsplit(raw)
        host = u.hostname
    except ValueError:
        return None
    if u.scheme not in ("tcp", "ssh") or not host or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass              # a name: another machine
    return host


def agent_token_file() -> Path | None:
    raw = os.environ.get("SIDEEYE_AGENT_TOKEN_FILE")
    return Path(raw).expanduser() if raw else None


def agent_client_cert() -> tuple[str, str | None] | None:
    """(certificate, key) the client presents to a remote agent, if set."""
    cert = os.environ.get("SIDEEYE_AGENT_CERT")
    return (cert, os.environ.get("SIDEEYE_AGENT_KEY") or None) if cert else None


def agent_ca() -> str | None:
    return os.environ.get("SIDEEYE_AGENT_CA") or None


def use_agent() -> bool:
    return _switch("SIDEEYE_AGENT", default=True)


def max_pause_s() -> float:
    return _number("SIDEEYE_MAX_PAUSE_S", 2.0, minimum=0.01)


class EngineSettings(NamedTuple):
    """What one snapshot runs with."""
    capture_pause_s: float
    hook_budget_ns: int
    stop_hook: bool
    bpf_capture: bool
    links: bool
    collect_threads: int    # threads walking goroutines in the pause (1: the main one only)


def current() -> EngineSettings:
    """The engine's settings as the environment says now (read once per snapshot). The
    capture budget must fit in the guardian's hard limit on a pause: past it the guardian
    resumes the target and the capture would read a running process."""
    capture_pause_s = _number("SIDEEYE_CAPTURE_PAUSE_MS", 10.0) / 1000
    if capture_pause_s >= max_pause_s() / 2:
        raise SettingError(f"SIDEEYE_CAPTURE_PAUSE_MS={capture_pause_s * 1000:g} (from the "
                           "environment) must stay under half of SIDEEYE_MAX_PAUSE_S "
                           f"({max_pause_s():g} s), the longest any pause may last")
    return EngineSettings(
        capture_pause_s=capture_pause_s,
        # The hook runs inside sched_switch with interrupts off: its longest stretch must
        # stay under 1 ms. It checks the budget before claiming each 64 goroutines (~0.07
        # ms of walking), hence 0.9 ms.
        hook_budget_ns=int(_number("SIDEEYE_HOOK_BUDGET_US", 900.0) * 1000),
        stop_hook=_switch("SIDEEYE_STOP_HOOK", default=True),
        bpf_capture=_switch("SIDEEYE_BPF_CAPTURE", default=True),
        links=_switch("SIDEEYE_LINKS", default=True),
        collect_threads=int(_number("SIDEEYE_COLLECT_THREADS", _cpus(), minimum=1)),
    )


def _cpus() -> int:
    """CPUs this process may run on: the default number of collecting threads (the
    target is stopped, so its CPUs are free for the pause's few milliseconds)."""
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1
