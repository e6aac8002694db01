"""The container side of Go services under test: the Service handle, networks, starting,
readiness, host PIDs, the registry the plugin reads (`services_for(nodeid)`), cleanup, and
resolving any container to the Go processes inside it (`container_targets`, for
`sideeye snapshot --container`).

Lifecycle: image (images.py) -> container created on the scope's own network, connected to
the networks of enclosing scopes -> started -> readiness checked from the host -> yielded
-> removed by a finalizer. Containers and networks carry labels naming the session and its
owning process, so a run killed with SIGKILL is swept by the next one.
"""
from __future__ import annotations

import atexit
import hashlib
import http.client
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pytest_sideeye.engine import Target
from pytest_sideeye.errors import DockerUnavailable, SideeyeError
from pytest_sideeye.services import images
from pytest_sideeye.snapshot import Container

LABEL = "pytest-sideeye"
L_SESSION = "pytest-sideeye.session"
L_TEST = "pytest-sideeye.test"
L_SERVICE = "pytest-sideeye.service"
L_PID = "pytest-sideeye.pid"
L_PID_START = "pytest-sideeye.pid-start"
L_BOOT = "pytest-sideeye.boot"
L_PIDNS = "pytest-sideeye.pidns"

SESSION_ID = uuid.uuid4().hex[:12]
POLL_S = 0.05
SCOPES = ("function", "class", "module", "package", "session")


# --- the owner of labelled objects: this process, identified so PID reuse is harmless ---

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: with the PID and the boot id it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {LABEL: "1", L_SESSION: SESSION_ID, L_PID: str(pid),
            L_PID_START: _start_time(pid) or "", L_BOOT: _boot_id(),
            L_PIDNS: _pid_namespace()}


def owner_alive(labels: dict[str, str]) -> bool:
    if labels.get(L_BOOT) and labels[L_BOOT] != _boot_id():
        return False
    if labels.get(L_PIDNS) and labels[L_PIDNS] != _pid_namespace():
        # A run in another PID namespace (a CI job sharing the Docker socket): its PIDs
        # mean nothing here, so it is presumed alive.
        return True
    try:
        pid = int(labels.get(L_PID, ""))
    except ValueError:
        return False  # unowned labelled leftovers can only come from a broken run
    start = _start_time(pid)
    return start is not None and start == labels.get(L_PID_START, start)


# --- what the user declared ---

