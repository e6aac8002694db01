"""`sideeye agent`: one long-lived privileged process per machine serving snapshot
requests on a Unix socket (protocol.py), deciding by the caller's kernel credentials
(authorize.py).

Why a long-lived process: the engine keeps each runtime layout's loaded programs, the
binaries' analysis and its resume guardian for the life of its process, so only the
first snapshot of a layout pays the kernel verifier.

Shape: an acceptor thread hands each connection to a short-lived reader thread (at most
MAX_CONNECTIONS at once; more are answered "busy" at once), which reads the bounded
request, checks the caller, and queues the snapshot (QUEUE_SIZE waiting at most; more are
"busy"). One worker takes the snapshots one at a time: the engine's programs and maps are
shared state, and one pause at a time keeps the guardian's promise simple. A client that
goes away changes nothing for its targets: the engine resumes them whatever happens, and
a queued request whose client has gone is dropped before its turn.
"""
from __future__ import annotations

import contextlib
import gc
import grp
import hmac
import os
import queue
import select
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from pytest_sideeye import bugs, engine, install, settings
from pytest_sideeye.agent.authorize import (
                                            RULE_REMOTE,
                                            Authorizer,
                                            Caller,
                                            Refused,
                                            docker_check,
                                            peer_of,
                                            remote_caller,
)
from pytest_sideeye.agent.identity import code_id
from pytest_sideeye.agent.protocol import (
                                           HttpError,
                                           SnapshotAnswer,
                                           SnapshotRequest,
                                           parse_snapshot_request,
                                           read_request,
                                           response_bytes,
)
from pytest_sideeye.errors import CaptureSpecError, SideeyeError, one_line
from pytest_sideeye.memo import MEMO, give_back
from pytest_sideeye.snapshot import Snapshot

QUEUE_SIZE = 8
# An answer this large (tens of thousands of goroutines) was made of hundreds of MB of
# objects: once sent, the memory they freed is handed back (memo.give_back).
LARGE_ANSWER_BYTES = 16 << 20
MAX_CONNECTIONS = 64
SOCKET_MODE = 0o660
VERSION = "1"


@dataclass
class Job:
    caller: Caller
    request: SnapshotRequest
    conn: socket.socket
    warm_only: bool = False   # /v1/warm: load the targets' programs, snapshot nothing
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 500
    answer: dict | SnapshotAnswer = field(default_factory=dict)


