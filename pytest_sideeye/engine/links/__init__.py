"""Links across processes: which goroutine waits on which, over which connection.

Built in, with nothing to configure. In the pause, a built-in capture (the protocols'
PROBES, read like any captured variable, by the same BPF and Python paths) reads from the
frames of the runtime's and net's own functions the socket each waiting goroutine uses
(its fd) and, for HTTP and gRPC, the request. After the resume, each process's fds are
resolved to TCP 4-tuples (sockets.py), and each connection with a goroutine waiting on it
is given to the protocols' pairing rules, in PROTOCOLS order: the first that finds a link
on it wins. User links (capture.UserLink, user.py) join two frames whose captured values
are equal.

One module per protocol, each with its probes (PROBES: function -> (role, {fact:
alternative expressions})), its ranks (RANK: which goroutine stands for an end), keep()
(whether a frame's values make a fact) and its pairing rule (pair()); optionally
REQUIRED (role -> the facts without which its probe is dropped from a binary), conn_key()
(what names a frame's connection in its process when its fd cannot be read) and resolve()
(giving a process's facts the fds their connections' other frames read): adding a
protocol is adding a module and naming it in PROTOCOLS.

    probes = probe_spec(info)                       # per binary, before the pause
    facts = take_facts(proc, probes, user_spec)     # after decoding, per process
    links = find_links(snapshot, {pid: facts}, user_links)
"""
from __future__ import annotations

import hashlib
import ipaddress
import json

from pytest_sideeye import capture as capture_mod
from pytest_sideeye.engine.links import grpc, http1, http2, tcp, user
from pytest_sideeye.engine.links.ends import End, Fact, ProcessFacts
from pytest_sideeye.engine.links.sockets import NetView, Socket, _address, address_text, format_addr
from pytest_sideeye.engine.links.user import MAX_USER_PAIRS
from pytest_sideeye.errors import CaptureSpecError
from pytest_sideeye.files import JsonCache
from pytest_sideeye.memo import MEMO
from pytest_sideeye.snapshot import Link, Process, Snapshot

__all__ = ["PROBES", "PROTOCOLS", "MAX_USER_PAIRS", "Fact", "NetView", "ProcessFacts",
           "Socket", "find_links", "format_addr", "merged", "probe_spec", "take_facts",
           "_address"]

# The protocols, most specific first: a connection is gRPC if any stream on it says so,
# net/http's HTTP/2 if a stream does, HTTP/1 if a request does, else a plain TCP
# connection (tcp pairs every connection).
PROTOCOLS = (grpc, http2, http1, tcp)
# What each built-in probe reads in a frame of its function, and what the frame says.
# Each fact may be read by alternative expressions (the first that holds a value wins).
# Every expression is checked against the binary's DWARF (probe_spec): one that a Go
# version or program does not have is dropped for that binary, never an error.
PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    fn: probe for proto in PROTOCOLS for fn, probe in proto.PROBES.items()}
_PROTOCOL_OF_ROLE = {role: proto for proto in PROTOCOLS for role in proto.RANK}
_RANK = {role: rank for proto in PROTOCOLS for role, rank in proto.RANK.items()}
# The facts without which a role's probe is dropped from a binary (a protocol's REQUIRED).
_REQUIRED = {role: list(facts) for proto in PROTOCOLS
             for role, facts in getattr(proto, "REQUIRED", {}).items()}

# The probes a binary accepts, on disk by build id and the probes' own text: checking them
# plans each against the DWARF, ~0.5 s of a `sideeye snapshot` run without the agent.
# Kept with the binary analyses (the same key: the build id).
PROBE_CACHE = JsonCache("binary", schema=1)


def probe_spec(info) -> capture_mod.CaptureSpec:
    """The built-in probes this binary can run: functions it has, expressions its DWARF
    accepts. Empty without DWARF. Cached by build id, in the memo (with the binary's
    other entries, memo.py) and on disk."""
    return MEMO.remember(info.build_id, "probes", info.build_id, lambda: _cached_probes(info))


