"""net/http's own HTTP/2 across containers on a Docker network, through the plugin (issue
26.4): fixture h2peers as two go_service containers (TLS with ALPN h2, and h2c), checked
stream by stream with the host test's rules (tests/h2_links.py)."""
from __future__ import annotations

from h2_links import CAPTURE, check_h2, sent_streams
from support import GOAPPS
from test_plugin_links import wait_parked

from pytest_sideeye import go_service

H2 = str(GOAPPS / "h2peers")

h2server = go_service("h2server", source=H2, args=["server", "0.0.0.0", "8443", "8080"],
                      ports=[8443, 8080], ready_log="READY", ready_timeout=30)
h2client = go_service("h2client", source=H2,
                      args=["client", "h2server:8443", "h2server:8080"],
                      ready_log="READY", ready_timeout=30)


def test_http2_streams_across_containers(h2server, h2client, sideeye_snapshot, needs_root):
    ready = next(line for line in h2client.logs().splitlines() if line.startswith("READY"))
    sent = sent_streams(ready)
    wait_parked(h2server, len(sent))
    snap = sideeye_snapshot(capture=CAPTURE)
    by_service = {p.service: p for p in snap.processes}
    server, client = by_service["h2server"], by_service["h2client"]
    assert server.error is None and client.error is None
    ip = h2server.ip_address()
    h2c = f"{ip}:8080" if any(o >= 90 for o in sent) else "-"
    check_h2(snap, client.pid, server.pid, {"tls": f"{ip}:8443", "h2c": h2c}, sent,
             h2client.ip_address())