class Agent:
    """The server. `take` is the engine's take_snapshot; `resolve_container` turns a
    container name into engine Targets (services.container_targets); `in_docker` is the
    authorization's Docker check. Tests pass their own only for what they cannot create."""

    def __init__(self, path: Path, group: str = "sideeye", log: TextIO | None = None,
                 queue_size: int = QUEUE_SIZE, in_docker: Callable[[int], bool] = docker_check,
                 take: Callable[..., Snapshot] | None = None,
                 resolve_container: Callable[[str], list] | None = None):
        self.path = Path(path)
        self.group = group
        self.log_file = log or sys.stderr
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.take = take or engine.take_snapshot
        self.resolve_container = resolve_container or _resolve_container
        self.in_docker = in_docker
        self.started = time.time()
        self.code = code_id()   # what it loaded: the files may be replaced under it
        self.served = 0
        self.listener: socket.socket | None = None
        self.token = ""
        self.tls: ssl.SSLContext | None = None
        self.tcp_listener: socket.socket | None = None
        self.stopping = threading.Event()
        self._log_lock = threading.Lock()

    # --- life cycle ---------------------------------------------------------------

    def bind(self) -> None:
        """Create the socket: mode 0660, group `group` (which must exist). A stale socket
        left by a dead agent is replaced; a live agent's is not."""
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise SideeyeError(f"group {self.group!r} does not exist: create it "
                               f"(groupadd --system {self.group}) and add the users "
                               "who may ask for snapshots") from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise SideeyeError(f"an agent already listens on {self.path}")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)   # nobody may connect before the mode and group are set
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chown(self.path, 0 if os.geteuid() == 0 else -1, gid)
        os.chmod(self.path, SOCKET_MODE)
        sock.listen(128)
        self.listener = sock
        self.authorizer = Authorizer(gid, self.in_docker)

    def serve_forever(self) -> None:
        if self.listener is None:
            self.bind()
        worker = threading.Thread(target=self._work, name="sideeye-agent worker", daemon=True)
        worker.start()
        self.log(f"listening on {self.path} (group {self.group}, pid {os.getpid()})")
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping.is_set():
                    break
                continue
            if not self.slots.acquire(blocking=False):
                self._answer_quietly(conn, 503, {"error": f"agent busy: {MAX_CONNECTIONS} "
                                                          "connections open; try again"})
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True,
                             name="sideeye-agent connection").start()

    # --- the remote listener: TCP + TLS, callers identified by the agent's token ----

    def listen_tls(self, address: str, certfile: str, keyfile: str, token: str = "",
                   client_ca: str | None = None) -> None:
        """Also serve `tcp://HOST:PORT` over TLS (rule 4: a caller with the token, or with
        a client certificate signed by `client_ca`, may snapshot processes in Docker
        containers), in a thread of its own."""
        host, port = _host_port(address)
        if token and len(token) < 16:
            raise SideeyeError("the agent's token must be at least 16 characters")
        if not token and not client_ca:
            raise SideeyeError("a remote listener needs a token or a client CA")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as e:
            raise SideeyeError(f"cannot load the TLS certificate {certfile} / key {keyfile}: "
                               f"{one_line(e)}") from None
        if client_ca:
            try:
                ctx.load_verify_locations(cafile=client_ca)
            except (OSError, ssl.SSLError) as e:
                raise SideeyeError(f"cannot load the client CA {client_ca}: "
                                   f"{one_line(e)}") from None
            # With a token too, a certificate is one way in: optional, verified when sent.
            ctx.verify_mode = ssl.CERT_OPTIONAL if token else ssl.CERT_REQUIRED
        try:
            listener = socket.create_server((host, port), backlog=128)
        except OSError as e:
            raise SideeyeError(f"cannot listen on {address}: {e.strerror}") from None
        self.token, self.tls, self.tcp_listener = token, ctx, listener
        threading.Thread(target=self._accept_remote, name="sideeye-agent tls", daemon=True).start()
        ways = [w for w, on in (("token", token), ("client certificates", client_ca)) if on]
        self.log(f"listening on {address} (TLS, {' or '.join(ways)})")

    def _accept_remote(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, addr = self.tcp_listener.accept()
            except OSError:
                continue
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve_remote, args=(conn, f"{addr[0]}:{addr[1]}"),
                             daemon=True, name="sideeye-agent remote").start()

    def _serve_remote(self, conn: socket.socket, address: str) -> None:
        try:
            conn.settimeout(5.0)
            try:
                tls = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()   # not TLS, or a handshake that never finished
                return
            caller = remote_caller(address, _certified(tls))
            status, answer = self._handle(tls, caller)
            if status == 403:
                self.log(f"refused {caller.describe()}: {answer['error']}")
            self._answer_quietly(tls, status, answer)
            if _large(answer):
                del answer
                give_back()
        except Exception as e:  # noqa: BLE001 - one connection must never end the agent
            self.log(f"remote connection from {address} failed: {one_line(e)}")
        finally:
            self.slots.release()

    def _check_token(self, caller: Caller, headers: dict[str, str]) -> None:
        if caller.remote is None or caller.certified:
            return        # local (SO_PEERCRED), or a client certificate the CA signed
        kind, _, given = headers.get("authorization", "").partition(" ")
        if not self.token or kind.lower() != "bearer" or \
                not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise Refused(f"refused by {RULE_REMOTE}: "
                          + ("wrong or missing token" if self.token
                             else "no client certificate signed by the agent's client CA"))

    def stop(self) -> None:
        self.stopping.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self._log_lock:
            self.log_file.write(f"{stamp}Z sideeye-agent: {line}\n")
            self.log_file.flush()

    # --- one connection -----------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            caller = peer_of(conn)
            status, answer = self._handle(conn, caller)
            if status == 403:
                self.log(f"refused {caller.describe()}: {answer['error']}")
            self._answer_quietly(conn, status, answer)
            if _large(answer):
                del answer             # its last reference: free it before giving back
                give_back()
        except Exception as e:  # noqa: BLE001 - one connection must never end the agent
            self._answer_quietly(conn, 500, {"error": f"agent error: {one_line(e)}"})
        finally:
            self.slots.release()

    def _handle(self, conn: socket.socket, caller: Caller) -> tuple[int, dict | SnapshotAnswer]:
        try:
            req = read_request(conn)
            self._check_token(caller, req.headers)
            if req.path == "/v1/health":
                return 200, self.health()
            if req.path not in ("/v1/snapshot", "/v1/warm"):
                raise HttpError(404, f"no such endpoint {req.path[:60]!r} "
                                     "(GET /v1/health, POST /v1/snapshot, POST /v1/warm)")
            if req.method != "POST":
                raise HttpError(405, f"POST a request to {req.path}")
            self.authorizer.rule_for(caller)
            job = Job(caller, parse_snapshot_request(req.body), conn,
                      warm_only=req.path == "/v1/warm")
        except HttpError as e:
            return e.status, {"error": str(e)}
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            return 503, {"error": f"agent busy: {self.jobs.maxsize} snapshots already waiting; "
                                  "try again shortly"}
        job.done.wait()
        return job.status, job.answer

    def _answer_quietly(self, conn: socket.socket, status: int,
                        answer: dict | SnapshotAnswer) -> None:
        """Answer and close; a client that has gone costs nothing. Closing a socket with
        unread bytes (a refused body) resets it and the client loses the answer, so what
        it still sends is read and dropped for a moment first (bounded: DRAIN_*)."""
        with contextlib.suppress(OSError):
            conn.settimeout(5.0)
            conn.sendall(response_bytes(status, answer))
            if not isinstance(conn, ssl.SSLSocket):   # TLS closes with its own alert
                conn.shutdown(socket.SHUT_WR)
                _drain(conn)
        conn.close()

    def health(self) -> dict:
        return {"agent": "sideeye", "version": VERSION, "code": self.code, "pid": os.getpid(),
                "socket": str(self.path), "group": self.group,
                "uptime_s": round(time.time() - self.started, 1),
                "snapshots": self.served, "waiting": self.jobs.qsize(),
                "layouts_loaded": engine.loaded_layouts(),
                "memo": MEMO.stats()}   # what it keeps about binaries, under its budget

    # --- the worker: one snapshot at a time ---------------------------------------

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            evicted = MEMO.evicted
            try:
                if _client_gone(job.conn):
                    job.status, job.answer = 400, {"error": "client gone before its turn"}
                    self.log(f"dropped a request of {job.caller.describe()}: "
                             "the client went away while it waited")
                else:
                    job.status, job.answer = self._snapshot(job)
            except Exception as e:  # noqa: BLE001 - an engine bug is one line, not the end
                # The line the CLI prints for a bug of its own (its traceback in the
                # agent's folder), so both routes say the same.
                line = bugs.report_line(e)
                self.log(line)
                job.status, job.answer = 500, {"error": line, "engine": True,
                                               "internal": True}
            finally:
                job.done.set()
            # The answer is the connection thread's to send and drop: held here, it
            # stayed resident until the next request came.
            del job
            if MEMO.evicted != evicted:
                # Binaries were dropped for the budget: their memory is free but stays
                # resident in the C heap until trimmed (measured: 190 MB resident holding
                # one binary's 45 MB, 110 MB once trimmed).
                give_back()

    def _snapshot(self, job: Job) -> tuple[int, dict | SnapshotAnswer]:
        # Decoding and serializing allocate a few hundred thousand small objects: a full
        # collection in the middle costs more than the rest (seen: 90 ms of a 30 ms
        # serialization). The agent serves one snapshot at a time; collect after.
        gc.disable()
        try:
            return self._snapshot_now(job)
        finally:
            gc.enable()

    def _snapshot_now(self, job: Job) -> tuple[int, dict | SnapshotAnswer]:
        t0 = time.perf_counter()
        try:
            targets = self._authorized_targets(job)
            if job.warm_only:   # prepared as its snapshot will be, with the same settings
                cfg, _clamped = settings.within_limits(job.request.settings or {},
                                                       settings.current())
                loaded = engine.warm(targets, job.request.capture, job.request.links, cfg)
                self.log(f"warmed for {job.caller.describe()}: "
                         f"{', '.join(str(t.pid) for t in targets)}; {loaded} layouts loaded; "
                         f"took {(time.perf_counter() - t0) * 1000:.0f} ms")
                return 200, {"layouts_loaded": loaded}
            # The caller's settings, each within the agent's own (its environment's,
            # read now as the engine would): a caller may lower them, never raise them.
            cfg, clamped = settings.within_limits(job.request.settings or {},
                                                  settings.current())
            snap = self.take(targets, capture=job.request.capture,
                             strict_capture=job.request.strict_capture,
                             links=job.request.links, cfg=cfg)
            other_code = self._other_code(job.request.code)
            for p in snap.processes:
                p.notes += clamped + other_code
        except Refused as e:   # logged with the answer, as every refusal
            return 403, {"error": str(e)}
        except CaptureSpecError as e:
            return 422, {"error": str(e)}
        except SideeyeError as e:   # the engine's own line (a container gone, ...)
            return 500, {"error": str(e), "engine": True}
        self.served += 1
        self.log(_snapshot_line(job.caller, snap, time.perf_counter() - t0))
        return 200, SnapshotAnswer(snap.dumps(), [{"pid": p.pid, "error": p.error}
                                                  for p in snap.processes])

    def _other_code(self, callers: str | None) -> list[str]:
        """A note when the caller runs other pytest-sideeye code than this agent started
        with (an upgrade or a new checkout since): what the snapshot names and how it reads
        things are this agent's. Callers too old to say theirs get no note."""
        if callers is None or callers == self.code:
            return []
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        return [f"taken by a sideeye agent running other pytest-sideeye code (agent {self.code}, "
                f"started {started}; caller {callers}): restart the agent to match "
                f"({install.agent_restart(os.getpid())})"]

    def _authorized_targets(self, job: Job) -> list:
        """Engine targets for the request, every pid checked against the caller's rule
        before anything is paused (one refused target refuses the whole request)."""
        targets = []
        for spec in job.request.targets:
            if spec.pid is not None:
                targets.append(engine.Target(spec.pid, container=spec.container,
                                             service=spec.service))
            else:
                found = self.resolve_container(spec.container_name)
                for t in found:
                    t.service = spec.service or t.service
                targets += found
        for t in targets:
            self.authorizer.check_target(job.caller, t.pid)
        return targets


