"""Links across containers on a Docker network, through the plugin, on connections the way
real servers carry them (issue 26): fixtures wrappedpeers (a wrapping listener and dialer,
HTTP/1.1 over TLS) and grpcwrapped (cmux behind a limit listener, gRPC over TLS, a client
blocked sending), each as two go_service containers. The Unix-socket cases stay on the host
(tests/engine/test_links_wrapped.py): two containers share no socket."""
from __future__ import annotations

from support import GOAPPS, GRPC_GOPATH
from test_plugin_links import wait_parked
from wrapped_links import GRPC_CAPTURE, GRPC_ORDERS, HTTP_ORDERS, check_grpc, check_http

from pytest_sideeye import go_service

WRAPPED = str(GOAPPS / "wrappedpeers")
GRPC_WRAPPED = str(GOAPPS / "grpcwrapped")

wrapserver = go_service("wrapserver", source=WRAPPED, args=["server", "0.0.0.0", "8080", "8443"],
                        ports=[8080, 8443], ready_tcp=[8080, 8443], ready_timeout=30)
wrapclient = go_service("wrapclient", source=WRAPPED,
                        args=["client", "wrapserver:8080", "wrapserver:8443"],
                        ready_log="READY", ready_timeout=30)
gwrapserver = go_service("gwrapserver", source=GRPC_WRAPPED, gopath=GRPC_GOPATH,
                         args=["server", "0.0.0.0", "7070", "7443"], ports=[7070, 7443],
                         ready_tcp=[7070, 7443], ready_timeout=30)
gwrapclient = go_service("gwrapclient", source=GRPC_WRAPPED, gopath=GRPC_GOPATH,
                         args=["client", "gwrapserver:7070", "gwrapserver:7443"],
                         ready_log="READY", ready_timeout=30)


def ends(snap, server_name: str, client_name: str):
    by_service = {p.service: p for p in snap.processes}
    server, client = by_service[server_name], by_service[client_name]
    assert server.error is None and client.error is None
    return server.pid, client.pid


def test_wrapped_and_tls_http_across_containers(wrapserver, wrapclient, sideeye_snapshot,
                                                needs_root):
    orders = {o: how for o, how in HTTP_ORDERS.items() if how != "unix"}
    wait_parked(wrapserver, len(orders))
    snap = sideeye_snapshot(capture={"main.parkHandler": ["order"], "main.call": ["order"]})
    spid, cpid = ends(snap, "wrapserver", "wrapclient")
    ip = wrapserver.ip_address()
    check_http(snap, cpid, spid, {"wrapped": f"{ip}:8080", "tls": f"{ip}:8443"},
               wrapclient.ip_address(), orders)


def test_grpc_through_cmux_and_tls_across_containers(gwrapserver, gwrapclient, sideeye_snapshot,
                                                     needs_root):
    orders = {o: v for o, v in GRPC_ORDERS.items() if v[0] != "unix"}
    wait_parked(gwrapserver, len(orders))
    snap = sideeye_snapshot(capture=GRPC_CAPTURE)
    spid, cpid = ends(snap, "gwrapserver", "gwrapclient")
    ip = gwrapserver.ip_address()
    check_grpc(snap, cpid, spid, {"mux": f"{ip}:7070", "tls": f"{ip}:7443"},
               gwrapclient.ip_address(), orders)
