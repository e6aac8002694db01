"""HTTP/2 without gRPC (net/http's own server and client, over TLS and h2c): a client
goroutine waiting for its response, and the goroutine running that stream's handler, one
link per stream, the two sides paired by stream id on their connection (a stream's id is
the same at both ends), like gRPC.

Go 1.21 to 1.26 bundle the HTTP/2 code into net/http (types `http2serverConn`,
`http2ClientConn`, ...); Go 1.27 moved it to net/http/internal/http2 (`serverConn`,
`ClientConn`, ...). Each probe names both; a binary keeps the ones its DWARF has.

The client: the caller waits in the ClientConn's RoundTrip (1.21) or roundTrip (1.24 on),
which holds its stream (`cs`; 1.27: `req.stream`). The connection is found by its fd when
it is plain (h2c); over TLS, or any wrapping, by the connection's reader goroutine: its
ClientConn.readLoop frame holds the same ClientConn, and its innermost read
(internal/poll's FD.Read, tcp.py's probe) the fd. The two are joined by the ClientConn's
`lastActive` (a time stamp in ns that every new stream sets): equal in both frames, read in
the same pause, different for two connections (resolve()).

The server: while the handler runs, DWARF puts the handler goroutine's runHandler `rw`
and `req` in registers (they were passed to the handler), and serverHandler.ServeHTTP's
and unencryptedHTTP2Request.ServeHTTP's (h2c, Go 1.24 to 1.26) likewise. The frames that
still hold them, checked on Go 1.21.13, 1.24.11 and 1.27.3:
- Go 1.24 to 1.26, TLS and h2c: runHandler, through the copies its deferred closure keeps
  in its frame (binary/closure_copies.py; that closure's DWARF gives their offsets since
  Go 1.23, so not on 1.21);
- Go 1.21 to 1.26 over TLS: initALPNRequest.ServeHTTP (every request of a connection whose
  ALPN protocol net/http's server handed over, h2 here), its `rw` a *http2responseWriter;
- Go 1.27, TLS and h2c: http2Handler.ServeHTTP, the adapter of net/http/internal/http2's
  handlers, its `w` the stream's *responseWriter.
Go 1.21 has no h2c of net/http's own. The server's connection is found by the client
address it recorded (`remoteAddrStr`, wrapped or TLS), or by its fd when plain."""
from __future__ import annotations

from pytest_sideeye.engine.links.ends import End, Fact, pair_streams
from pytest_sideeye.engine.links.probe_text import conn_fd
from pytest_sideeye.snapshot import Link

_BUNDLED, _INTERNAL = "net/http.", "net/http/internal/http2."


def _client(cs: str) -> dict[str, tuple[str, ...]]:
    """A caller's facts, its stream `cs` (an expression)."""
    return {"stream": (cs + ".ID",), "fd": conn_fd(cs + ".cc.tconn"),
            "conn_wall": (cs + ".cc.lastActive.wall",), "conn_ext": (cs + ".cc.lastActive.ext",),
            "method": ("req.Method",), "path": ("req.URL.Path",), "query": ("req.URL.RawQuery",),
            "tls": (cs + ".cc.tlsState.HandshakeComplete",)}


def _server(rws: str, req: str) -> dict[str, tuple[str, ...]]:
    """A handler's facts: its response writer's state `rws` and request `req`."""
    sc = rws + ".stream.sc"
    return {"stream": (rws + ".stream.id",), "fd": conn_fd(sc + ".conn"),
            "remote": (sc + ".remoteAddrStr",),
            "method": (req + ".Method",), "path": (req + ".URL.Path",),
            "query": (req + ".URL.RawQuery",), "tls": (sc + ".tlsState.HandshakeComplete",)}


_READER = {"conn_wall": ("cc.lastActive.wall",), "conn_ext": ("cc.lastActive.ext",)}
PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    _BUNDLED + "(*http2ClientConn).RoundTrip": ("h2_client", _client("cs")),        # 1.21
    _BUNDLED + "(*http2ClientConn).roundTrip": ("h2_client", _client("cs")),        # 1.24
    _INTERNAL + "(*ClientConn).roundTrip": ("h2_client", _client("req.stream")),    # 1.27
    _BUNDLED + "(*http2ClientConn).readLoop": ("h2_conn", _READER),
    _INTERNAL + "(*ClientConn).readLoop": ("h2_conn", _READER),
    _BUNDLED + "(*http2serverConn).runHandler": ("h2_server", _server("rw.rws", "req")),
    _BUNDLED + "initALPNRequest.ServeHTTP": (
        "h2_server", _server("rw.(*net/http.http2responseWriter).rws", "req")),
    _BUNDLED + "http2Handler.ServeHTTP": ("h2_server", _server("w.rws", "req")),    # 1.27
}
# h2_conn facts stand for no end: they only lend their fd to the streams (resolve()).
RANK = {"h2_client": 0, "h2_server": 0, "h2_conn": 3}
# A binary keeps a probe only where it reads these (Go 1.24's ClientConn.RoundTrip has no
# stream: Go 1.21's is probed).
REQUIRED = {"h2_client": ("stream",), "h2_server": ("stream",),
            "h2_conn": ("conn_wall", "conn_ext")}


def keep(role: str, got: dict) -> bool:
    if role == "h2_conn":
        return _key(got) is not None
    stream = got.get("stream")
    return isinstance(stream, int) and not isinstance(stream, bool) and stream > 0


def _key(got: dict) -> tuple[int, int] | None:
    wall, ext = got.get("conn_wall"), got.get("conn_ext")
    if isinstance(wall, int) and isinstance(ext, int) and (wall or ext):
        return wall, ext
    return None


def conn_key(role: str, got: dict) -> tuple[int, int] | None:
    return _key(got) if role in ("h2_client", "h2_conn") else None


def resolve(facts: list[Fact]) -> None:
    """One process's callers whose connection's fd the probes could not read (TLS, a
    wrapping dialer) take it from their connection's reader goroutine: the fd its
    innermost read waits on."""
    fd_of_goroutine = {f.goroutine: f.fd for f in facts
                       if f.role in ("read", "write") and f.fd is not None}
    fd_of_conn = {f.conn_key: fd_of_goroutine[f.goroutine] for f in facts
                  if f.role == "h2_conn" and f.goroutine in fd_of_goroutine}
    for f in facts:
        if f.role == "h2_client" and f.fd is None and f.conn_key in fd_of_conn:
            f.fd = fd_of_conn[f.conn_key]


def pair(client: End | None, server: End | None, client_addr: str | None,
         server_addr: str | None) -> list[Link]:
    return pair_streams("http", "h2_client", "h2_server", client, server, client_addr,
                        server_addr)