def _large(answer: dict | SnapshotAnswer) -> bool:
    """A snapshot answer whose making freed enough to be worth handing back."""
    return isinstance(answer, SnapshotAnswer) and len(answer.text) >= LARGE_ANSWER_BYTES


def _snapshot_line(caller: Caller, snap: Snapshot, seconds: float) -> str:
    """The log line of one snapshot: who asked, which targets, how long each was paused."""
    parts = []
    for p in snap.processes:
        label = f"{p.pid}" + (f"({p.service})" if p.service else "")
        if p.error:
            parts.append(f"{label} error={p.error[:80]!r}")
        else:
            parts.append(f"{label} goroutines={len(p.goroutines)} "
                         f"pause={(p.pause_ns or 0) / 1e6:.2f}ms")
    return (f"snapshot for {caller.describe()}: {'; '.join(parts)}; "
            f"took {seconds * 1000:.0f} ms")


DRAIN_S = 1.0
DRAIN_BYTES = 64 << 20


def _drain(conn: socket.socket) -> None:
    """Read and drop until the client closes, for at most DRAIN_S and DRAIN_BYTES."""
    deadline = time.monotonic() + DRAIN_S
    left = DRAIN_BYTES
    while left > 0 and (wait := deadline - time.monotonic()) > 0:
        conn.settimeout(wait)
        chunk = conn.recv(1 << 20)
        if not chunk:
            return
        left -= len(chunk)


