"""Links across processes: which goroutine waits on which, over which connection.

Built in, with nothing to configure. In the pause, a built-in capture (PROBES, read like
any captured variable, by the same BPF and Python paths) reads from the frames of the
runtime's and net's own functions the socket each waiting goroutine uses (its fd) and,
for HTTP, the request. After the resume, each process's fds are resolved to TCP 4-tuples
from /proc/PID/fd and the tables of its own network namespace (/proc/PID/net/tcp{,6}), so
that the two ends of one connection are found in two processes whether they talk over a
Docker network or the host's loopback. User links (capture.UserLink) join two frames whose
captured values are equal.

    probes = probe_spec(info)                       # per binary, before the pause
    facts = take_facts(proc, probes, user_spec)     # after decoding, per process
    links = find_links(snapshot, {pid: facts}, user_links)
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from dataclasses import dataclass, field

from pytest_sideeye import capture as capture_mod
from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.files import JsonCache
from pytest_sideeye.snapshot import Endpoint, Link, Process, Snapshot

# What each built-in probe reads in a frame of its function, and what the frame says: the
# goroutine reads or writes a socket, or waits for an HTTP response, or serves a request.
# Each fact may be read by alternative expressions (the first that holds a value wins).
# Interfaces are crossed by type assertions, which the BPF reads follow (a plain field
# through an interface would send every such frame to the much slower Python rounds).
# No alternative for TLS (`.(*crypto/tls.Conn).conn...`): on a plain connection the BPF
# reads would follow a *net.TCPConn as a tls.Conn into garbage, and every such failed read
# sends its frame to the Python rounds (measured: +8 ms for 300 parked requests). Every
# expression is checked against the binary's DWARF (probe_spec): one that a Go version or
# program does not have is dropped for that binary, never an error.
_TCP_FD = ".(*net.TCPConn).conn.fd.pfd.Sysfd"
_GRPC = "google.golang.org/grpc"
# The stream's own transport (stream.st), not the argument t: Go 1.21's DWARF puts t in a
# stack slot that holds something else at the handler's call (measured: garbage read).
_GRPC_SERVER = {"fd": (f"stream.st.(*{_GRPC}/internal/transport.http2Server).conn" + _TCP_FD,),
                "stream": ("stream.id",), "method": ("stream.method",)}
PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "internal/poll.(*FD).Read": ("read", {"fd": ("fd.Sysfd",)}),
    "internal/poll.(*FD).Write": ("write", {"fd": ("fd.Sysfd",)}),
    "net/http.(*persistConn).roundTrip": ("http_client", {
        "fd": ("pc.conn" + _TCP_FD,),
        "method": ("req.Request.Method",), "path": ("req.Request.URL.Path",),
        "query": ("req.Request.URL.RawQuery",)}),
    "net/http.(*conn).serve": ("http_server", {
        "fd": ("c.rwc" + _TCP_FD,),
        "method": ("w.req.Method",), "path": ("w.req.URL.Path",),
        "query": ("w.req.URL.RawQuery",)}),
    # grpc-go: a client waiting on a stream (unary calls and streams both receive through
    # csAttempt.recvMsg), and the server goroutine running that stream's handler.
    _GRPC + ".(*csAttempt).recvMsg": ("grpc_client", {
        "fd": ("a.s.ct.conn" + _TCP_FD,), "stream": ("a.s.id",), "method": ("a.s.method",)}),
    _GRPC + ".(*Server).processUnaryRPC": ("grpc_server", _GRPC_SERVER),
    _GRPC + ".(*Server).processStreamingRPC": ("grpc_server", _GRPC_SERVER),
}

# Which goroutine stands for its side of a connection when several wait on it: the one
# serving or sending a request, then a blocked writer (its peer does not read), then a
# reader.
_RANK = {"http_client": 0, "http_server": 0, "grpc_client": 0, "grpc_server": 0,
         "write": 1, "read": 2}

_probe_cache: dict[tuple, capture_mod.CaptureSpec] = {}
# The probes a binary accepts, on disk by build id and the probes' own text: checking them
# plans each against the DWARF, ~0.5 s of a `sideeye snapshot` run without the agent.
# Kept with the binary analyses (the same key: the build id).
PROBE_CACHE = JsonCache("binary", schema=1)


def probe_spec(info) -> capture_mod.CaptureSpec:
    """The built-in probes this binary can run: functions it has, expressions its DWARF
    accepts. Empty without DWARF. Cached by build id, in memory and on disk."""
    key = (info.build_id, info.path)
    spec = _probe_cache.get(key)
    if spec is None:
        spec = _probe_cache[key] = _cached_probes(info)
    return spec


def _cached_probes(info) -> capture_mod.CaptureSpec:
    if not info.has_dwarf:
        return capture_mod.CaptureSpec()   # where a variable is, only DWARF says
    key = "probes-" + hashlib.sha256(json.dumps([info.build_id, PROBES]).encode()).hexdigest()[:32]
    kept = PROBE_CACHE.load(key)
    if not (isinstance(kept, dict) and all(isinstance(v, list) for v in kept.values())):
        kept = {fn: [e.text for e in exprs]
                for fn, exprs in _checked_probes(info).functions.items()}
        PROBE_CACHE.store(key, kept)
    return capture_mod.CaptureSpec({fn: [capture_mod.parse_expr(t) for t in texts]
                                    for fn, texts in kept.items()})


def _checked_probes(info) -> capture_mod.CaptureSpec:
    out = capture_mod.CaptureSpec()
    for fn, (_role, exprs) in PROBES.items():
        if info.symtab.func_by_name(fn) is None and not info.symtab.inlined_ranges(fn):
            continue
        kept = []
        for text in (t for alternatives in exprs.values() for t in alternatives):
            try:
                capture_mod.make_plan(info, {fn: [text]})
            except (CaptureSpecError, Exception):   # noqa: BLE001 - a probe never fails a snapshot
                continue
            kept.append(capture_mod.parse_expr(text))
        if kept:
            out.functions[fn] = kept
    return out


def merged(user: capture_mod.CaptureSpec | None,
           probes: capture_mod.CaptureSpec) -> capture_mod.CaptureSpec | None:
    """The user's capture spec plus the probes (an expression in both is read once)."""
    if not probes:
        return user
    out = capture_mod.CaptureSpec({fn: list(es) for fn, es in
                                   (user.functions if user else {}).items()})
    for fn, exprs in probes.functions.items():
        bucket = out.functions.setdefault(fn, [])
        bucket += [e for e in exprs if e not in bucket]
    return out


