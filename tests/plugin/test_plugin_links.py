"""Links across containers on a Docker network, through the plugin: fixture `peers` runs
as two go_service containers (linkserver, linkclient) that find each other by name. The
snapshot the test asks for must link the client's goroutines to the server's, with the
addresses each container sees on the test's network."""
from __future__ import annotations

import time

from peers_links import check_http_ends, check_tcp_ends
from support import GOAPPS, GRPC_GOPATH

from pytest_sideeye import go_service

PEERS = str(GOAPPS / "peers")

linkserver = go_service("linkserver", source=PEERS, args=["server", "0.0.0.0", "8080", "9090"],
                        ports=[8080, 9090], ready_tcp=[8080, 9090], ready_timeout=30)
linkclient = go_service("linkclient", source=PEERS,
                        args=["client", "linkserver:8080", "linkserver:9090"],
                        ready_log="READY", ready_timeout=30)


grpcserver = go_service("grpcserver", source=str(GOAPPS / "grpcpeers"), gopath=GRPC_GOPATH,
                        args=["server", "0.0.0.0", "7070"], ports=[7070], ready_tcp=[7070],
                        ready_timeout=30)
grpcclient = go_service("grpcclient", source=str(GOAPPS / "grpcpeers"), gopath=GRPC_GOPATH,
                        args=["client", "grpcserver:7070"], ready_log="READY", ready_timeout=30)


def wait_parked(svc, n: int = 2, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while svc.logs().count("parked ") < n:
        assert time.monotonic() < deadline, svc.logs()
        time.sleep(0.1)


def test_links_across_containers(linkserver, linkclient, sideeye_snapshot, needs_root):
    wait_parked(linkserver)
    snap = sideeye_snapshot(links=["main.call:order == main.parkHandler:order"],
                            capture={"main.parkHandler": ["order"]})
    by_service = {p.service: p for p in snap.processes}
    server, client = by_service["linkserver"], by_service["linkclient"]
    assert server.error is None and client.error is None
    server_ip, client_ip = linkserver.ip_address(), linkclient.ip_address()
    kinds = sorted(ln.kind for ln in snap.links)
    assert kinds == ["http", "http", "tcp", "user", "user"], snap.links
    # Each end the goroutine whose own stack says so: the handler holding the request's
    # order, the client goroutine that sent it, the two TCP readers.
    check_http_ends(snap, client.pid, server.pid, f"{server_ip}:8080", client_ip)
    check_tcp_ends(snap, client.pid, server.pid, f"{server_ip}:9090", client_ip)
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    for ln in snap.links:
        if ln.kind == "user":
            same = http[f"/park?order={ln.value}"]
            assert (ln.client, ln.server) == (same.client, same.server), (ln, same)
    texts = [f"linkclient g{ln.client.goroutine} -> linkserver g{ln.server.goroutine}"
             for ln in http.values()]
    from pytest_sideeye.snapshot import render_text
    rendered = render_text(snap)
    assert all(t in rendered for t in texts), rendered[:2000]


def test_grpc_links_across_containers(grpcserver, grpcclient, sideeye_snapshot, needs_root):
    wait_parked(grpcserver)
    snap = sideeye_snapshot()
    by_service = {p.service: p for p in snap.processes}
    server, client = by_service["grpcserver"], by_service["grpcclient"]
    grpc = {ln.method: ln for ln in snap.links if ln.kind == "grpc"}
    assert set(grpc) == {"/peers.Parker/Park", "/peers.Parker/Watch",
                         "/grpc.health.v1.Health/Watch"}, snap.links
    for method, handler in (("/peers.Parker/Park", "main.parkUnary"),
                            ("/peers.Parker/Watch", "main.parkStream")):
        ln = grpc[method]
        assert (ln.client.pid, ln.server.pid) == (client.pid, server.pid)
        g = snap.goroutine(server.pid, ln.server.goroutine)
        assert handler in [f.function for f in g.frames]
        assert ln.server_addr == f"{grpcserver.ip_address()}:7070"
        assert ln.client_addr.startswith(f"{grpcclient.ip_address()}:")
