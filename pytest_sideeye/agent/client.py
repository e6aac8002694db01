"""Asking the agent, and choosing who takes a snapshot: the agent whenever its socket
answers, else the engine in this process when it is privileged, else the one-line reason
(which says how to get either).
"""
from __future__ import annotations

import errno
import json
import socket
import urllib.parse
from typing import TYPE_CHECKING, NamedTuple

from pytest_sideeye import settings
from pytest_sideeye.agent.identity import code_id
from pytest_sideeye.agent.protocol import (
                                           PROCESSES_HEADER,
                                           SnapshotRequest,
                                           TargetSpec,
                                           request_bytes,
)
from pytest_sideeye.errors import CaptureSpecError, InternalError, NoPermission, SideeyeError

if TYPE_CHECKING:
    from pytest_sideeye.snapshot import Snapshot

CONNECT_TIMEOUT_S = 1.0
SNAPSHOT_TIMEOUT_S = 120.0   # queued behind others, each bounded by the engine's own limits
MAX_ANSWER_BYTES = 512 * 1024 * 1024


class AgentUnavailable(SideeyeError):
    """No agent answers on the socket (absent, dead, or this user may not connect)."""


class AgentAnswered(SideeyeError):
    """The agent answered with an error: its one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CONNECT_TIMEOUT_S)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        if e.errno == errno.EACCES:
            raise AgentUnavailable(f"the sideeye agent's socket {path} does not let this user "
                                   "in (join its group, e.g. usermod -aG sideeye $USER, then log "
                                   "in again)") from None
        raise AgentUnavailable(f"no sideeye agent answers on {path} "
                               f"({e.strerror or type(e).__name__})") from None
    s.settimeout(timeout)
    return s


def _connect_remote(url: str, timeout: float) -> tuple[socket.socket, str]:
    """A TLS connection to a remote agent (SIDEEYE_AGENT_URL), and its token."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname or not parsed.port:
        raise SideeyeError(f"SIDEEYE_AGENT_URL={url!r}: expected https://HOST:PORT")
    token_file = settings.agent_token_file()
    try:
        token = token_file.read_text().strip() if token_file else ""
    except OSError as e:
        raise SideeyeError(f"cannot read SIDEEYE_AGENT_TOKEN_FILE {token_file}: "
                           f"{e.strerror}") from None
    import ssl  # a remote agent only: importing it costs a local CLI run ~10 ms
    ctx = ssl.create_default_context(cafile=settings.agent_ca())
    client_cert = settings.agent_client_cert()
    if client_cert:
        try:
            ctx.load_cert_chain(*client_cert)
        except (OSError, ssl.SSLError) as e:
            raise SideeyeError(f"cannot load SIDEEYE_AGENT_CERT {client_cert[0]}: "
                               f"{getattr(e, 'strerror', None) or e}") from None
    try:
        raw = socket.create_connection((parsed.hostname, parsed.port), CONNECT_TIMEOUT_S * 5)
    except OSError as e:
        raise AgentUnavailable(f"no sideeye agent answers at {url} "
                               f"({e.strerror or type(e).__name__})") from None
    try:
        s = ctx.wrap_socket(raw, server_hostname=parsed.hostname)
    except (OSError, ssl.SSLError) as e:
        raw.close()
        raise AgentUnavailable(f"TLS with the sideeye agent at {url} failed: "
                               f"{getattr(e, 'reason', None) or e}") from None
    s.settimeout(timeout)
    return s, token