@dataclass
class Fact:
    """What one probed frame said: goroutine `goroutine` is in `role` on socket `fd`."""
    goroutine: int
    role: str
    fd: int
    method: str | None = None
    path: str | None = None
    stream: int | None = None        # HTTP/2 stream id (gRPC)


@dataclass
class ProcessFacts:
    facts: list[Fact] = field(default_factory=list)


def take_facts(proc: Process, probes: capture_mod.CaptureSpec,
               user: capture_mod.CaptureSpec | None) -> ProcessFacts:
    """Read the probes' values off proc's frames, and take those variables off the frames
    unless the user's own spec asked for them too."""
    out = ProcessFacts()
    if not probes:
        return out
    asked = {(fn, e.text) for fn, es in (user.functions if user else {}).items() for e in es}
    for g in proc.goroutines:
        for f in g.frames:
            role_exprs = PROBES.get(f.function)
            if role_exprs is None or not f.variables:
                continue
            role, exprs = role_exprs
            values = {v.name: v.value for v in f.variables
                      if v.available and v.error is None and not v.truncated}
            fact = _fact(g.id, role, {k: _first(values, alts) for k, alts in exprs.items()})
            if fact is not None:
                out.facts.append(fact)
            mine = {t for alts in exprs.values() for t in alts}
            f.variables = [v for v in f.variables
                           if v.name not in mine or (f.function, v.name) in asked]
    return out


def _first(values: dict, alternatives: tuple[str, ...]):
    return next((values[t] for t in alternatives if values.get(t) is not None), None)


def _fact(goroutine: int, role: str, got: dict) -> Fact | None:
    fd = got.get("fd")
    if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
        return None
    method = got.get("method")
    if role == "http_server" and not method:
        return None       # between requests: its read of the next one is a "read" fact
    path = got.get("path")
    query = got.get("query")
    if isinstance(path, str) and isinstance(query, str) and query:
        path = f"{path}?{query}"
    stream = got.get("stream")
    if role.startswith("grpc") and not isinstance(stream, int):
        return None
    return Fact(goroutine, role, fd,
                method if isinstance(method, str) else None,
                path if isinstance(path, str) else None,
                stream if isinstance(stream, int) else None)


