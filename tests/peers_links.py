"""What a snapshot of fixture `peers` must link, end by end, wherever it runs (loopback or
a Docker network): each HTTP request joins the client goroutine that sent it (order 42
from main.keepAliveCall, order 7 from main.freshCall) to the handler goroutine that holds
that order, and the raw TCP connection joins the client's reader to the server's. Kinds
and ids alone would let a swapped or misplaced end pass."""
from __future__ import annotations

CALLERS = {42: "main.keepAliveCall", 7: "main.freshCall"}


def functions(snap, pid: int, gid: int) -> list[str]:
    g = snap.goroutine(pid, gid)
    assert g is not None, f"link names goroutine {gid} of pid {pid}, not in the snapshot"
    return [f.function for f in g.frames]


def captured(snap, pid: int, gid: int, function: str, name: str):
    for f in snap.goroutine(pid, gid).frames:
        if f.function == function:
            for v in f.variables:
                if v.name == name:
                    return v.value
    return None


def check_http_ends(snap, cpid: int, spid: int | None, server_addr: str, client_host: str) -> None:
    """spid None: the server was not snapshotted, its ends must be absent. Otherwise the
    snapshot must capture main.parkHandler's `order` (it tells the two handlers apart)."""
    http = {ln.path: ln for ln in snap.links if ln.kind == "http"}
    assert sorted(http) == ["/park?order=42", "/park?order=7"], snap.links
    for order, caller in CALLERS.items():
        ln = http[f"/park?order={order}"]
        assert ln.method == "GET", ln
        assert ln.client.pid == cpid, ln
        client_stack = functions(snap, cpid, ln.client.goroutine)
        assert caller in client_stack and "net/http.(*persistConn).roundTrip" in client_stack, \
            (order, client_stack)
        assert ln.server_addr == server_addr, (ln, server_addr)
        assert ln.client_addr.startswith(f"{client_host}:") and ln.client_addr != server_addr, ln
        if spid is None:
            assert ln.server is None, ln
            continue
        assert ln.server.pid == spid, ln
        server_stack = functions(snap, spid, ln.server.goroutine)
        assert "main.parkHandler" in server_stack and "net/http.(*conn).serve" in server_stack, \
            (order, server_stack)
        got = captured(snap, spid, ln.server.goroutine, "main.parkHandler", "order")
        assert got == order, f"/park?order={order} linked to the handler of order {got}"
    assert http["/park?order=42"].client_addr != http["/park?order=7"].client_addr, http


def check_tcp_ends(snap, cpid: int, spid: int | None, server_addr: str, client_host: str) -> None:
    [tcp] = [ln for ln in snap.links if ln.kind == "tcp"]
    assert tcp.client.pid == cpid and tcp.server_addr == server_addr, (tcp, server_addr)
    assert tcp.client_addr.startswith(f"{client_host}:"), tcp
    client_stack = functions(snap, cpid, tcp.client.goroutine)
    assert "main.tcpWait" in client_stack and "main.readForever" in client_stack, client_stack
    if spid is None:
        assert tcp.server is None, tcp
        return
    assert tcp.server.pid == spid, tcp
    server_stack = functions(snap, spid, tcp.server.goroutine)
    assert "main.readForever" in server_stack and "main.tcpWait" not in server_stack, server_stack
    assert snap.goroutine(spid, tcp.server.goroutine).created_by.function == "main.serveTCP"
