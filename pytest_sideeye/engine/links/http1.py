"""HTTP/1.x (net/http): a client goroutine waiting for its response in
persistConn.roundTrip, and the server goroutine serving that request (conn.serve, while
its handler runs). One request is in flight per connection: its link joins the two.

The server's end is found by the client address net/http recorded (conn.remoteAddr) when
the connection is wrapped (TLS, a listener that wraps what it accepts); the client's
persistConn records no address, so a client whose connection is wrapped (TLS, its own
dialer) is found from the server's end: the request of that process the handler serves
(same method, path and query)."""
from __future__ import annotations

from pytest_sideeye.engine.links.ends import End, Fact, endpoint, tls_of
from pytest_sideeye.engine.links.probe_text import conn_fd
from pytest_sideeye.snapshot import Link

PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "net/http.(*persistConn).roundTrip": ("http_client", {
        "fd": conn_fd("pc.conn"),
        "method": ("req.Request.Method",), "path": ("req.Request.URL.Path",),
        "query": ("req.Request.URL.RawQuery",),
        "tls": ("pc.tlsState.HandshakeComplete",)}),
    "net/http.(*conn).serve": ("http_server", {
        "fd": conn_fd("c.rwc"), "remote": ("c.remoteAddr",),
        "method": ("w.req.Method",), "path": ("w.req.URL.Path",),
        "query": ("w.req.URL.RawQuery",),
        "tls": ("c.tlsState.HandshakeComplete",)}),
}
RANK = {"http_client": 0, "http_server": 0}


def keep(role: str, got: dict) -> bool:
    # A server between requests: its read of the next one is a plain "read" fact.
    return role != "http_server" or bool(got.get("method"))


def pair(client: End | None, server: End | None, client_addr: str | None,
         server_addr: str | None) -> list[Link]:
    req = client.of("http_client") if client else None
    handler = server.of("http_server") if server else None
    if req is None and handler is not None and client is not None:
        req = _claim(client, handler)
    if not (req or handler):
        return []
    src = req or handler
    return [Link("http", endpoint(client, req), endpoint(server, handler),
                 client_addr, server_addr, method=src.method, path=src.path,
                 tls=tls_of(req, handler), transport="h1")]


def _claim(client: End, handler: Fact) -> Fact | None:
    """The client's request that the handler serves, among those on no socket: the same
    method, path and query (taken, so that two equal requests pair once each)."""
    for f in sorted(client.loose, key=lambda f: f.goroutine):
        if f.role == "http_client" and (f.method, f.path) == (handler.method, handler.path):
            client.loose.remove(f)
            return f
    return None
