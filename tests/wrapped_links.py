"""What a snapshot of fixtures wrappedpeers and grpcwrapped must link, end by end, wherever
they run (the host's loopback or a Docker network): each request or stream joins the
client goroutine holding its order to the handler holding the same order, so a swapped
pairing fails, with the addresses, TLS and transport of the way it was carried."""
from __future__ import annotations

from peers_links import captured, functions

# wrappedpeers: order -> how it is carried
HTTP_ORDERS = {11: "wrapped", 12: "wrapped", 21: "tls", 22: "tls", 51: "unix"}
# grpcwrapped: order -> (how it is carried, link kind, client function holding it
# ("order=N"), method or path)
GRPC_ORDERS = {31: ("mux", "grpc", "main.call", "/peers.Parker/Park"),
               32: ("mux", "http", "main.get", "/park?order=32"),
               41: ("tls", "grpc", "main.call", "/peers.Parker/Park"),
               42: ("tls", "grpc", "main.watch", "/peers.Parker/Watch"),
               61: ("unix", "grpc", "main.call", "/peers.Parker/Park"),
               71: ("mux", "grpc", "main.push", "/peers.Parker/Push")}   # blocked sending
GRPC_CAPTURE = {"main.park": ["order"], "main.call": ["order"], "main.watch": ["order"],
                "main.get": ["order"], "main.push": ["order"]}


def client_addr_ok(ln, how: str, client_host: str) -> bool:
    if how == "unix":
        return ln.client_addr is None           # the dialer's end has no name
    return ln.client_addr.startswith(f"{client_host}:")


def check_http(snap, cpid: int, spid: int, addrs: dict, client_host: str,
               orders: dict = HTTP_ORDERS) -> None:
    """addrs: how -> the server's address. The snapshot must capture main.parkHandler's
    and main.call's `order`."""
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(http) == [f"/park?order={o}" for o in sorted(orders)], snap.links
    for order, how in orders.items():
        ln = http[f"/park?order={order}"]
        assert ln.method == "GET" and ln.server_addr == addrs[how], (ln, addrs[how])
        assert client_addr_ok(ln, how, client_host), ln
        assert (ln.tls, ln.transport) == ((True if how == "tls" else None), "h1"), ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        assert ln.client.goroutine and ln.server.goroutine, ln
        assert "net/http.(*persistConn).roundTrip" in functions(snap, cpid, ln.client.goroutine)
        assert "main.parkHandler" in functions(snap, spid, ln.server.goroutine)
        got = (captured(snap, cpid, ln.client.goroutine, "main.call", "order"),
               captured(snap, spid, ln.server.goroutine, "main.parkHandler", "order"))
        assert got == (order, order), f"/park?order={order} links the calls of orders {got}"


def check_grpc(snap, cpid: int, spid: int, addrs: dict, client_host: str,
               orders: dict = GRPC_ORDERS) -> None:
    """addrs: how -> the server's address. The snapshot must capture GRPC_CAPTURE."""
    by_order = {}
    for ln in snap.links:
        assert ln.client and ln.server and ln.client.goroutine and ln.server.goroutine, ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        by_order[captured(snap, spid, ln.server.goroutine, "main.park", "order")] = ln
    assert sorted(by_order) == sorted(orders), snap.links
    for order, (how, kind, caller, what) in orders.items():
        ln = by_order[order]
        assert ln.kind == kind and (ln.path if kind == "http" else ln.method) == what, ln
        assert captured(snap, cpid, ln.client.goroutine, caller, "order") == f"order={order}", \
            f"order {order}'s handler is linked to {functions(snap, cpid, ln.client.goroutine)}"
        assert ln.server_addr == addrs[how], (ln, addrs[how])
        assert client_addr_ok(ln, how, client_host), ln
        assert (ln.tls, ln.transport) == ((True if how == "tls" else None),
                                          "h1" if kind == "http" else "h2"), ln
    # One TLS connection carries both secure streams, each paired by its own id.
    assert by_order[41].client_addr == by_order[42].client_addr
    assert by_order[41].stream_id != by_order[42].stream_id