def _cached_probes(info) -> capture_mod.CaptureSpec:
    if not info.has_dwarf:
        return capture_mod.CaptureSpec()   # where a variable is, only DWARF says
    key = "probes-" + hashlib.sha256(json.dumps([info.build_id, PROBES, _REQUIRED]).encode()
                                     ).hexdigest()[:32]
    kept = PROBE_CACHE.load(key)
    if not (isinstance(kept, dict) and all(isinstance(v, list) for v in kept.values())):
        kept = {fn: [e.text for e in exprs]
                for fn, exprs in _checked_probes(info).functions.items()}
        PROBE_CACHE.store(key, kept)
    return capture_mod.CaptureSpec({fn: [capture_mod.parse_expr(t) for t in texts]
                                    for fn, texts in kept.items()})


def _checked_probes(info) -> capture_mod.CaptureSpec:
    out = capture_mod.CaptureSpec()
    for fn, (role, exprs) in PROBES.items():
        if info.symtab.func_by_name(fn) is None and not info.symtab.inlined_ranges(fn):
            continue
        kept = []
        for text in (t for alternatives in exprs.values() for t in alternatives):
            try:
                capture_mod.make_plan(info, {fn: [text]})
            except (CaptureSpecError, Exception):   # noqa: BLE001 - a probe never fails a snapshot
                continue
            kept.append(capture_mod.parse_expr(text))
        texts = {e.text for e in kept}
        # A probe that cannot read what its role needs reads for nothing; worse where its
        # function is inlined (Go 1.24's ClientConn.RoundTrip, named for Go 1.21's): the
        # capture reads such frames in the slow Python rounds, in the pause.
        if kept and all(texts & set(exprs[fact]) for fact in _REQUIRED.get(role, ())):
            out.functions[fn] = kept
    return out


def merged(user: capture_mod.CaptureSpec | None,
           probes: capture_mod.CaptureSpec) -> capture_mod.CaptureSpec | None:
    """The user's capture spec plus the probes (an expression in both is read once)."""
    if not probes:
        return user
    out = capture_mod.CaptureSpec({fn: list(es) for fn, es in
                                   (user.functions if user else {}).items()},
                                  dict(user.types) if user else {},
                                  user.contexts if user else ())
    for fn, exprs in probes.functions.items():
        bucket = out.functions.setdefault(fn, [])
        bucket += [e for e in exprs if e not in bucket]
    return out


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
    for proto in PROTOCOLS:
        if hasattr(proto, "resolve"):
            proto.resolve(out.facts)
    return out


def _first(values: dict, alternatives: tuple[str, ...]):
    return next((values[t] for t in alternatives if values.get(t) is not None), None)


def _fact(goroutine: int, role: str, got: dict) -> Fact | None:
    fd, local_port = _int(got.get("fd")), _int(got.get("local_port"))
    remote = _remote(got)
    # Neither the socket nor its addresses: kept, a protocol may pair it by what it asks.
    if not _PROTOCOL_OF_ROLE[role].keep(role, got):
        return None
    method, path, query = (got.get(k) for k in ("method", "path", "query"))
    if isinstance(path, str) and isinstance(query, str) and query:
        path = f"{path}?{query}"
    tls = got.get("tls")
    proto = _PROTOCOL_OF_ROLE[role]
    return Fact(goroutine, role, fd,
                method if isinstance(method, str) else None,
                path if isinstance(path, str) else None,
                _int(got.get("stream")), local_port, remote,
                tls if isinstance(tls, bool) else None,
                proto.conn_key(role, got) if hasattr(proto, "conn_key") else None)


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _remote(got: dict) -> tuple[str | None, int] | None:
    """The peer's address as the transport recorded it: a "host:port" text (net/http's
    server) or a port (grpc-go's net.Addr, read as *net.TCPAddr)."""
    text = got.get("remote")
    if isinstance(text, str) and text:
        host, _, port = text.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
            port_n = int(port)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return str(ip), port_n
    port_n = _int(got.get("remote_port"))
    return (None, port_n) if port_n else None


# --- matching ----------------------------------------------------------------------------

