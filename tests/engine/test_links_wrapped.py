"""Links on connections the way real servers carry them (issue 26): fixture wrappedpeers
parks HTTP/1.1 requests behind a listener that wraps each accepted connection
(meteredConn, a struct embedding net.Conn; the client's own dialer wraps its side too) and
over TLS (tls.Listen, a client with its own TLS config), and over Unix sockets (HTTP, and
a raw connection both ends read). The probes' fd assertion (*net.TCPConn) sees through
none of them. Fixture grpcwrapped serves gRPC and HTTP on one port through cmux behind a
limit listener, gRPC over TLS and over a Unix socket. Each link is pinned by the order id
captured on both ends, so a swapped pairing fails (wrapped_links.py)."""
from __future__ import annotations

import shutil

import pytest
from oracle import start_app
from peers_links import functions
from support import GO_VERSIONS
from test_links import wait_parked
from wrapped_links import GRPC_CAPTURE, GRPC_ORDERS, HTTP_ORDERS, check_grpc, check_http

from pytest_sideeye.engine import Target, take_snapshot


@pytest.fixture(scope="module", params=GO_VERSIONS)
def wrapped(request, go_build, needs_root):
    exe = go_build("wrappedpeers", request.param)
    with start_app(exe, "server") as server:
        wrapped_port, tls_port, sock_dir = server.ready_line.split()[1:4]
        try:
            with start_app(exe, "client", f"127.0.0.1:{wrapped_port}",
                           f"127.0.0.1:{tls_port}", sock_dir) as client:
                wait_parked(server, len(HTTP_ORDERS))
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
    snap, spid, cpid, addrs = wrapped
    check_http(snap, cpid, spid, addrs, "127.0.0.1")


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
                                     capture=GRPC_CAPTURE)
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
    for p in snap.processes:
        assert p.error is None, p.error
    return snap, server.pid, client.pid, {"mux": f"127.0.0.1:{mux_port}",
                                          "tls": f"127.0.0.1:{tls_port}",
                                          "unix": f"{sock_dir}/grpc.sock"}


def test_grpc_links_through_cmux_tls_and_a_unix_socket(grpc_wrapped):
    snap, spid, cpid, addrs = grpc_wrapped
    check_grpc(snap, cpid, spid, addrs, "127.0.0.1")
