"""Link pieces that need no Go process: the peer addresses transports record, as the probes
read them, and this process's own Unix sockets as the engine sees them (sock_diag)."""
from __future__ import annotations

import os
import socket

import pytest

from pytest_sideeye.engine.links import NetView, _remote


@pytest.mark.parametrize("got, remote", [
    ({"remote": "127.0.0.1:5432"}, ("127.0.0.1", 5432)),
    ({"remote": "[::1]:80"}, ("::1", 80)),
    ({"remote": "[::ffff:10.0.0.7]:443"}, ("10.0.0.7", 443)),      # as /proc shows it
    ({"remote": "[fe80::1%eth0]:8080"}, ("fe80::1", 8080)),
    ({"remote_port": 41000}, (None, 41000)),                        # grpc-go: the port only
    ({"remote": "@"}, None),                                        # a Unix peer: no address
    ({"remote": ""}, None),
    ({"remote": "host:port"}, None),
    ({"remote": 7}, None),
    ({"remote_port": 0}, None),
    ({"remote_port": True}, None),
    ({}, None),
])
def test_recorded_peer_addresses(got, remote):
    assert _remote(got) == remote


def test_own_unix_sockets_resolve_to_their_peers(tmp_path):
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    server, _ = listener.accept()
    try:
        socks = NetView().unix_sockets(os.getpid())
        c, s = socks[client.fileno()], socks[server.fileno()]
        assert c.unix and s.unix
        assert (c.local[1], c.remote[1]) == (s.remote[1], s.local[1])   # each other's inode
        assert (c.local[0], s.local[0]) == ("", path)      # the dialer's end has no name
        assert s.listening_local and not c.listening_local
        assert listener.fileno() not in socks               # not connected: no peer
    finally:
        for x in (client, server, listener):
            x.close()
