"""Links across processes, on the host's loopback: fixture `peers` runs a server and a
client process; the client has an HTTP request parked in a handler on a kept-alive
connection (order 42), another on a fresh connection (order 7), and a raw TCP connection
both ends of which wait to read. Every link must join the goroutines whose own stacks say
they are the two ends, for three Go versions."""
from __future__ import annotations

import time

import pytest
from oracle import start_app
from peers_links import check_http_ends, check_tcp_ends, functions
from support import GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine import Target, take_snapshot
from pytest_sideeye.engine import links as links_mod
from pytest_sideeye.memo import MEMO
from pytest_sideeye.snapshot import render_text

USER_LINK = "main.call:order == main.parkHandler:order"


def wait_parked(server, n: int = 2, timeout: float = 30.0) -> None:
    """The client's requests reached their handlers (the server prints a line each)."""
    deadline = time.monotonic() + timeout
    while sum(line.startswith("parked") for line in server.output) < n:
        assert time.monotonic() < deadline, f"handlers not reached: {server.output}"
        time.sleep(0.05)


def start_peers(exe):
    server = start_app(exe, "server")
    http_port, tcp_port = server.ready_line.split()[1:3]
    client = start_app(exe, "client", f"127.0.0.1:{http_port}", f"127.0.0.1:{tcp_port}")
    wait_parked(server)
    return server, client, int(http_port), int(tcp_port)


@pytest.fixture(scope="module", params=GO_VERSIONS)
def peers(request, go_build, needs_root):
    exe = go_build("peers", request.param)
    server, client, http_port, tcp_port = start_peers(exe)
    try:
        snap = take_snapshot([Target(server.pid), Target(client.pid)], links=[USER_LINK],
                             capture={"main.parkHandler": ["order"]})
    finally:
        client.stop()
        server.stop()
    for p in snap.processes:
        assert p.error is None, p.error
    return snap, server.pid, client.pid, http_port, tcp_port


def test_http_links_join_the_waiting_client_to_its_handler(peers):
    snap, spid, cpid, http_port, _ = peers
    check_http_ends(snap, cpid, spid, f"127.0.0.1:{http_port}", "127.0.0.1")


def test_tcp_link_joins_the_two_readers(peers):
    snap, spid, cpid, _, tcp_port = peers
    check_tcp_ends(snap, cpid, spid, f"127.0.0.1:{tcp_port}", "127.0.0.1")


def test_no_link_for_what_http_already_explains(peers):
    """The HTTP connections also have their transport's reader goroutines waiting on them
    (the client's readLoop, the server's background read): one link per connection."""
    snap = peers[0]
    assert sorted(ln.kind for ln in snap.links if ln.kind != "user") == ["http", "http", "tcp"]


def test_user_links_pair_equal_values(peers):
    snap, spid, cpid, *_ = peers
    user = [ln for ln in snap.links if ln.kind == "user"]
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(ln.value for ln in user) == ["42", "7"]
    for ln in user:
        same = http[f"/park?order={ln.value}"]
        assert ln.client == same.client and ln.server == same.server


def test_chains_and_the_api(peers):
    snap, spid, cpid, *_ = peers
    chains = snap.chains()
    assert len(chains) == 3 and all(len(c.goroutines) == 2 for c in chains)
    for ln in snap.links:
        g = snap.goroutine(cpid, ln.client.goroutine)
        assert ln in snap.waiting_on(g)
        s = snap.goroutine(spid, ln.server.goroutine)
        assert ln in snap.serving(s)
    ends = {snap.goroutine(*c.goroutines[-1]).wait_reason for c in chains}
    assert ends == {"chan receive", "IO wait"}


def test_probe_values_stay_off_the_frames(peers):
    """The built-in probes' reads are not the user's captures: no frame shows them."""
    snap = peers[0]
    shown = {(f.function, v.name) for g in snap.goroutines() for f in g.frames for v in f.variables}
    assert shown == {("main.parkHandler", "order"), ("main.call", "order")}, shown


