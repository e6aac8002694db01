"""net/http's own HTTP/2, without gRPC (issue 26.4), on the host's loopback: fixture
h2peers parks requests in their handlers, three on one TLS connection (ALPN h2) and, built
with Go 1.24 or later, two on one h2c connection (http.Protocols), each sent once the
previous one's headers were written, so that the client knows each order's stream id and
prints it. Checked stream by stream (tests/h2_links.py) on three Go versions, in this
process (SIDEEYE_AGENT=0) and through a sideeye agent of its own."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from h2_links import CAPTURE, check_h2, sent_streams
from oracle import start_app
from support import GO_VERSIONS
from test_links import wait_parked

from pytest_sideeye.agent import snapshot_via_agent
from pytest_sideeye.engine import Target, take_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from agent_support import RunningAgent  # noqa: E402 - tests/agent's, outside this folder


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
            sent = sent_streams(client.ready_line)
            wait_parked(server, len(sent))
            targets = [Target(server.pid), Target(client.pid)]
            snaps = {"here": take_snapshot(targets, capture=CAPTURE),
                     "agent": snapshot_via_agent([server.pid, client.pid], CAPTURE,
                                                 socket_path=str(agent.socket))}
    for snap in snaps.values():
        for p in snap.processes:
            assert p.error is None, p.error
    return snaps, server.pid, client.pid, {"tls": f"127.0.0.1:{tls_port}", "h2c": h2c}, sent


@pytest.mark.parametrize("where", ["here", "agent"])
def test_each_stream_links_its_caller_to_its_handler(h2, where):
    snaps, spid, cpid, addrs, sent = h2
    check_h2(snaps[where], cpid, spid, addrs, sent, "127.0.0.1")