# --- sockets: fd -> 4-tuple, from each process's own network namespace ----------------------

@dataclass(frozen=True)
class Socket:
    local: tuple[str, int]
    remote: tuple[str, int]
    listening_local: bool     # its local address accepts connections (it is the acceptor)


class NetView:
    """/proc reads for the processes of one snapshot, each network namespace read once."""

    def __init__(self) -> None:
        self._tables: dict[str, tuple[dict[int, tuple], set]] = {}

    def netns(self, pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return f"pid:{pid}"

    def sockets(self, pid: int) -> dict[int, Socket]:
        """fd -> Socket for the TCP sockets of pid (empty when it cannot be read)."""
        ns = self.netns(pid)
        if ns not in self._tables:
            self._tables[ns] = _tcp_tables(pid)
        conns, listening = self._tables[ns]
        out = {}
        for fd, inode in _socket_inodes(pid).items():
            entry = conns.get(inode)
            if entry is None:
                continue
            local, remote = entry
            out[fd] = Socket(local, remote,
                             local in listening or (_any(local[0]), local[1]) in listening)
        return out


def _any(ip: str) -> str:
    return "::" if ":" in ip else "0.0.0.0"


def _socket_inodes(pid: int) -> dict[int, int]:
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(name)] = int(target[8:-1])
    return out


def _tcp_tables(pid: int) -> tuple[dict[int, tuple], set]:
    """inode -> (local, remote) of established connections, and the listening
    addresses, in pid's network namespace."""
    conns, listening = {}, set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, remote, state, inode = (_address(parts[1]), _address(parts[2]),
                                           parts[3], int(parts[9]))
            if state == "0A":
                listening.add(local)
            elif inode:
                conns[inode] = (local, remote)
    # A dual-stack listener on [::]:8080 accepts IPv4 too.
    listening |= {("0.0.0.0", port) for ip, port in list(listening) if ip == "::"}
    return conns, listening


def _address(hexaddr: str) -> tuple[str, int]:
    """`0100007F:1F90` -> ("127.0.0.1", 8080); IPv6 words are in host (little-endian)
    order; an IPv4-mapped IPv6 address becomes the IPv4 one, so both ends compare."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return str(ip), int(port_hex, 16)


def format_addr(addr: tuple[str, int]) -> str:
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- matching ----------------------------------------------------------------------------

@dataclass
class _End:
    """One process's end of a connection and the facts of its goroutines on it."""
    pid: int
    sock: Socket
    facts: list[Fact] = field(default_factory=list)

    def best(self) -> Fact | None:
        return min(self.facts, key=lambda f: (_RANK[f.role], f.goroutine), default=None)

    def of(self, role: str) -> Fact | None:
        return next((f for f in sorted(self.facts, key=lambda f: f.goroutine)
                     if f.role == role), None)


def find_links(snap: Snapshot, facts: dict[int, ProcessFacts],
               user_links: list | None = None, view: NetView | None = None) -> list[Link]:
    """Every link between the goroutines of the snapshot's processes (and to peers outside
    it, named by address)."""
    view = view or NetView()
    links = _connection_links(snap, facts, view)
    links += _user_links(snap, user_links or [])
    return links


def _connection_links(snap: Snapshot, facts: dict[int, ProcessFacts], view: NetView
                      ) -> list[Link]:
    if not any(pf.facts for pf in facts.values()):
        # No goroutine waits on a socket, so there is no connection to link. Worth the
        # check: each namespace's TCP tables take ~4 ms per file to read (the kernel
        # walks its whole connection hash table), whatever few sockets they list.
        return []
    # Every TCP socket of every process, indexed by (namespace for loopback, local, remote):
    # a loopback address means the same thing only inside one network namespace.
    ends: dict[tuple, _End] = {}
    waited: dict[tuple, None] = {}     # sockets some goroutine waits on, in order
    for p in snap.processes:
        if p.error is not None:
            continue
        socks = view.sockets(p.pid)
        if not socks:
            continue
        ns = view.netns(p.pid)
        by_fd: dict[int, tuple] = {}
        for fd, s in socks.items():
            key = (_scope(ns, s.local), s.local, s.remote)
            ends.setdefault(key, _End(p.pid, s))
            by_fd[fd] = key
        for fact in facts.get(p.pid, ProcessFacts()).facts:
            key = by_fd.get(fact.fd)
            if key is None:
                continue          # not a TCP socket (a pipe, a Unix socket, a file)
            ends[key].facts.append(fact)
            waited[key] = None
    links, done = [], set()
    for key in waited:
        scope, local, remote = key
        peer_key = (_scope(scope, remote), remote, local)
        conn = frozenset((key, peer_key))
        if conn in done:
            continue
        done.add(conn)
        a, b = ends[key], ends.get(peer_key)
        links += _links(a, b)
    return links