def ask(method: str, path: str, doc: dict | None = None, *, timeout: float = 10.0,
        socket_path: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to the agent on the Unix socket, or to the remote agent of
    SIDEEYE_AGENT_URL; returns (status, headers by lower-case name, body).
    AgentUnavailable when nobody answers."""
    url = None if socket_path else settings.agent_url()
    token = None
    if url:
        where = url
        s, token = _connect_remote(url, timeout)
    else:
        where = str(socket_path or settings.agent_socket())
        s = _connect(where, timeout)
    data = bytearray()
    try:
        s.sendall(request_bytes(method, path, doc, token))
        while chunk := s.recv(1 << 20):
            data += chunk
            if len(data) > MAX_ANSWER_BYTES:
                raise SideeyeError(f"the agent's answer is over {MAX_ANSWER_BYTES >> 20} MiB")
    except socket.timeout:
        raise SideeyeError(f"the sideeye agent on {where} did not answer within "
                           f"{timeout:g} s") from None
    except OSError as e:
        if getattr(e, "reason", None):   # TLS 1.3: a refused client certificate shows here
            raise AgentUnavailable(f"TLS with the sideeye agent at {where} failed: "
                                   f"{e.reason}") from None
        if url and not data and _is_tls_error(e):
            # The same refusal when the agent's alert did not reach us before its close
            # (seen 1 run in 4 on a loaded machine): a TLS failure all the same.
            raise AgentUnavailable(f"TLS with the sideeye agent at {where} failed: the agent "
                                   "closed the connection before answering (does it accept "
                                   "this client's certificate?)") from None
        raise AgentUnavailable(f"the sideeye agent on {where} dropped the connection "
                               f"({e.strerror})") from None
    finally:
        s.close()
    return _split_response(bytes(data), where)


def _is_tls_error(e: OSError) -> bool:
    import ssl  # loaded already: only a remote agent's connection gets here
    return isinstance(e, ssl.SSLError)


def _split_response(data: bytes, where: str) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise AgentUnavailable(f"what answers on {where} is not a sideeye agent")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def health(socket_path: str | None = None) -> dict:
    """The agent's health document; AgentUnavailable when no agent answers."""
    status, _headers, body = ask("GET", "/v1/health", timeout=5.0, socket_path=socket_path)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status != 200 or not isinstance(doc, dict) or doc.get("agent") != "sideeye":
        raise AgentUnavailable("what answers on the agent socket is not a sideeye agent")
    return doc


def snapshot_bytes(targets: list, capture=None, *, strict_capture: bool = True,
                   links=None, socket_path: str | None = None,
                   timeout: float = SNAPSHOT_TIMEOUT_S) -> tuple[bytes, list[dict]]:
    """The agent's sideeye.snapshot/v1 document as sent, unparsed, and each process's pid
    and error from its summary header: storing a 1,000-goroutine document whole saves the
    ~15 ms of parsing it (`sideeye snapshot --json`, timed by benchmarks/agent_bench.py)."""
    # The caller's settings are checked here, as the engine would (one line, before
    # anything is asked), and travel with the request: the agent bounds them by its own.
    req = SnapshotRequest([_target_spec(t) for t in targets], _capture_json(capture),
                          strict_capture, _links_json(links), settings.requested() or None,
                          code_id())
    status, headers, body = ask("POST", "/v1/snapshot", req.to_json(), timeout=timeout,
                                socket_path=socket_path)
    if status != 200:
        try:
            doc = json.loads(body)
        except ValueError:
            raise SideeyeError(f"the sideeye agent answered {status} with a body that is "
                               "not JSON") from None
        message = doc.get("error") if isinstance(doc, dict) else None
        if message and status == 422:
            # The caller's capture spec or links: the engine's own line, word for word, as
            # without an agent (the same command must say the same thing either way).
            raise CaptureSpecError(message)
        if message and doc.get("internal") is True:   # an engine bug: the CLI's own line
            raise InternalError(message)
        if message and doc.get("engine") is True:   # the same: an unknown container, ...
            raise AgentAnswered(status, message)
        line = f"sideeye agent: {message or f'status {status}'}"
        raise CaptureSpecError(line) if status == 422 else AgentAnswered(status, line)
    return body, _processes_summary(headers, body)


def _processes_summary(headers: dict[str, str], body: bytes) -> list[dict]:
    """[{"pid", "error"}] of a snapshot answer: from its header, else (an agent older than
    the header) from the document itself."""
    try:
        if PROCESSES_HEADER.lower() in headers:
            processes = json.loads(headers[PROCESSES_HEADER.lower()])
        else:
            from pytest_sideeye.snapshot import FORMAT
            doc = json.loads(body)
            processes = doc.get("processes") if doc.get("format") == FORMAT else None
    except (ValueError, AttributeError):
        processes = None
    if not isinstance(processes, list) or \
            not all(isinstance(p, dict) and isinstance(p.get("pid"), int) for p in processes):
        raise SideeyeError("the sideeye agent's answer is not a sideeye.snapshot/v1 document")
    return processes


def snapshot_via_agent(targets: list, capture=None, *, strict_capture: bool = True,
                       links=None, socket_path: str | None = None,
                       timeout: float = SNAPSHOT_TIMEOUT_S) -> Snapshot:
    """A snapshot taken by the agent, as the model (every field checked)."""
    body, _processes = snapshot_bytes(targets, capture, strict_capture=strict_capture,
                                      links=links, socket_path=socket_path, timeout=timeout)
    from pytest_sideeye.snapshot import Snapshot
    try:
        return Snapshot.from_json(json.loads(body))
    except ValueError as e:
        raise SideeyeError(f"the sideeye agent's snapshot is not valid: {e}") from None


class ContainerTarget(NamedTuple):
    """Every Go process of a container, found by whoever takes the snapshot: the agent
    can see into a root-owned container's processes when this user cannot."""
    name_or_id: str
    service: str | None = None


def _target_spec(t) -> TargetSpec:
    if isinstance(t, int):
        return TargetSpec(pid=t)
    if isinstance(t, ContainerTarget):
        return TargetSpec(container_name=t.name_or_id, service=t.service)
    return TargetSpec(pid=t.pid, service=t.service, container=t.container)


def _resolved_here(targets: list) -> list:
    """ContainerTargets turned into the engine's Targets, in this process."""
    from pytest_sideeye.services import container_targets
    out = []
    for t in targets:
        if isinstance(t, ContainerTarget):
            found = container_targets(t.name_or_id)
            for f in found:
                f.service = t.service or f.service
            out += found
        else:
            out.append(t)
    return out


def container_target(name_or_id: str, service: str | None = None) -> ContainerTarget | None:
    """A target for a container whose processes this user cannot list, when an agent
    answers to list them; None otherwise (nobody could snapshot it)."""
    return ContainerTarget(name_or_id, service) if route().kind == "agent" else None


def _links_json(links) -> list[str] | None:
    if not links:
        return None
    return [links] if isinstance(links, str) else [str(x) for x in links]


def _capture_json(capture):
    if not capture:
        return None
    if isinstance(capture, str):
        return [capture]
    if isinstance(capture, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in capture.items()}
    return list(capture)


# --- who takes the snapshot ----------------------------------------------------------

class Route(NamedTuple):
    """Who takes snapshots from this process: "agent", "engine" (in this process), or
    None with `reason`, the one line to show."""
    kind: str | None
    detail: str


def route() -> Route:
    """The remote agent of SIDEEYE_AGENT_URL when set, else the agent when its socket
    answers (SIDEEYE_AGENT=0: never), else the engine here when this process is
    privileged, else why neither."""
    why_not_agent = "not asked: SIDEEYE_AGENT=0"
    remote_docker = settings.docker_remote_host()
    if remote_docker and not settings.use_agent():
        return Route(None, f"the containers run on {remote_docker} (DOCKER_HOST): only a "
                           "sideeye agent there can read them, and SIDEEYE_AGENT=0 forbids "
                           "asking it")
    if settings.use_agent() and settings.agent_url():
        # A remote agent is asked whatever: its targets are on another machine, which
        # nothing here could snapshot; its own answer is the one line to show.
        return Route("agent", f"the sideeye agent at {settings.agent_url()}")
    if settings.use_agent():
        try:
            doc = health()
            return Route("agent", f"sideeye agent pid {doc.get('pid')} on "
                                  f"{settings.agent_url() or settings.agent_socket()}")
        except AgentUnavailable as e:
            why_not_agent = str(e)
        except SideeyeError as e:   # it answered, badly: still not usable
            why_not_agent = str(e)
    from pytest_sideeye.engine import missing_privileges as lacking_here
    lacking = lacking_here()
    if lacking is None:
        return Route("engine", "in this process (privileged)")
    return Route(None, f"{lacking}; or ask a sideeye agent ({why_not_agent})")


def take_snapshot(targets: list, capture=None, *, strict_capture: bool = True,
                  links=None) -> Snapshot:
    """engine.take_snapshot's signature, through whoever route() names."""
    chosen = route()
    if chosen.kind == "agent":
        return snapshot_via_agent(targets, capture, strict_capture=strict_capture,
                                  links=links)
    if chosen.kind == "engine":
        from pytest_sideeye import engine
        return engine.take_snapshot(_resolved_here(targets), capture,
                                    strict_capture=strict_capture, links=links)
    raise NoPermission(chosen.detail)


def warm(targets: list, capture=None, links=None) -> None:
    """Have whoever will take these targets' snapshots prepare them now as a snapshot
    would (engine.warm: programs, the link probes', capture spec's and links' plans; the
    agent keeps them, this process its own). Quiet: a failure here is the snapshot's to
    report, later."""
    try:
        chosen = route()
        if chosen.kind == "agent":
            req = SnapshotRequest([_target_spec(t) for t in targets], _capture_json(capture),
                                  strict_capture=False, links=_links_json(links),
                                  settings=settings.requested() or None)
            ask("POST", "/v1/warm", req.to_json(), timeout=SNAPSHOT_TIMEOUT_S)
        elif chosen.kind == "engine":
            from pytest_sideeye import engine
            engine.warm(_resolved_here(targets), capture, links)
    except SideeyeError:
        pass


def missing_privileges() -> str | None:
    """None when snapshots can be taken (by the agent or here), else the one line."""
    chosen = route()
    return chosen.detail if chosen.kind is None else None
