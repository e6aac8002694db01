"""Links between goroutines, across processes: who waits on whom (the snapshot's `links`,
docs/snapshot-format.md), and the wait chains they form.

A link joins the goroutine waiting on a peer (`client`) to the goroutine serving it
(`server`): an HTTP request to the handler serving it, a gRPC stream to its handler, the
two ends of a TCP connection, or two frames whose captured values are equal (a user
link). The engine finds them (engine/links/); this module is only the model and the
graph walk, with nothing read from a process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

KINDS = ("http", "grpc", "tcp", "unix", "user")
# What carries an http or grpc link's request: HTTP/1.x or HTTP/2.
TRANSPORTS = ("h1", "h2")

GoroutineKey = tuple[int, int]      # (pid, goroutine id)


@dataclass(frozen=True)
class Endpoint:
    """One side of a link: a process in the snapshot, and the goroutine on that side when
    one can be named (None: the process holds the connection, no goroutine waits on it)."""
    pid: int
    goroutine: int | None = None

    @property
    def key(self) -> GoroutineKey | None:
        return (self.pid, self.goroutine) if self.goroutine is not None else None

    def to_json(self) -> dict:
        return {"pid": self.pid, "goroutine": self.goroutine}

    @classmethod
    def from_json(cls, d) -> "Endpoint | None":
        if d is None:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("pid"), int) or \
                not isinstance(d.get("goroutine"), (int, type(None))):
            raise ValueError("a link's side should be {\"pid\": int, \"goroutine\": int|null}")
        return cls(d["pid"], d.get("goroutine"))


_TEXT_FIELDS = ("client_addr", "server_addr", "method", "path", "value")


@dataclass
class Link:
    """`client` waits on `server`. A side outside the snapshot is None and named only by
    its address. Fields that do not apply stay None and are left out of the JSON."""
    kind: str
    client: Endpoint | None
    server: Endpoint | None
    client_addr: str | None = None
    server_addr: str | None = None
    method: str | None = None        # HTTP method, or the gRPC full method name
    path: str | None = None          # HTTP path and query
    stream_id: int | None = None     # HTTP/2 stream
    value: str | None = None         # user links: the equal value, as JSON text
    tls: bool | None = None          # True: the connection is TLS (None: plain or not known)
    transport: str | None = None     # TRANSPORTS: what carries the request (None: not known)

    def to_json(self) -> dict:
        d = {"kind": self.kind,
             "client": self.client.to_json() if self.client else None,
             "server": self.server.to_json() if self.server else None}
        for name in (*_TEXT_FIELDS, "stream_id", "tls", "transport"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        return d

    @classmethod
    def from_json(cls, d) -> "Link":
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise ValueError(f"a link's kind should be one of {', '.join(KINDS)}")
        kw = {}
        for name in _TEXT_FIELDS:
            v = d.get(name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"link field {name!r} should be a string")
            kw[name] = v
        sid = d.get("stream_id")
        if sid is not None and (not isinstance(sid, int) or isinstance(sid, bool)):
            raise ValueError("link field 'stream_id' should be an integer")
        tls = d.get("tls")
        if tls is not None and not isinstance(tls, bool):
            raise ValueError("link field 'tls' should be true or false")
        transport = d.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            raise ValueError(f"link field 'transport' should be one of {', '.join(TRANSPORTS)}")
        return cls(d["kind"], Endpoint.from_json(d.get("client")),
                   Endpoint.from_json(d.get("server")), stream_id=sid, tls=tls,
                   transport=transport, **kw)

    @property
    def request(self) -> str:
        """What the client asked for, as one might write it: `POST /cancel`,
        `/shop.Orders/Place (stream 3)`, or '' for a bare connection."""
        if self.kind == "grpc":
            return (self.method or "") + (f" (stream {self.stream_id})"
                                          if self.stream_id is not None else "")
        parts = [p for p in (self.method, self.path) if p]
        if self.kind == "user" and self.value is not None:
            parts.append(f"= {self.value}")
        return " ".join(parts)


@dataclass
class Chain:
    """Goroutines each waiting on the next, across links; the last one is blocked on
    something of its own (a lock, a channel, a sleep) or on a peer outside the snapshot."""
    goroutines: list[GoroutineKey]
    links: list[Link] = field(default_factory=list)   # links[i]: goroutines[i] -> [i+1]
    cycle: bool = False    # the last goroutine waits on one earlier in the chain


def waiting_on(links: Iterable[Link], pid: int, goroutine: int) -> list[Link]:
    """The links on which this goroutine is the waiting side."""
    return [ln for ln in links if ln.client and ln.client.key == (pid, goroutine)]


def serving(links: Iterable[Link], pid: int, goroutine: int) -> list[Link]:
    """The links on which this goroutine is the serving side."""
    return [ln for ln in links if ln.server and ln.server.key == (pid, goroutine)]


def chains(links: list[Link], exists: Callable[[GoroutineKey], bool] = lambda k: True
           ) -> list[Chain]:
    """The wait chains: from each goroutine that waits on a peer and is not itself served
    to (or serves only someone outside the snapshot), follow the links to the goroutine
    that waits on nothing further. Longest first; a chain that is the tail of another is
    left out. Only links with a goroutine on both sides chain."""
    nxt: dict[GoroutineKey, Link] = {}
    served: set[GoroutineKey] = set()
    for ln in links:
        c = ln.client.key if ln.client else None
        s = ln.server.key if ln.server else None
        if c is None or s is None or not exists(c) or not exists(s):
            continue
        nxt.setdefault(c, ln)    # the first link of a goroutine is its wait
        served.add(s)
    out: list[Chain] = []
    for start in nxt:
        if start in served and not _in_cycle(start, nxt):
            continue
        chain = Chain([start])
        seen = {start}
        while chain.goroutines[-1] in nxt:
            ln = nxt[chain.goroutines[-1]]
            s = ln.server.key
            chain.links.append(ln)
            if s in seen:
                chain.cycle = True
                chain.goroutines.append(s)
                break
            chain.goroutines.append(s)
            seen.add(s)
        out.append(chain)
    out = _without_cycle_rotations(out)
    out.sort(key=lambda c: (-len(c.goroutines), c.goroutines))
    return out


def _in_cycle(start: GoroutineKey, nxt: dict[GoroutineKey, Link]) -> bool:
    seen, k = set(), start
    while k in nxt and k not in seen:
        seen.add(k)
        k = nxt[k].server.key
    return k == start


def _without_cycle_rotations(chains_: list[Chain]) -> list[Chain]:
    """A cycle is found from each of its members: keep it once (from its smallest key)."""
    out, cycles = [], set()
    for c in chains_:
        if c.cycle and c.goroutines[0] == c.goroutines[-1]:
            members = frozenset(c.goroutines)
            if members in cycles or c.goroutines[0] != min(members):
                continue
            cycles.add(members)
        out.append(c)
    return out
