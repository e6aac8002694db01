"""Every SIDEEYE_* environment variable, declared once, read in one place and validated.

The engine reads the settings at the start of each snapshot (`current()`), so a test or a
user may change them between snapshots; nothing reads them at import time. A bad value is
one line naming the variable and what it takes (pytest-timeout's style), never a traceback.
The per-snapshot ones (PER_SNAPSHOT: the first eight below) that a caller sets travel with
its request to the agent, which applies each within its own value (docs/agent.md), but
SIDEEYE_TOGETHER: a choice of how to stop, not a limit, so the caller's applies.

| variable                  | default                         | meaning |
| SIDEEYE_CAPTURE_PAUSE_MS  | 10                              | pause time variable capture may take per process |
| SIDEEYE_HOOK_BUDGET_US    | 900                             | how long the stop hook may walk (interrupts off) |
| SIDEEYE_STOP_HOOK         | 1                               | 0: the iterator does all the reading |
| SIDEEYE_COLLECT_THREADS   | CPUs available                  | threads walking goroutines in the pause (at most 4) |
| SIDEEYE_TOGETHER          | 0                               | 1: stop every process of a snapshot first, then collect and resume each (one instant; longer pauses) |
| SIDEEYE_BPF_CAPTURE       | 1                               | 0: every captured frame goes through the Python path |
| SIDEEYE_LINKS             | 1                               | 0: no built-in links (no socket reads in the pause)  |
| SIDEEYE_PREREAD           | 1                               | 0: every goroutine walked in the pause (1: walked before it, only their headers checked in it) |
| SIDEEYE_PREREAD_MAX_MS    | 500                             | a pre-read longer than this: the full walk in the pause instead |
| SIDEEYE_MAX_PAUSE_S       | 2.0                             | the guardian resumes a target paused longer than this |
| SIDEEYE_MEMO_MB           | 192                             | memory a long-lived process (the agent) keeps about the binaries it saw; least recently used dropped first (memo.py) |
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
| SIDEEYE_CONTAINERS        | (none)                          | container selectors for the plugin, comma or space separated (like --sideeye-containers) |
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


def bug_reports_dir() -> Path:
    """Where an unexpected error's traceback is written (bugs.py): SIDEEYE_CACHE/bugs."""
    return cache_root() / "bugs"


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


def containers() -> str:
    """Container selectors for the plugin (checked there: plugin/targets.py)."""
    return os.environ.get("SIDEEYE_CONTAINERS", "")


def max_pause_s() -> float:
    return _number("SIDEEYE_MAX_PAUSE_S", 2.0, minimum=0.01)


def memo_bytes() -> int:
    """The byte budget of what a process keeps in memory per binary (memo.py): past it,
    the least recently used binaries' analyses are dropped (read again from disk if seen
    again). Read at each store: a long-lived process follows a change."""
    return int(_number("SIDEEYE_MEMO_MB", 192.0) * 2**20)


class EngineSettings(NamedTuple):
    """What one snapshot runs with."""
    capture_pause_s: float
    hook_budget_ns: int
    stop_hook: bool
    bpf_capture: bool
    links: bool
    collect_threads: int    # threads walking goroutines in the pause (1: the main one only)
    together: bool = False  # every process stopped before the first is collected
    # The pre-read (engine/collect.py): walk every goroutine with the target running, and in
    # the pause check their headers only, walking again those that changed; the full walk
    # in the pause when the pre-read took longer than preread_max_ns. preread_check
    # "no-seq" leaves trackingSeq out of the check: only for the ABA test, to see it fail.
    preread: bool = True
    preread_max_ns: int = 500_000_000
    preread_check: str = "header"

    def recorded(self) -> dict:
        """Each setting by its variable, in the variable's units: the form a snapshot
        records (`settings`) and a request to the agent carries."""
        return {k.variable: k.of(self) for k in PER_SNAPSHOT}


class Knob(NamedTuple):
    """One per-snapshot setting: its variable, the EngineSettings field it fills, and how.
    A value in the variable's units times `scale` is the field's. A knob is a limit for
    the agent (unless limit=False): a caller may ask for less than the agent's own value,
    never more (for a switch, 0 is less)."""
    variable: str
    field: str
    kind: type               # bool: a switch (1 or 0); int or float: a number
    default: object          # a value, or a function giving the machine's default
    scale: float = 1.0
    minimum: float = 0.0
    limit: bool = True       # False: a choice the caller makes, whatever the agent's value

    def of(self, cfg: EngineSettings) -> float | int | bool:
        """This setting's value in cfg, in the variable's units."""
        value = getattr(cfg, self.field)
        if self.kind is bool:
            return value
        unscaled = round(value / self.scale, 9)
        return int(unscaled) if unscaled == int(unscaled) else unscaled

    def field_value(self, value: float | bool) -> float | int | bool:
        if self.kind is bool:
            return bool(value)
        return self.kind(value * self.scale)

    def from_environment(self) -> float | int | bool:
        default = self.default() if callable(self.default) else self.default
        if self.kind is bool:
            return _switch(self.variable, default=default)
        return _number(self.variable, default, minimum=self.minimum)