def test_json_round_trip_keeps_links(peers):
    from pytest_sideeye.snapshot import Snapshot
    snap = peers[0]
    again = Snapshot.from_json(snap.to_json())
    assert again.links == snap.links and again.to_json() == snap.to_json()


def test_text_names_the_chain(peers):
    snap, spid, cpid, *_ = peers
    text = render_text(snap)
    header, chains = text.split("\n", 1)
    assert header.startswith("# 2 processes within ") and chains.startswith("# wait chains:\n")
    assert f"pid {cpid} g" in text and "[chan receive] in main.parkHandler" in text
    assert "GET /park?order=42" in text


@pytest.mark.parametrize("env", [{"SIDEEYE_BPF_CAPTURE": "0"}, {"SIDEEYE_STOP_HOOK": "0"}],
                         ids=["python-reads", "iterator-only"])
def test_links_on_every_read_path(env, go_build, needs_root, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    server, client, http_port, tcp_port = start_peers(go_build("peers", "1.24.11"))
    try:
        snap = take_snapshot([server.pid, client.pid], capture={"main.parkHandler": ["order"]})
    finally:
        client.stop()
        server.stop()
    assert sorted(ln.kind for ln in snap.links) == ["http", "http", "tcp"]
    check_http_ends(snap, client.pid, server.pid, f"127.0.0.1:{http_port}", "127.0.0.1")
    check_tcp_ends(snap, client.pid, server.pid, f"127.0.0.1:{tcp_port}", "127.0.0.1")


def test_links_off_and_a_lone_side(go_build, needs_root, monkeypatch):
    """SIDEEYE_LINKS=0: no probe, no link. Snapshotting the client alone: its links name
    the server by address, the server side absent."""
    server, client, http_port, tcp_port = start_peers(go_build("peers", "1.24.11"))
    try:
        alone = take_snapshot([client.pid])
        monkeypatch.setenv("SIDEEYE_LINKS", "0")
        off = take_snapshot([server.pid, client.pid])
    finally:
        client.stop()
        server.stop()
    assert off.links == []
    assert sorted(ln.kind for ln in alone.links) == ["http", "http", "tcp"]
    check_http_ends(alone, client.pid, None, f"127.0.0.1:{http_port}", "127.0.0.1")
    check_tcp_ends(alone, client.pid, None, f"127.0.0.1:{tcp_port}", "127.0.0.1")


# --- gRPC (grpc-go): a unary call and a server stream on one HTTP/2 connection -------------

@pytest.fixture(scope="module", params=GO_VERSIONS)
def grpc_peers(request, go_build, needs_root):
    from support import GRPC_GOPATH
    exe = go_build("grpcpeers", request.param, gopath=GRPC_GOPATH)
    server = start_app(exe, "server")
    try:
        client = start_app(exe, "client", f"127.0.0.1:{server.port}")
        try:
            wait_parked(server)
            snap = take_snapshot([server.pid, client.pid],
                                 links=["main.call:order == main.park:order"])
        finally:
            client.stop()
    finally:
        server.stop()
    for p in snap.processes:
        assert p.error is None, p.error
    return snap, server.pid, client.pid, server.port


def test_grpc_links_pair_each_stream_with_its_handler(grpc_peers):
    snap, spid, cpid, port = grpc_peers
    grpc = {ln.method: ln for ln in snap.links if ln.kind == "grpc"}
    assert set(grpc) == {"/peers.Parker/Park", "/peers.Parker/Watch",
                         "/grpc.health.v1.Health/Watch"}, snap.links
    # Client streams are odd-numbered, in the order the two calls happened to start.
    assert sorted(grpc[m].stream_id for m in ("/peers.Parker/Park", "/peers.Parker/Watch")) \
        == [1, 3]
    for method, caller, handler in (("/peers.Parker/Park", "main.call", "main.parkUnary"),
                                    ("/peers.Parker/Watch", "main.watch", "main.parkStream")):
        ln = grpc[method]
        assert (ln.client.pid, ln.server.pid) == (cpid, spid)
        assert caller in functions(snap, cpid, ln.client.goroutine)
        assert handler in functions(snap, spid, ln.server.goroutine)
        assert ln.server_addr == f"127.0.0.1:{port}"
    # The health watch is grpc-go's own service (server and generated client), on a
    # connection of its own.
    health = grpc["/grpc.health.v1.Health/Watch"]
    assert health.stream_id == 1 and health.client_addr != grpc["/peers.Parker/Park"].client_addr
    assert "google.golang.org/grpc/health.(*Server).Watch" in \
        functions(snap, spid, health.server.goroutine)
    assert {"google.golang.org/grpc/health/grpc_health_v1.(*healthWatchClient).Recv",
            "main.watchHealth"} <= set(functions(snap, cpid, health.client.goroutine))
    # The HTTP/2 transport's own readers are explained by the streams: no tcp link.
    assert [ln.kind for ln in snap.links if ln.kind not in ("grpc", "user")] == []
    assert "# links:\n#   grpc" in render_text(snap)


def test_grpc_user_link_agrees_with_the_stream(grpc_peers):
    snap = grpc_peers[0]
    [user] = [ln for ln in snap.links if ln.kind == "user"]
    [unary] = [ln for ln in snap.links if ln.method == "/peers.Parker/Park"]
    assert user.value == '"order=42"'
    assert (user.client, user.server) == (unary.client, unary.server)


# --- /proc/net/tcp addresses ------------------------------------------------------------------

@pytest.mark.parametrize("hexaddr, addr", [
    ("0100007F:1F90", ("127.0.0.1", 8080)),
    ("0300A8C0:0050", ("192.168.0.3", 80)),
    ("00000000000000000000000001000000:1F90", ("::1", 8080)),
    ("0000000000000000FFFF00000100007F:0016", ("127.0.0.1", 22)),   # IPv4-mapped
    ("B80D0120000000000000000001000000:01BB", ("2001:db8::1", 443)),
])
def test_proc_net_addresses(hexaddr, addr):
    from pytest_sideeye.engine.links import _address, format_addr
    assert _address(hexaddr) == addr
    assert format_addr(addr) == (f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}")


def test_own_sockets_resolve_to_their_four_tuples():
    """This process's own connection, as the engine sees it from /proc (no BPF needed)."""
    import os
    import socket

    from pytest_sideeye.engine.links import NetView
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        socks = NetView().sockets(os.getpid())
        c, s = socks[client.fileno()], socks[server.fileno()]
        assert c.local == client.getsockname() and c.remote == client.getpeername()
        assert (s.local, s.remote) == (c.remote, c.local)
        assert s.listening_local and not c.listening_local
    finally:
        for x in (client, server, listener):
            x.close()


def test_probes_a_binary_accepts_are_kept_on_disk(go_build, monkeypatch, tmp_path):
    """Checking the probes plans each against the DWARF (~0.5 s): a second process reads
    the result by build id; a damaged entry is checked again."""
    monkeypatch.setenv("SIDEEYE_BINARY_CACHE", str(tmp_path))
    info = analyze(str(go_build("peers")))
    check = links_mod._checked_probes
    calls = []
    monkeypatch.setattr(links_mod, "_checked_probes", lambda i: calls.append(1) or check(i))

    def fresh_process_spec():
        MEMO.clear()   # what a fresh process has in memory
        return links_mod.probe_spec(info)

    checked = fresh_process_spec()
    assert "net/http.(*persistConn).roundTrip" in checked.functions and calls == [1]
    [stored] = tmp_path.glob("probes-*.json")
    assert fresh_process_spec() == checked and calls == [1]
    stored.write_text('{"$schema": 1, "data": {"main.f": "not a list"}}')
    assert fresh_process_spec() == checked and calls == [1, 1]