def find_links(snap: Snapshot, facts: dict[int, ProcessFacts],
               user_links: list | None = None, view: NetView | None = None) -> list[Link]:
    """Every link between the goroutines of the snapshot's processes (and to peers outside
    it, named by address)."""
    view = view or NetView()
    links = _connection_links(snap, facts, view)
    links += user.user_links(snap, user_links or [])
    return links


def _connection_links(snap: Snapshot, facts: dict[int, ProcessFacts], view: NetView
                      ) -> list[Link]:
    if not any(pf.facts for pf in facts.values()):
        # No goroutine waits on a socket, so there is no connection to link. Worth the
        # check: each namespace's TCP tables take ~4 ms per file to read (the kernel
        # walks its whole connection hash table), whatever few sockets they list.
        return []
    # Every TCP socket of every process, indexed by (namespace for loopback, local, remote):
    # a loopback address means the same thing only inside one network namespace; Unix
    # sockets by ("unix", (name, inode), (peer's name, peer's inode)).
    ends: dict[tuple, End] = {}
    waited: dict[tuple, None] = {}     # sockets some goroutine waits on, in order
    for p in snap.processes:
        if p.error is not None:
            continue
        mine = facts.get(p.pid, ProcessFacts()).facts
        socks = view.sockets(p.pid)
        if any(f.fd is not None and f.fd not in socks for f in mine):
            socks = {**view.unix_sockets(p.pid), **socks}   # only then: a netlink dump
        if not socks:
            continue
        ns = view.netns(p.pid)
        by_fd: dict[int, tuple] = {}
        by_remote_port: dict[int, list[tuple]] = {}
        loose: list[Fact] = []      # shared by the process's ends
        for fd, s in socks.items():
            key = ("unix" if s.unix else _scope(ns, s.local), s.local, s.remote)
            ends.setdefault(key, End(p.pid, s, _RANK, loose=loose))
            by_fd[fd] = key
            if not s.unix:
                by_remote_port.setdefault(s.remote[1], []).append(key)
        for fact in mine:
            key = by_fd.get(fact.fd) if fact.fd is not None else None
            if key is None:
                key = _by_addresses(fact, by_remote_port)
            if key is None:
                # Not a TCP socket (a pipe, a Unix socket, a file), or a wrapped one.
                loose.append(fact)
                continue
            ends[key].facts.append(fact)
            waited[key] = None
    links, done = [], set()
    for key in waited:
        scope, local, remote = key
        # A Unix socket's inode is unique on the machine; a loopback address only in its
        # namespace.
        peer_key = (scope if scope == "unix" else _scope(scope, remote), remote, local)
        conn = frozenset((key, peer_key))
        if conn in done:
            continue
        done.add(conn)
        links += _links(ends[key], ends.get(peer_key))
    return links


def _by_addresses(fact: Fact, by_remote_port: dict[int, list[tuple]]) -> tuple | None:
    """The socket whose addresses the fact's transport recorded (the first, in the rare
    case that one process has two connections with the same ports)."""
    if fact.remote is None:
        return None
    ip, port = fact.remote
    for key in by_remote_port.get(port, ()):
        _scope_, local, remote = key
        if (ip is None or remote[0] == ip) and fact.local_port in (None, local[1]):
            return key
    return None


def _scope(ns: str, addr: tuple[str, int]) -> str | None:
    return ns if ipaddress.ip_address(addr[0]).is_loopback else None


def _links(a: End, b: End | None) -> list[Link]:
    """The links over one connection: a has a goroutine waiting on it; b is the other end
    when its process is in the snapshot. The first protocol whose rule finds a link on it
    says what it carries."""
    # Which end accepted the connection: its local address listens.
    client, server = (b, a) if a.sock.listening_local else (a, b)
    sock = (client or server).sock
    client_addr = address_text(sock, client.sock.local if client else server.sock.remote)
    server_addr = address_text(sock, server.sock.local if server else client.sock.remote)
    for proto in PROTOCOLS:
        found = proto.pair(client, server, client_addr, server_addr)
        if found:
            return found
    return []