# The per-snapshot settings, declared once: the engine reads them (current()), a client
# sends those its caller set to the agent (requested()), the agent checks them
# (from_request()) and keeps them within its own (within_limits()).
PER_SNAPSHOT = (
    Knob("SIDEEYE_CAPTURE_PAUSE_MS", "capture_pause_s", float, 10.0, scale=1e-3),
    # The hook runs inside sched_switch with interrupts off: its longest stretch must
    # stay under 1 ms. It checks the budget before claiming each 64 goroutines (~0.07
    # ms of walking), hence 0.9 ms.
    Knob("SIDEEYE_HOOK_BUDGET_US", "hook_budget_ns", int, 900.0, scale=1e3),
    Knob("SIDEEYE_STOP_HOOK", "stop_hook", bool, default=True),
    Knob("SIDEEYE_BPF_CAPTURE", "bpf_capture", bool, default=True),
    Knob("SIDEEYE_LINKS", "links", bool, default=True),
    Knob("SIDEEYE_COLLECT_THREADS", "collect_threads", int, lambda: _cpus(), minimum=1),
    # The pre-read (engine/collect.py): the goroutines walked while the target runs, only
    # their headers checked in the pause. 0: everything walked in the pause.
    Knob("SIDEEYE_PREREAD", "preread", bool, default=True),
    # Stopping every process before collecting any: a consistent cut, paid for in pause
    # length (each process waits for the collection of those before it), still bounded by
    # the agent's SIDEEYE_MAX_PAUSE_S through its guardian: the caller's choice.
    Knob("SIDEEYE_TOGETHER", "together", bool, default=False, limit=False),
)


def current() -> EngineSettings:
    """The engine's settings as the environment says now (read once per snapshot). The
    capture budget must fit in the guardian's hard limit on a pause: past it the guardian
    resumes the target and the capture would read a running process."""
    cfg = EngineSettings(**{k.field: k.field_value(k.from_environment()) for k in PER_SNAPSHOT})
    cfg = cfg._replace(preread_max_ns=int(_number("SIDEEYE_PREREAD_MAX_MS", 500.0) * 1e6))
    if cfg.capture_pause_s >= max_pause_s() / 2:
        raise SettingError(f"SIDEEYE_CAPTURE_PAUSE_MS={cfg.capture_pause_s * 1000:g} (from the "
                           "environment) must stay under half of SIDEEYE_MAX_PAUSE_S "
                           f"({max_pause_s():g} s), the longest any pause may last")
    return cfg


def requested() -> dict:
    """The per-snapshot settings this process's environment sets, every one checked
    (SettingError), by variable: what a request to the agent carries. Those left unset
    are the agent's own."""
    cfg = current()
    return {k.variable: k.of(cfg) for k in PER_SNAPSHOT
            if (os.environ.get(k.variable) or "").strip()}


def from_request(doc) -> dict:
    """A request's settings checked as the environment's are: SettingError naming the
    first bad one, in one line."""
    if not isinstance(doc, dict):
        raise SettingError("'settings' must be an object of SIDEEYE_* variables")
    known = {k.variable: k for k in PER_SNAPSHOT}
    for name, value in doc.items():
        knob = known.get(name)
        if knob is None:
            raise SettingError(f"{str(name)[:60]!r} (from the request) is not a per-snapshot "
                               f"setting ({', '.join(known)})")
        if knob.kind is bool:
            if not isinstance(value, bool):
                raise SettingError(f"{name}={str(value)[:20]!r} (from the request) takes "
                                   "true or false")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value != value or value < knob.minimum or value == float("inf"):
            raise SettingError(f"{name}={str(value)[:20]!r} (from the request) must be a "
                               f"number >= {knob.minimum:g}")
    return dict(doc)


def within_limits(asked: dict, limits: EngineSettings) -> tuple[EngineSettings, list[str]]:
    """The settings a caller asked for (from_request), each kept within the agent's own
    (`limits`, from its environment): at most the agent's value, but for a knob that is no
    limit (SIDEEYE_TOGETHER). Returns them and a note for each one lowered."""
    fields, notes = {}, []
    for k in PER_SNAPSHOT:
        mine = k.of(limits)
        value = asked.get(k.variable, mine)
        if k.limit and value > mine:
            notes.append(f"settings: {k.variable}={_shown(value)} asked, the agent's limit "
                         f"{_shown(mine)} applied")
            value = mine
        fields[k.field] = k.field_value(value)
    return EngineSettings(**fields), notes


def _shown(value) -> str:
    return str(int(value)) if isinstance(value, bool) else f"{value:g}"


def _cpus() -> int:
    """CPUs this process may run on: the default number of collecting threads (the
    target is stopped, so its CPUs are free for the pause's few milliseconds)."""
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1
