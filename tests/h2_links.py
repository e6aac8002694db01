"""What a snapshot of fixture h2peers must link, stream by stream, wherever it runs (the
host's loopback or a Docker network): each stream joins the client goroutine holding its
order (main.call) to the handler holding the same order (main.parkHandler), with the
stream id the client printed for it (READY ORDER/STREAM...), so that a swapped pairing, or
one by stream id across the fixture's two connections, fails. Every stream names its
handler's goroutine, h2c served by Go 1.24 to 1.26 too (its runHandler frame's `rw` read
from the copy its deferred closure keeps: binary/closure_copies.py)."""
from __future__ import annotations

from peers_links import captured, functions

CAPTURE = {"main.parkHandler": ["order"], "main.call": ["order"]}
TLS_ORDERS, H2C_ORDERS = (81, 82, 83), (91, 92)


def sent_streams(ready_line: str) -> dict[int, int]:
    """The client's READY line: order -> the stream id it was sent on."""
    return dict(map(int, w.split("/")) for w in ready_line.split()[1:])


def check_h2(snap, cpid: int, spid: int, addrs: dict, sent: dict[int, int],
             client_host: str) -> None:
    """addrs: "tls" and "h2c" -> the server's address. The snapshot must capture CAPTURE."""
    orders = {o: "tls" for o in TLS_ORDERS} | {o: "h2c" for o in H2C_ORDERS if o in sent}
    assert sorted(sent) == sorted(orders), sent
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(http) == [f"/park?order={o}" for o in sorted(orders)], snap.links
    for order, how in orders.items():
        ln = http[f"/park?order={order}"]
        assert (ln.method, ln.transport, ln.stream_id) == ("GET", "h2", sent[order]), ln
        assert ln.tls is (True if how == "tls" else None), ln
        assert ln.server_addr == addrs[how], (ln, addrs[how])
        assert ln.client_addr.startswith(f"{client_host}:"), ln
        assert (ln.client.pid, ln.server.pid) == (cpid, spid), ln
        assert captured(snap, cpid, ln.client.goroutine, "main.call", "order") == order, \
            f"order {order}'s stream is linked to {functions(snap, cpid, ln.client.goroutine)}"
        assert captured(snap, spid, ln.server.goroutine, "main.parkHandler", "order") == order, \
            f"order {order}'s stream is linked to {functions(snap, spid, ln.server.goroutine)}"
    # One connection per transport, its streams told apart by their ids.
    for how in set(orders.values()):
        conns = {http[f"/park?order={o}"].client_addr for o, h in orders.items() if h == how}
        assert len(conns) == 1, (how, conns)
    # Each connection's transport goroutines (the client's readLoop, the server's
    # readFrames) wait on it too: its streams explain them.
    assert sorted(ln.kind for ln in snap.links) == ["http"] * len(sent), snap.links
