"""HTTP/1.x (net/http): a client goroutine waiting for its response in
persistConn.roundTrip, and the server goroutine serving that request (conn.serve, while
its handler runs). One request is in flight per connection: its link joins the two."""
from __future__ import annotations

from pytest_sideeye.engine.links.ends import End, endpoint
from pytest_sideeye.engine.links.probe_text import TCP_FD
from pytest_sideeye.snapshot import Link

PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "net/http.(*persistConn).roundTrip": ("http_client", {
        "fd": ("pc.conn" + TCP_FD,),
        "method": ("req.Request.Method",), "path": ("req.Request.URL.Path",),
        "query": ("req.Request.URL.RawQuery",)}),
    "net/http.(*conn).serve": ("http_server", {
        "fd": ("c.rwc" + TCP_FD,),
        "method": ("w.req.Method",), "path": ("w.req.URL.Path",),
        "query": ("w.req.URL.RawQuery",)}),
}
RANK = {"http_client": 0, "http_server": 0}


def keep(role: str, got: dict) -> bool:
    # A server between requests: its read of the next one is a plain "read" fact.
    return role != "http_server" or bool(got.get("method"))


def pair(client: End | None, server: End | None, client_addr: str, server_addr: str
         ) -> list[Link]:
    req = client.of("http_client") if client else None
    handler = server.of("http_server") if server else None
    if not (req or handler):
        return []
    src = req or handler
    return [Link("http", endpoint(client, req), endpoint(server, handler),
                 client_addr, server_addr, method=src.method, path=src.path)]
