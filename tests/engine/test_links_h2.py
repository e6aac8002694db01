"""net/http's own HTTP/2, without gRPC (issue 26.4): fixture h2peers parks requests in
their handlers, three on one TLS connection (ALPN h2) and, built with Go 1.24 or later,
two on one h2c connection (http.Protocols), each sent once the previous one's headers were
written, so that the client knows each order's stream id and prints it. Every stream must
link the client goroutine holding its order to the handler holding the same order, with
the stream id the client printed (a swapped pairing, or one by stream id across the two
connections, fails), on three Go versions, in this process (SIDEEYE_AGENT=0) and through
a sideeye agent of its own.

h2c served by Go 1.24 to 1.26 leaves the handler's goroutine unnamed (engine/links/http2.py
says why): those streams link the client goroutine to the server process."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from oracle import start_app
from peers_links import captured, functions
from support import GO_VERSIONS
from test_links import wait_parked

from pytest_sideeye.agent import snapshot_via_agent
from pytest_sideeye.engine import Target, take_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from agent_support import RunningAgent  # noqa: E402 - tests/agent's, outside this folder

CAPTURE = {"main.parkHandler": ["order"], "main.call": ["order"]}
TLS_ORDERS, H2C_ORDERS = (81, 82, 83), (91, 92)


@pytest.fixture(scope="module")
def agent(needs_root):
    folder = Path(tempfile.mkdtemp(prefix="sideeye-h2-agent-"))
    a = RunningAgent(folder)
    yield a
    a.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", params=GO_VERSIONS)
def h2(request, go_build, needs_root, agent):
    """Both snapshots of one h2peers pair: {"here": ..., "agent": ...}, the server's
    addresses and the streams the client printed (order -> stream id)."""
    exe = go_build("h2peers", request.param)
    with start_app(exe, "server") as server:
        tls_port, h2c_port = server.ready_line.split()[1:3]
        h2c = f"127.0.0.1:{h2c_port}" if h2c_port != "-" else "-"
        with start_app(exe, "client", f"127.0.0.1:{tls_port}", h2c) as client:
            sent = dict(map(int, w.split("/")) for w in client.ready_line.split()[1:])
            wait_parked(server, len(sent))
            targets = [Target(server.pid), Target(client.pid)]
            snaps = {"here": take_snapshot(targets, capture=CAPTURE),
                     "agent": snapshot_via_agent([server.pid, client.pid], CAPTURE,
                                                 socket_path=str(agent.socket))}
    for snap in snaps.values():
        for p in snap.processes:
            assert p.error is None, p.error
    return (snaps, server.pid, client.pid, request.param,
            {"tls": f"127.0.0.1:{tls_port}", "h2c": h2c}, sent)


def _handler_unnamed(go: str, how: str) -> bool:
    """h2c handlers of Go 1.24 to 1.26: no frame of their goroutine holds the stream."""
    return how == "h2c" and go.startswith("1.24.")


@pytest.mark.parametrize("where", ["here", "agent"])
def test_each_stream_links_its_caller_to_its_handler(h2, where):
    snaps, spid, cpid, go, addrs, sent = h2
    snap = snaps[where]
    orders = {o: "tls" for o in TLS_ORDERS} | {o: "h2c" for o in H2C_ORDERS if o in sent}
    assert sorted(sent) == sorted(orders), sent
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(http) == [f"/park?order={o}" for o in sorted(orders)], snap.links
    for order, how in orders.items():
        ln = http[f"/park?order={order}"]
        assert (ln.method, ln.transport, ln.stream_id) == ("GET", "h2", sent[order]), ln
        assert ln.tls is (True if how == "tls" else None), ln
        assert ln.server_addr == addrs[how] and ln.client_addr.startswith("127.0.0.1:"), ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        assert captured(snap, cpid, ln.client.goroutine, "main.call", "order") == order, \
            f"order {order}'s stream is linked to {functions(snap, cpid, ln.client.goroutine)}"
        if _handler_unnamed(go, how):
            assert ln.server.goroutine is None, ln
            continue
        assert captured(snap, spid, ln.server.goroutine, "main.parkHandler", "order") == order, \
            f"order {order}'s stream is linked to {functions(snap, spid, ln.server.goroutine)}"
    # One connection per transport, its streams told apart by their ids.
    for how in set(orders.values()):
        conns = {http[f"/park?order={o}"].client_addr for o, h in orders.items() if h == how}
        assert len(conns) == 1, (how, conns)


def test_the_connections_readers_get_no_link_of_their_own(h2):
    """Each connection's transport goroutines (the client's readLoop, the server's
    readFrames) wait on it too: its streams explain them."""
    snaps, *_rest, sent = h2
    for snap in snaps.values():
        assert sorted(ln.kind for ln in snap.links) == ["http"] * len(sent), snap.links
