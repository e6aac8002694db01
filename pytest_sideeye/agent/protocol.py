"""The agent's wire format: HTTP/1.1 with JSON bodies, one request per connection, every
part of a request bounded (header bytes, body bytes, targets, capture spec size, the time
the whole request may take to arrive).

    GET  /v1/health     -> {"agent": "sideeye", "version", "pid", "layouts_loaded", ...}
    POST /v1/snapshot   {"targets": [{"pid": 1234, "service": "orders",
                                      "container": {"id", "name", "image"}},
                                     {"container": "ledger"}],
                         "capture": ["main.settle: o, o.ID"] | {"main.settle": ["o"]},
                         "strict_capture": true,
                         "links": ["gateway.handle: req.ID == main.place: o.ID"],
                         "settings": {"SIDEEYE_LINKS": false, "SIDEEYE_CAPTURE_PAUSE_MS": 5}}
                        -> the sideeye.snapshot/v1 document

A target is a pid (with optional labels for the report: service, container) or a Docker
container named by name or id. Errors are {"error": "<one line>"} with a 4xx/5xx status.
Shared by the server (server.py) and the client (client.py), so the two cannot disagree.
"""
from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, NamedTuple

from pytest_sideeye import settings as settings_mod
from pytest_sideeye.errors import SideeyeError

if TYPE_CHECKING:
    from pytest_sideeye.snapshot import Container

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_TARGETS = 64
MAX_CAPTURE_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 5.0     # the whole request (line, headers, body) must arrive within this

REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Payload Too Large", 422: "Unprocessable Entity",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}


class HttpError(SideeyeError):
    """A request the agent answers with an error status and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Request(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _recv_until(sock: socket.socket, buf: bytearray, deadline: float, want) -> None:
    """Receive into buf until want(buf) holds; HttpError 408 when the deadline passes and
    400 when the client closes first."""
    while not want(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HttpError(408, f"request not complete within {REQUEST_TIMEOUT_S:g} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise HttpError(408, f"request not complete within {REQUEST_TIMEOUT_S:g} s") \
                from None
        if not chunk:
            raise HttpError(400, "the client closed the connection mid-request")
        buf += chunk


def read_request(sock: socket.socket, timeout_s: float = REQUEST_TIMEOUT_S) -> Request:
    """One HTTP/1.1 request, within the bounds above (HttpError otherwise). The body's
    length is checked against MAX_BODY_BYTES before a byte of it is read."""
    deadline = time.monotonic() + timeout_s
    buf = bytearray()

    def headers_done(b: bytearray) -> bool:
        if len(b) > MAX_HEADER_BYTES and b.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES) < 0:
            raise HttpError(431, f"request headers longer than {MAX_HEADER_BYTES} bytes")
        return b.find(b"\r\n\r\n") >= 0

    _recv_until(sock, buf, deadline, headers_done)
    end = buf.find(b"\r\n\r\n")
    head, rest = bytes(buf[:end]), buf[end + 4:]
    method, path, headers = _parse_head(head)
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked bodies are not accepted: send Content-Length")
    length = _content_length(headers, method)
    _recv_until(sock, rest, deadline, lambda b: len(b) >= length)
    return Request(method, path, headers, bytes(rest[:length]))


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed HTTP request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(400, f"unsupported protocol {version[:20]!r}: HTTP/1.1 only")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed HTTP header line")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _content_length(headers: dict[str, str], method: str) -> int:
    raw = headers.get("content-length")
    if raw is None:
        if method == "POST":
            raise HttpError(411, "a POST needs a Content-Length")
        return 0
    if not raw.isdigit():
        raise HttpError(400, f"bad Content-Length {raw[:20]!r}")
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body of {length} bytes is over the limit of "
                             f"{MAX_BODY_BYTES} bytes")
    return length


# The header of a snapshot answer that lists each process's pid and error (JSON, ASCII):
# a client that only stores the document (`sideeye snapshot --json`) need not parse it.
PROCESSES_HEADER = "Sideeye-Processes"


class SnapshotAnswer(NamedTuple):
    """A sideeye.snapshot/v1 document already encoded, and its processes' summary."""
    text: str
    processes: list[dict]    # [{"pid": int, "error": str | None}], in the document's order


def response_bytes(status: int, doc: dict | SnapshotAnswer) -> bytes:
    """A complete response: a JSON body, and for a snapshot its summary header."""
    extra = ""
    if isinstance(doc, SnapshotAnswer):
        body = doc.text.encode()
        extra = f"{PROCESSES_HEADER}: {json.dumps(doc.processes)}\r\n"   # no CR/LF inside
    else:
        body = json.dumps(doc).encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body