def _scope(ns: str, addr: tuple[str, int]) -> str | None:
    return ns if ipaddress.ip_address(addr[0]).is_loopback else None


def _links(a: _End, b: _End | None) -> list[Link]:
    """The links over one connection: a has a goroutine waiting on it; b is the other end
    when its process is in the snapshot. gRPC: one link per stream; HTTP/1.x: the request
    in flight; else the connection itself."""
    # Which end accepted the connection: its local address listens.
    client, server = (b, a) if a.sock.listening_local else (a, b)
    client_addr = format_addr(client.sock.local if client else server.sock.remote)
    server_addr = format_addr(server.sock.local if server else client.sock.remote)
    grpc = _grpc_links(client, server, client_addr, server_addr)
    if grpc:
        return grpc
    req = (client.of("http_client") if client else None)
    handler = (server.of("http_server") if server else None)
    if req or handler:
        src = req or handler
        return [Link("http", _endpoint(client, req), _endpoint(server, handler),
                     client_addr, server_addr, method=src.method, path=src.path)]
    return [Link("tcp", _endpoint(client, client.best() if client else None),
                 _endpoint(server, server.best() if server else None),
                 client_addr, server_addr)]


def _grpc_links(client: _End | None, server: _End | None, client_addr: str,
                server_addr: str) -> list[Link]:
    """A link per gRPC stream either side waits on, the two sides paired by stream id (a
    stream's id is the same at both ends of its HTTP/2 connection)."""
    calls = _streams(client, "grpc_client")
    handlers = _streams(server, "grpc_server")
    links = []
    for sid in sorted(set(calls) | set(handlers)):
        call, handler = calls.get(sid), handlers.get(sid)
        src = call or handler
        links.append(Link("grpc", _stream_side(client, call), _stream_side(server, handler),
                          client_addr, server_addr, method=src.method, stream_id=sid))
    return links


def _streams(end: _End | None, role: str) -> dict[int, Fact]:
    if end is None:
        return {}
    out: dict[int, Fact] = {}
    for f in sorted(end.facts, key=lambda f: f.goroutine):
        if f.role == role:
            out.setdefault(f.stream, f)
    return out


def _stream_side(end: _End | None, fact: Fact | None) -> Endpoint | None:
    """A stream's side: its goroutine, else the process alone (no goroutine of it waits
    on that stream: the transport's reader does not stand for a stream)."""
    if end is None:
        return None
    return Endpoint(end.pid, fact.goroutine if fact else None)


def _endpoint(end: _End | None, fact: Fact | None) -> Endpoint | None:
    if end is None:
        return None
    if fact is None:
        fact = end.best()
    return Endpoint(end.pid, fact.goroutine if fact else None)


# --- user links ----------------------------------------------------------------------------

MAX_USER_PAIRS = 1000


def _user_links(snap: Snapshot, user_links: list) -> list[Link]:
    links: list[Link] = []
    for ul in user_links:
        clients = _values_of(snap, ul.client_function, ul.client_expr.text)
        servers: dict[str, list[Endpoint]] = {}
        for value, ep in _values_of(snap, ul.server_function, ul.server_expr.text):
            servers.setdefault(value, []).append(ep)
        for value, cep in clients:
            for sep in servers.get(value, []):
                if sep != cep and len(links) < MAX_USER_PAIRS:
                    links.append(Link("user", cep, sep, value=value))
    return links


def _values_of(snap: Snapshot, function: str, expr: str) -> list[tuple[str, Endpoint]]:
    out = []
    for p in snap.processes:
        for g in p.goroutines:
            for f in g.frames:
                if f.function != function:
                    continue
                for v in f.variables:
                    if v.name == expr and v.available and v.error is None \
                            and not v.truncated and v.value is not None:
                        out.append((json.dumps(v.value, sort_keys=True), Endpoint(p.pid, g.id)))
    return out
