"""Links on connections the way real servers carry them (issue 26): fixture wrappedpeers
parks HTTP/1.1 requests behind a listener that wraps each accepted connection
(meteredConn, a struct embedding net.Conn; the client's own dialer wraps its side too) and
over TLS (tls.Listen, a client with its own TLS config), and over Unix sockets (HTTP, and
a raw connection both ends read). The probes' fd assertion (*net.TCPConn) sees through
none of them. Each link is pinned by the order id captured on both
ends, so a swapped pairing fails."""
from __future__ import annotations

import shutil

import pytest
from oracle import start_app
from peers_links import captured, functions
from support import GO_VERSIONS
from test_links import wait_parked

from pytest_sideeye.engine import Target, take_snapshot

ORDERS = {11: "wrapped", 12: "wrapped", 21: "tls", 22: "tls", 51: "unix"}


@pytest.fixture(scope="module", params=GO_VERSIONS)
def wrapped(request, go_build, needs_root):
    exe = go_build("wrappedpeers", request.param)
    with start_app(exe, "server") as server:
        wrapped_port, tls_port, sock_dir = server.ready_line.split()[1:4]
        try:
            with start_app(exe, "client", f"127.0.0.1:{wrapped_port}",
                           f"127.0.0.1:{tls_port}", sock_dir) as client:
                wait_parked(server, len(ORDERS))
                snap = take_snapshot([Target(server.pid), Target(client.pid)],
                                     capture={"main.parkHandler": ["order"],
                                              "main.call": ["order"]})
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
    for p in snap.processes:
        assert p.error is None, p.error
    return snap, server.pid, client.pid, {"wrapped": f"127.0.0.1:{wrapped_port}",
                                          "tls": f"127.0.0.1:{tls_port}",
                                          "unix": f"{sock_dir}/http.sock",
                                          "raw": f"{sock_dir}/raw.sock"}


def test_each_request_links_its_caller_to_its_handler(wrapped):
    snap, spid, cpid, ports = wrapped
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(http) == [f"/park?order={o}" for o in sorted(ORDERS)], snap.links
    for order, how in ORDERS.items():
        ln = http[f"/park?order={order}"]
        assert ln.method == "GET" and ln.server_addr == ports[how], ln
        if how == "unix":
            assert ln.client_addr is None, ln       # the dialer's end has no name
        assert (ln.tls, ln.transport) == ((True if how == "tls" else None), "h1"), ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        assert ln.client.goroutine and ln.server.goroutine, ln
        assert "net/http.(*persistConn).roundTrip" in functions(snap, cpid, ln.client.goroutine)
        assert "main.parkHandler" in functions(snap, spid, ln.server.goroutine)
        got = (captured(snap, cpid, ln.client.goroutine, "main.call", "order"),
               captured(snap, spid, ln.server.goroutine, "main.parkHandler", "order"))
        assert got == (order, order), f"/park?order={order} links the calls of orders {got}"


def test_unix_link_joins_the_two_readers(wrapped):
    """The transports' readers wait on the requests' connections too: the requests explain
    them. The raw Unix connection's two readers are a unix link, dialer to acceptor."""
    snap, spid, cpid, ports = wrapped
    [raw] = [ln for ln in snap.links if ln.kind != "http"]
    assert raw.kind == "unix" and (raw.client.pid, raw.server.pid) == (cpid, spid), raw
    assert (raw.client_addr, raw.server_addr) == (None, ports["raw"]), raw
    assert "main.unixWait" in functions(snap, cpid, raw.client.goroutine)
    assert snap.goroutine(spid, raw.server.goroutine).created_by.function == "main.serveRaw"


# --- grpc-go behind cmux and a limit listener, over TLS, over a Unix socket ---------------

# order -> (link kind, client function holding it ("order=N"), method or path)
GRPC_ORDERS = {31: ("grpc", "main.call", "/peers.Parker/Park"),
               32: ("http", "main.get", "/park?order=32"),
               41: ("grpc", "main.call", "/peers.Parker/Park"),
               42: ("grpc", "main.watch", "/peers.Parker/Watch"),
               61: ("grpc", "main.call", "/peers.Parker/Park"),
               71: ("grpc", "main.push", "/peers.Parker/Push")}   # blocked sending


@pytest.fixture(scope="module", params=GO_VERSIONS)
def grpc_wrapped(request, go_build, needs_root):
    from support import GRPC_GOPATH
    exe = go_build("grpcwrapped", request.param, gopath=GRPC_GOPATH)
    with start_app(exe, "server") as server:
        mux_port, tls_port, sock_dir = server.ready_line.split()[1:4]
        try:
            with start_app(exe, "client", f"127.0.0.1:{mux_port}", f"127.0.0.1:{tls_port}",
                           sock_dir) as client:
                wait_parked(server, len(GRPC_ORDERS))
                snap = take_snapshot([Target(server.pid), Target(client.pid)],
                                     capture={"main.park": ["order"], "main.call": ["order"],
                                              "main.watch": ["order"], "main.get": ["order"],
                                              "main.push": ["order"]})
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
    for p in snap.processes:
        assert p.error is None, p.error
    return snap, server.pid, client.pid, {"mux": f"127.0.0.1:{mux_port}",
                                          "tls": f"127.0.0.1:{tls_port}",
                                          "unix": f"{sock_dir}/grpc.sock"}


def test_grpc_links_through_cmux_tls_and_a_unix_socket(grpc_wrapped):
    snap, spid, cpid, ports = grpc_wrapped
    by_order = {}
    for ln in snap.links:
        assert ln.client and ln.server and ln.client.goroutine and ln.server.goroutine, ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        got = captured(snap, spid, ln.server.goroutine, "main.park", "order")
        by_order[got] = ln
    assert sorted(by_order) == sorted(GRPC_ORDERS), snap.links
    for order, (kind, caller, what) in GRPC_ORDERS.items():
        ln = by_order[order]
        secure = order in (41, 42)
        where = "unix" if order == 61 else "tls" if secure else "mux"
        assert ln.kind == kind and (ln.path if kind == "http" else ln.method) == what, ln
        assert captured(snap, cpid, ln.client.goroutine, caller, "order") == f"order={order}", \
            f"order {order}'s handler is linked to {functions(snap, cpid, ln.client.goroutine)}"
        assert ln.server_addr == ports[where], ln
        assert (ln.tls, ln.transport) == ((True if secure else None),
                                          "h1" if kind == "http" else "h2"), ln
    # One TLS connection carries both secure streams, each paired by its own id.
    assert by_order[41].client_addr == by_order[42].client_addr
    assert by_order[41].stream_id != by_order[42].stream_id