def request_bytes(method: str, path: str, doc: dict | None = None,
                  token: str | None = None) -> bytes:
    body = json.dumps(doc).encode() if doc is not None else b""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"{method} {path} HTTP/1.1\r\nHost: sideeye-agent\r\n{auth}"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


# --- the snapshot request ------------------------------------------------------------

class TargetSpec(NamedTuple):
    """A pid (labels only for the report: they decide nothing) or a container to resolve."""
    pid: int | None = None
    container_name: str | None = None
    service: str | None = None
    container: Container | None = None

    def to_json(self) -> dict:
        if self.pid is None:
            return {"container": self.container_name, **({"service": self.service}
                                                         if self.service is not None else {})}
        d: dict = {"pid": self.pid}
        if self.service is not None:
            d["service"] = self.service
        if self.container is not None:
            d["container"] = self.container.to_json()
        return d


class SnapshotRequest(NamedTuple):
    targets: list[TargetSpec]
    capture: list[str] | dict[str, list[str]] | None = None
    strict_capture: bool = True
    links: list[str] | None = None
    # The per-snapshot settings the caller set (settings.requested()), by variable; the
    # agent's own apply to the others, and bound these.
    settings: dict | None = None
    # The caller's code (identity.code_id): an agent running other code says so.
    code: str | None = None

    def to_json(self) -> dict:
        d = {"targets": [t.to_json() for t in self.targets], "capture": self.capture,
             "strict_capture": self.strict_capture}
        if self.links:
            d["links"] = list(self.links)
        if self.settings:
            d["settings"] = dict(self.settings)
        if self.code:
            d["code"] = self.code
        return d


def parse_snapshot_request(body: bytes) -> SnapshotRequest:
    """The request's JSON, every field checked (HttpError 400 naming the first problem)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, f"malformed JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "the request must be a JSON object")
    raw_targets = doc.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise HttpError(400, "'targets' must be a non-empty list")
    if len(raw_targets) > MAX_TARGETS:
        raise HttpError(413, f"{len(raw_targets)} targets is over the limit of {MAX_TARGETS}")
    capture = doc.get("capture")
    _check_capture(capture)
    strict = doc.get("strict_capture", True)
    if not isinstance(strict, bool):
        raise HttpError(400, "'strict_capture' must be true or false")
    links = doc.get("links")
    if links is not None and (not isinstance(links, list)
                              or not all(isinstance(x, str) for x in links)):
        raise HttpError(400, "'links' must be a list of 'pkg.F: expr == pkg.G: expr' strings")
    if links and len(json.dumps(links)) > MAX_CAPTURE_BYTES:
        raise HttpError(413, f"links over the limit of {MAX_CAPTURE_BYTES} bytes")
    code = doc.get("code")
    if code is not None and (not isinstance(code, str) or len(code) > 64):
        raise HttpError(400, "'code' must be a string of at most 64 characters")
    return SnapshotRequest([_target(t) for t in raw_targets], capture or None, strict,
                           links or None, _settings(doc.get("settings")), code)


def _settings(raw) -> dict | None:
    if raw is None:
        return None
    try:
        return settings_mod.from_request(raw) or None
    except settings_mod.SettingError as e:
        raise HttpError(400, str(e)) from None


def _target(t) -> TargetSpec:
    if not isinstance(t, dict):
        raise HttpError(400, "each target must be an object")
    pid = t.get("pid")
    service = t.get("service")
    if service is not None and not isinstance(service, str):
        raise HttpError(400, "a target's 'service' must be a string")
    if pid is None:
        name = t.get("container")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise HttpError(400, "a target needs a 'pid' (integer) or a 'container' (name or id)")
        return TargetSpec(container_name=name, service=service)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise HttpError(400, f"target pid {str(pid)[:20]!r} is not a positive integer")
    return TargetSpec(pid=pid, service=service, container=_container_label(t.get("container")))


def _container_label(c) -> Container | None:
    if c is None:
        return None
    if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in ("id", "name", "image")):
        raise HttpError(400, "a pid target's 'container' must be {id, name, image} strings")
    from pytest_sideeye.snapshot import Container  # the agent's side only: clients start light
    return Container(c["id"], c["name"], c["image"])


def _check_capture(capture) -> None:
    if capture is None:
        return
    if len(json.dumps(capture)) > MAX_CAPTURE_BYTES:
        raise HttpError(413, f"capture spec over the limit of {MAX_CAPTURE_BYTES} bytes")
    if isinstance(capture, list) and all(isinstance(x, str) for x in capture):
        return
    if isinstance(capture, dict) and all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(e, str) for e in v)
            for k, v in capture.items()):
        return
    raise HttpError(400, "'capture' must be a list of 'pkg.Func: a, b' strings or "
                         "{\"pkg.Func\": [\"a\", ...]}")
