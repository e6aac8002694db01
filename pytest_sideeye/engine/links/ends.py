"""What the protocols' pairing rules work on: the facts the probes read in one process's
frames, and one process's end of a connection with the facts of its goroutines on it."""
from __future__ import annotations

from dataclasses import dataclass, field

from pytest_sideeye.engine.links.sockets import Socket
from pytest_sideeye.snapshot import Endpoint, Link


@dataclass
class Fact:
    """What one probed frame said: goroutine `goroutine` is in `role` on a connection,
    found by its socket's `fd` when the probe could read it, else by the addresses its
    transport recorded: `local_port`, and `remote` (ip, port), the ip None when only the
    port was read. Wrapped connections (TLS, listener and metrics wrappers) hide the fd
    from the probes' type assertions, not those addresses."""
    goroutine: int
    role: str
    fd: int | None
    method: str | None = None
    path: str | None = None
    stream: int | None = None        # HTTP/2 stream id (gRPC, net/http's HTTP/2)
    local_port: int | None = None
    remote: tuple[str | None, int] | None = None
    tls: bool | None = None          # the connection is TLS (None: not known)
    # What names the connection within its process when its fd could not be read, the same
    # in every frame on it (http2.py: the ClientConn's lastActive); None: nothing.
    conn_key: tuple | None = None


@dataclass
class ProcessFacts:
    facts: list[Fact] = field(default_factory=list)


@dataclass
class End:
    """One process's end of a connection and the facts of its goroutines on it. rank:
    role -> which goroutine stands for this end when several wait on it (lowest first)."""
    pid: int
    sock: Socket
    rank: dict[str, int]
    facts: list[Fact] = field(default_factory=list)
    # The facts of this end's process found on no socket (their connection hidden by a
    # wrapper, with no address recorded): a pairing rule may claim one for this end.
    loose: list[Fact] = field(default_factory=list)

    def best(self) -> Fact | None:
        return min(self.facts, key=lambda f: (self.rank[f.role], f.goroutine), default=None)

    def of(self, role: str) -> Fact | None:
        return next((f for f in sorted(self.facts, key=lambda f: f.goroutine)
                     if f.role == role), None)


def endpoint(end: End | None, fact: Fact | None) -> Endpoint | None:
    """An end's goroutine in a link: fact's, else the one that stands for the end."""
    if end is None:
        return None
    if fact is None:
        fact = end.best()
    return Endpoint(end.pid, fact.goroutine if fact else None)


def tls_of(*facts: Fact | None) -> bool | None:
    """A link's `tls`: True when a side read its connection's TLS state, else None (plain,
    or not known: a plain server connection reads the same as an unread one)."""
    return True if any(f is not None and f.tls for f in facts) else None


def streams(end: End | None, role: str) -> dict[int, Fact]:
    """An end's facts in `role` by stream id (HTTP/2: gRPC, net/http's), the lowest
    goroutine's when two name one stream."""
    if end is None:
        return {}
    out: dict[int, Fact] = {}
    for f in sorted(end.facts, key=lambda f: f.goroutine):
        if f.role == role:
            out.setdefault(f.stream, f)
    return out


def stream_side(end: End | None, fact: Fact | None) -> Endpoint | None:
    """A stream's side: its goroutine, else the process alone (no goroutine of it waits
    on that stream: the transport's reader does not stand for a stream)."""
    if end is None:
        return None
    return Endpoint(end.pid, fact.goroutine if fact else None)


def pair_streams(kind: str, client_role: str, server_role: str, client: End | None,
                 server: End | None, client_addr: str | None, server_addr: str | None
                 ) -> list[Link]:
    """One link per stream of an HTTP/2 connection (gRPC's, net/http's): its caller in
    `client_role` and its handler in `server_role`, paired by stream id (the same at both
    ends). One rule for both protocols, so that they pair streams alike; a protocol whose
    facts carry no path (gRPC: the method names the call) gives links without one."""
    calls = streams(client, client_role)
    handlers = streams(server, server_role)
    links = []
    for sid in sorted(set(calls) | set(handlers)):
        call, handler = calls.get(sid), handlers.get(sid)
        src = call or handler
        links.append(Link(kind, stream_side(client, call), stream_side(server, handler),
                          client_addr, server_addr, method=src.method, path=src.path,
                          stream_id=sid, tls=tls_of(call, handler), transport="h2"))
    return links