@dataclass(frozen=True)
class ServiceSpec:
    name: str
    source: Path | None = None
    image: str | None = None
    dockerfile: Path | None = None
    ports: tuple[int, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    scope: str = "function"
    ready_http: tuple[int, str] | None = None
    ready_tcp: tuple[int, ...] = ()
    ready_log: str | None = None
    ready_timeout: float = 30
    go_version: str | None = None
    networks: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    gopath: str | None = None

    def image_tag(self) -> str:
        if self.source is not None:
            return images.go_image(self.name, self.source, self.go_version, self.gopath)
        if self.dockerfile is not None:
            return images.dockerfile_image(self.name, self.dockerfile)
        return images.prebuilt_image(self.name, self.image)



# --- the handle a test gets ---

class Service:
    """A running Go service: its ports, host PIDs, logs and Docker container."""

    def __init__(self, spec: ServiceSpec, container, image: str, scope_nodeid: str,
                 session: Any = None):
        self.spec = spec
        self.name = spec.name
        self.scope = spec.scope
        self.scope_nodeid = scope_nodeid   # the test, module, ... that owns the service
        self.image = image
        self.container = container
        self._session = session
        self._host_ports: dict[int, int] = {}
        self._final_logs: str | None = None
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<Service {self.name} {self.container.short_id} {state}>"

    def host_port(self, port: int) -> int:
        if port not in self._host_ports:
            self._host_ports.update(_published_ports(self.container))
        if port not in self._host_ports:
            raise SideeyeError(f"service {self.name!r}: port {port} is not published "
                               f"(published: {sorted(self.spec.ports) or 'none'})")
        return self._host_ports[port]

    def host_ports(self) -> set[int]:
        """Every host port the container publishes."""
        return set(_published_ports(self.container).values())

    def url(self, port: int, path: str = "/") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return f"http://127.0.0.1:{self.host_port(port)}{path}"

    @property
    def pids(self) -> list[int]:
        """Host PIDs of the Go processes in the container, its init first."""
        if self._stopped:
            return []
        root = _container_pid(self.container)
        if not root:
            return []
        return [p for p in _pids_in_namespace_of(root) if _is_go_executable(p)]

    def logs(self) -> str:
        if self._final_logs is not None:
            return self._final_logs
        return _container_logs(self.container)

    def container_info(self) -> Container:
        return Container(id=self.container.id, name=self.container.name, image=self.image)

    def ip_address(self) -> str | None:
        """The container's address on its scope's network (reachable from the host)."""
        self.container.reload()
        nets = self.container.attrs["NetworkSettings"]["Networks"] or {}
        own = _networks.name_for(self.scope_nodeid)
        entry = nets.get(own) or next(iter(nets.values()), {})
        return entry.get("IPAddress") or None

    def stop(self) -> None:
        """Remove the container (keeping its logs for the report); safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        _registry.remove(self)
        try:
            self._final_logs = _container_logs(self.container)
        except Exception:
            self._final_logs = ""
        _remove_container(self.container)
        _networks.release(self.scope_nodeid)


# --- the registry the plugin reads ---

class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[Service] = []
        self._items: dict[str, Any] = {}

    def add(self, svc: Service) -> None:
        with self._lock:
            self._live.append(svc)

    def remove(self, svc: Service) -> None:
        with self._lock:
            if svc in self._live:
                self._live.remove(svc)

    def live(self) -> list[Service]:
        with self._lock:
            return list(self._live)

    def for_test(self, nodeid: str) -> list[Service]:
        return [s for s in self.live() if self._used_by(s, nodeid)]

    def _used_by(self, svc: Service, nodeid: str) -> bool:
        if svc.scope == "function":
            return svc.scope_nodeid == nodeid
        item = self._item(svc._session, nodeid)
        if item is not None:
            return svc.name in getattr(item, "fixturenames", ())
        # Without the collected item, an enclosing scope is the best evidence of use.
        return _encloses(svc.scope_nodeid, nodeid)

    def _item(self, session: Any, nodeid: str):
        if nodeid not in self._items and session is not None:
            for item in getattr(session, "items", ()):
                self._items.setdefault(item.nodeid, item)
        return self._items.get(nodeid)


def _encloses(scope_nodeid: str, nodeid: str) -> bool:
    if scope_nodeid == "":
        return True
    return nodeid == scope_nodeid or nodeid.startswith(scope_nodeid.rstrip("/") + "/") \
        or nodeid.startswith(scope_nodeid + "::")


_registry = _Registry()


def services_for(nodeid: str) -> list[Service]:
    """The services alive for test `nodeid`: its own, and wider-scoped ones it uses."""
    return _registry.for_test(nodeid)


def live_services() -> list[Service]:
    return _registry.live()


# --- networks: one per scope instance, so services reach each other by name ---

class _Networks:
    """A user-defined bridge per scope node (test, module, session...). A service joins its
    own scope's network and every live one of an enclosing scope: a function-scoped service
    can then call a module-scoped one by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nets: dict[str, list] = {}  # scope nodeid -> [network, refcount]
        self._counter = itertools.count(1)

    def name_for(self, scope_nodeid: str) -> str | None:
        entry = self._nets.get(scope_nodeid)
        return entry[0].name if entry else None

    def acquire(self, scope_nodeid: str, test_label: str):
        with self._lock:
            entry = self._nets.get(scope_nodeid)
            if entry is None:
                digest = hashlib.sha1(scope_nodeid.encode()).hexdigest()[:6]
                name = f"sideeye-{SESSION_ID}-{next(self._counter)}-{digest}"
                net = images.docker_client().networks.create(
                    name, driver="bridge", check_duplicate=True,
                    labels={**owner_labels(), L_TEST: test_label})
                entry = self._nets[scope_nodeid] = [net, 0]
            entry[1] += 1
            return entry[0]

    def enclosing(self, chain_nodeids: Sequence[str], own: str) -> list:
        with self._lock:
            return [self._nets[n][0] for n in chain_nodeids if n != own and n in self._nets]

    def release(self, scope_nodeid: str) -> None:
        with self._lock:
            entry = self._nets.get(scope_nodeid)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._nets[scope_nodeid]
        _remove_network(entry[0])


_networks = _Networks()


# --- starting a service ---

_counter = itertools.count(1)
_started_once = threading.Event()

def start(spec: ServiceSpec, image: str, scope_nodeid: str, chain: Sequence[str] = (),
          session: Any = None) -> Service:
    """Create and start the container (not waiting for readiness); the caller must stop()
    the returned Service."""
    client = images.docker_client()
    label = scope_nodeid or "<session>"
    net = _networks.acquire(scope_nodeid, label)
    aliases = [spec.name, *spec.aliases]
    api = client.api
    try:
        host_config = api.create_host_config(
            port_bindings={p: ("127.0.0.1",) for p in spec.ports}, init=False)
        created = api.create_container(
            image, command=list(spec.args) or None, name=_container_name(spec.name),
            hostname=images.exe_name(spec.name)[:63], environment=dict(spec.env),
            ports=list(spec.ports), host_config=host_config,
            labels={**owner_labels(), L_TEST: label, L_SERVICE: spec.name,
                    **dict(spec.labels)},
            networking_config=api.create_networking_config(
                {net.name: api.create_endpoint_config(aliases=aliases)}))
    except Exception:
        _networks.release(scope_nodeid)
        raise
    container = client.containers.get(created["Id"])
    svc = Service(spec, container, image, scope_nodeid, session)
    _registry.add(svc)
    try:
        for other in _networks.enclosing(chain, scope_nodeid):
            api.connect_container_to_network(container.id, other.id, aliases=aliases)
        for extra in spec.networks:
            api.connect_container_to_network(container.id, extra, aliases=aliases)
        container.start()
    except Exception:
        svc.stop()
        raise
    return svc


def _container_name(name: str) -> str:
    return f"sideeye-{images.exe_name(name)}-{SESSION_ID[:6]}-{next(_counter)}"


def once_per_process() -> None:
    """First service of this process: sweep what killed runs left, arm cleanup."""
    if _started_once.is_set():
        return
    sweep_stale()  # raises DockerUnavailable first when there is no daemon
    _started_once.set()
    atexit.register(cleanup_session)
    _install_signal_cleanup()
    _start_reaper()


# --- readiness, checked from the host: scratch images have no shell to exec ---

@dataclass
class _Check:
    describe: str
    probe: Callable[[], bool]
    last_error: str = field(default="")


def wait_ready(svc: Service) -> str | None:
    """None when every readiness check passes; else the one-paragraph reason (exit code or
    timeout, with the container's logs)."""
    checks = _checks_for(svc)
    deadline = time.monotonic() + svc.spec.ready_timeout
    while True:
        exited = _exit_code(svc.container)
        if exited is not None:
            return (f"service {svc.name!r} exited with code {exited} before it was ready; "
                    f"its logs:\n{_tail(svc.logs())}")
        checks = [c for c in checks if not _passes(c)]
        if not checks:
            return None
        if time.monotonic() >= deadline:
            waiting = "; ".join(c.describe + (f" ({c.last_error})" if c.last_error else "")
                                for c in checks)
            return (f"service {svc.name!r} not ready after {svc.spec.ready_timeout:g}s: "
                    f"waiting for {waiting}; its logs:\n{_tail(svc.logs())}")
        time.sleep(POLL_S)


def _checks_for(svc: Service) -> list[_Check]:
    spec = svc.spec
    checks: list[_Check] = []
    tcp = spec.ready_tcp
    if not tcp and spec.ready_http is None and spec.ready_log is None:
        tcp = spec.ports
    for port in tcp:
        checks.append(_Check(f"TCP port {port}", lambda p=port: _tcp_ready(svc, p)))
    if spec.ready_http is not None:
        port, path = spec.ready_http
        checks.append(_Check(f"HTTP {path} on port {port} to answer < 500",
                             lambda: _http_ready(svc, port, path)))
    if spec.ready_log is not None:
        pattern = re.compile(spec.ready_log, re.MULTILINE)
        checks.append(_Check(f"a log line matching {spec.ready_log!r}",
                             lambda: pattern.search(svc.logs()) is not None))
    return checks


def _passes(check: _Check) -> bool:
    try:
        return bool(check.probe())
    except Exception as e:  # noqa: BLE001 - a failed probe only means "not yet"
        check.last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        return False


def _tcp_ready(svc: Service, port: int) -> bool:
    # The container's own address, not the published port: docker-proxy accepts on the
    # host port before anything listens inside.
    ip = svc.ip_address()
    if not ip:
        return False
    with socket.create_connection((ip, port), timeout=1):
        return True


def _http_ready(svc: Service, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", svc.host_port(port), timeout=2)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    finally:
        conn.close()
    if status >= 500:
        raise SideeyeError(f"last answer {status}")
    return True


def _exit_code(container) -> int | None:
    container.reload()
    state = container.attrs["State"]
    if state.get("Running") or state.get("Status") in ("created", "restarting"):
        return None
    return int(state.get("ExitCode", -1))


def _tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip("\n").splitlines()
    cut = len(kept) - lines
    return ("\n".join(([f"... ({cut} earlier lines)"] if cut > 0 else []) + kept[-lines:])
            or "(no output)")


def _published_ports(container) -> dict[int, int]:
    container.reload()
    ports = container.attrs["NetworkSettings"].get("Ports") or {}
    found = {}
    for key, bindings in ports.items():
        if bindings and key.endswith("/tcp"):
            found[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
    return found


def _container_logs(container) -> str:
    return container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")


def _container_pid(container) -> int:
    container.reload()
    return int(container.attrs["State"].get("Pid") or 0)


# --- host PIDs and the Go check ---

def _pids_in_namespace_of(root: int) -> list[int]:
    """Every host PID sharing the container init's PID namespace (children and execs)."""
    try:
        ns = os.readlink(f"/proc/{root}/ns/pid")
    except OSError:
        return []
    pids = [root]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == root:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                pids.append(int(entry))
        except OSError:
            continue
    return [root] + sorted(pids[1:])


_go_exe_cache: dict[tuple[int, int, int, int], bool] = {}
# How long a container's `runc init` may take to become the program it starts.
RUNTIME_INIT_WAIT_S = 2.0


def _is_runtime_init(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(64).startswith(b"runc\0init\0")
    except OSError:
        return False


def _past_runtime_init(pid: int, wait_s: float = RUNTIME_INIT_WAIT_S) -> bool:
    """False if `pid` is still the container runtime's own `runc init` after `wait_s`.
    A container just started (or a `docker exec` just begun) is `runc init` until it
    execs the image's program, and runc is a Go binary itself (Debian's: Go 1.19): a
    snapshot right after `containers.run()` returned took runc for the service ("Go 1.19
    is not supported")."""
    deadline = time.monotonic() + wait_s
    while _is_runtime_init(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _is_go_executable(pid: int) -> bool:
    """Go binaries carry a .go.buildinfo section (or at least .gopclntab); only the section
    headers are read, cached per file. The container runtime's `runc init` is not one of
    the container's programs: waited for until it becomes one (_past_runtime_init)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    if not _past_runtime_init(pid):
        return False
    path = f"/proc/{pid}/exe"
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino, st.st_size, int(st.st_mtime))
    if key not in _go_exe_cache:
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                names = {s.name for s in elf.iter_sections()}
            _go_exe_cache[key] = bool(names & {".go.buildinfo", ".gopclntab"})
        except (OSError, ELFError):
            return False
    return _go_exe_cache[key]


# --- cleanup: finalizers first; atexit, signals and the reaper as backstops; the sweep
# --- at the next start for whatever still escaped (the Docker daemon was down...) ---

def _remove_container(container) -> None:
    import docker

    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if "already in progress" not in str(e):
            raise


def _remove_network(net) -> None:
    import docker

    try:
        net.reload()
        for c in net.containers:  # a stray endpoint would make the removal fail
            try:
                net.disconnect(c, force=True)
            except docker.errors.APIError:
                pass
        net.remove()
    except docker.errors.NotFound:
        pass


def cleanup_session(session_id: str = SESSION_ID) -> int:
    """Remove every container and network labelled with this session; returns how many
    containers went. Uses a fresh client: it may run from atexit or a signal handler."""
    try:
        client = images.connect(timeout=20)
    except SideeyeError:
        return 0
    selector = {"label": f"{L_SESSION}={session_id}"}
    removed = 0
    for c in client.containers.list(all=True, filters=selector):
        _remove_container(c)
        removed += 1
    for n in client.networks.list(filters=selector):
        _remove_network(n)
    for svc in _registry.live():
        svc._stopped = True
        _registry.remove(svc)
    return removed


def sweep_stale() -> list[str]:
    """Remove labelled containers and networks whose owning process is gone (a run killed
    with SIGKILL, a crashed worker); returns the removed containers' names. Call once at
    session start (the first go_service of a process also does)."""
    client = images.docker_client()
    removed = []
    # By the session label that only start() writes: a container of someone else's made
    # from a go_service image inherits the image's LABEL pytest-sideeye=1, and is not ours.
    for c in client.containers.list(all=True, filters={"label": [f"{LABEL}=1", L_SESSION]}):
        if not owner_alive(c.labels):
            _remove_container(c)
            removed.append(c.name)
    for n in client.networks.list(filters={"label": [f"{LABEL}=1", L_SESSION]}):
        if not owner_alive(n.attrs.get("Labels") or {}):
            _remove_network(n)
    return removed


_previous_handlers: dict[int, Any] = {}


def _install_signal_cleanup() -> None:
    """On SIGTERM/SIGHUP, remove this session's containers, then let the signal do what it
    would have done. Ctrl-C needs nothing: pytest runs the finalizers on KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, None):
            continue
        _previous_handlers[sig] = previous
        signal.signal(sig, _on_signal)


def _on_signal(signum: int, frame) -> None:
    try:
        cleanup_session()
    finally:
        previous = _previous_handlers.get(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)


_reaper: subprocess.Popen | None = None


def _start_reaper() -> None:
    """A small process in its own session holding the read end of a pipe: when this process
    ends in any way (os._exit from pytest-timeout's thread method, SIGKILL, a crash) the
    pipe closes and the reaper removes this session's containers and networks."""
    global _reaper
    code = "from pytest_sideeye.services.containers import reap_main; reap_main()"
    try:
        _reaper = subprocess.Popen([sys.executable, "-c", code, SESSION_ID],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        _reaper = None  # atexit, signals and the next sweep remain


def reap_main() -> None:
    """Entry point of the reaper: wait for EOF on stdin, then clean the session up."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the owner's end of the pipe ends it
    session_id = sys.argv[1]
    while sys.stdin.buffer.read(4096):
        pass
    cleanup_session(session_id)


# --- any container: the Go processes inside it ---

def container_targets(name_or_id: str):
    container = _docker_container(name_or_id)
    root = container.attrs.get("State", {}).get("Pid") or 0
    if not container.attrs.get("State", {}).get("Running") or not root:
        raise SideeyeError(f"container {name_or_id} is not running")
    info = Container(id=container.id, name=container.name,
                     image=(container.image.tags or [container.image.id])[0])
    pids = [p for p in _pids_in_namespace_of(root) if _is_go_executable(p)]
    if not pids:
        raise SideeyeError(f"container {name_or_id} runs no Go program")
    return [Target(pid, container=info) for pid in pids]


def _docker_container(name_or_id: str):
    from docker.errors import DockerException, NotFound

    try:
        return images.docker_client().containers.get(name_or_id)
    except NotFound:
        raise SideeyeError(f"no container named or with id {name_or_id!r}") from None
    except DockerException as e:
        raise DockerUnavailable(f"Docker failed to look up {name_or_id!r}: "
                                f"{str(e).splitlines()[0][:160]}") from None