def _client_gone(conn: socket.socket) -> bool:
    """The client closed its end (it sent everything before, so readable means EOF).
    Not known for TLS connections (no peeking under TLS): those count as present."""
    if isinstance(conn, ssl.SSLSocket):
        return False
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except OSError:
        return True


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _resolve_container(name: str) -> list:
    from pytest_sideeye.services import container_targets
    return container_targets(name)


def _host_port(address: str) -> tuple[str, int]:
    rest = address.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not address.startswith("tcp://") or not sep or not port.isdigit() or not host:
        raise SideeyeError(f"--listen {address!r}: expected tcp://ADDR:PORT")
    return host.strip("[]"), int(port)


def _certified(tls: ssl.SSLSocket) -> str | None:
    """The subject of the client certificate the handshake verified, if any."""
    cert = tls.getpeercert()
    if not cert:
        return None
    subject = dict(x[0] for x in cert.get("subject", ()) if x)
    return f"CN={subject.get('commonName', '?')}"


def serve(path: Path, group: str, log: TextIO | None = None, *, listen: str | None = None,
          tls_cert: str | None = None, tls_key: str | None = None,
          token_file: str | None = None, tls_client_ca: str | None = None) -> None:
    """Run the agent until SIGTERM/SIGINT: refuse to start without the engine's
    privileges (a root agent is the point), then serve (also over TLS with `listen`)."""
    import signal

    problem = engine.missing_privileges()
    if problem:
        raise SideeyeError(f"the agent must be privileged: {problem}")
    agent = Agent(path, group, log)
    agent.bind()
    if listen:
        if not (tls_cert and tls_key and (token_file or tls_client_ca)):
            raise SideeyeError("--listen needs --tls-cert, --tls-key and --token-file "
                               "and/or --tls-client-ca")
        token = ""
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as e:
                raise SideeyeError(f"cannot read the token file {token_file}: "
                                   f"{e.strerror}") from None
        agent.listen_tls(listen, tls_cert, tls_key, token, tls_client_ca)

    def stop(_signum, _frame) -> None:
        agent.log("stopping")
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.serve_forever()
