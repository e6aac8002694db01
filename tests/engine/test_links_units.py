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


def test_an_http2_caller_takes_its_connections_fd_from_the_connections_reader():
    """Over TLS the caller's frame cannot read its connection's fd: its connection's reader
    goroutine (ClientConn.readLoop, the same lastActive) waits in a read on it. Two
    connections, told apart by their keys; a caller whose fd was read keeps it."""
    from pytest_sideeye.engine.links import Fact, http2
    facts = [Fact(1, "h2_client", None, stream=1, conn_key=(5, 100)),
             Fact(2, "h2_client", None, stream=1, conn_key=(5, 200)),
             Fact(3, "h2_client", 9, stream=3, conn_key=(5, 200)),
             Fact(4, "h2_client", None, stream=5, conn_key=(5, 300)),   # no reader seen
             Fact(10, "h2_conn", None, conn_key=(5, 100)), Fact(10, "read", 7),
             Fact(11, "h2_conn", None, conn_key=(5, 200)), Fact(11, "read", 8)]
    http2.resolve(facts)
    assert [(f.goroutine, f.fd) for f in facts if f.role == "h2_client"] == \
        [(1, 7), (2, 8), (3, 9), (4, None)]


def test_http2_keys_and_streams_as_the_probes_read_them():
    from pytest_sideeye.engine.links import http2
    assert http2.conn_key("h2_client", {"conn_wall": 5, "conn_ext": 100}) == (5, 100)
    assert http2.conn_key("h2_server", {"conn_wall": 5, "conn_ext": 100}) is None
    assert http2.conn_key("h2_conn", {"conn_wall": 0, "conn_ext": 0}) is None    # never set
    assert http2.keep("h2_server", {"stream": 3})
    assert not http2.keep("h2_server", {"stream": 0}) and not http2.keep("h2_client", {})
    assert not http2.keep("h2_conn", {"conn_wall": 5})


def test_the_probes_read_only_their_frames_slots_in_the_pause(go_build):
    """What the probes' slots point to is read after the resume (links/after_resume.py):
    in BPF, a frame of a function only the links read costs one read, its slots; a
    function the user's spec captures too is read whole in the pause."""
    from pytest_sideeye import capture
    from pytest_sideeye.binary import analyze
    from pytest_sideeye.capture.templates import OP_SLOT, TPL_PYTHON
    from pytest_sideeye.engine.links import after_resume, probe_spec
    info = analyze(go_build("peers", "1.24.11"))
    probes = probe_spec(info)
    const = {"CAP_OPS": 16, "CAP_READ_MAX": 2048, "CAP_TEMPLATES": 64, "CAPTAB_MAX": 1024}

    def templates(spec, later):
        plan = capture.make_plan(info, spec)
        tables = capture.compile_plan(plan, 0, const, info.symtab, later)
        out = {}
        for lo, _hi, t in tables.ranges:
            if t != TPL_PYTHON and tables.templates[t]:
                out.setdefault(info.symtab.func_for_pc(lo).name, []).append(tables.templates[t])
        return out

    later = after_resume.functions(None, probes)
    assert "net/http.(*conn).serve" in later and "internal/poll.(*FD).Read" in later
    deferred = templates(probes, later)
    assert "net/http.(*conn).serve" in deferred and "net/http.(*persistConn).roundTrip" in deferred
    for ops in (o for per_fn in deferred.values() for o in per_fn):
        assert [op[0] for op in ops] == [OP_SLOT], ops
    whole = capture.CaptureSpec({**probes.functions, "net/http.(*conn).serve":
                                 [*probes.functions["net/http.(*conn).serve"],
                                  capture.parse_expr("c.remoteAddr")]})
    mine = after_resume.functions(capture.CaptureSpec({"net/http.(*conn).serve": [
        capture.parse_expr("c.remoteAddr")]}), probes)
    assert "net/http.(*conn).serve" not in mine and "internal/poll.(*FD).Read" in mine
    assert max(len(o) for o in templates(whole, mine)["net/http.(*conn).serve"]) > 10


def test_the_templates_reads_are_made_after_the_resume_a_pointer_level_at_a_time():
    """capture.read_as_bpf: a frame whose slots the pause read gets, from memory as it is
    now, what its template reads (pointer, then string), one batch a level across frames;
    its slots are never read again (the stack has moved on)."""
    import struct

    from pytest_sideeye import capture
    from pytest_sideeye.capture.templates import OP_PTR, OP_SLOT, OP_STR
    # Template: the slot at cfa-16 (8 bytes) holds a pointer to a 24-byte struct whose
    # first 16 bytes are a string header.
    ops = [(OP_SLOT, 0, 0, -16, 8, 0), (OP_PTR, 0, 0, 0, 24, 0), (OP_STR, 1, 0, 0, 0, 512)]
    tables = capture.ReadTemplates([(0x1000, 0x2000, 0)], [ops], 0x1000, 0x2000)
    live = {(0x9000, 24): struct.pack("<QqQ", 0xA000, 5, 0), (0xA000, 5): b"hello"}
    batches = []

    def batch(reqs):
        batches.append(sorted(reqs))
        return {r: live.get(r) for r in reqs}

    frames = []
    for cfa in (0x7000, 0x7100):
        shared = capture.Memory(capture.Budget(1 << 20))
        shared.add(cfa - 16, struct.pack("<Q", 0x9000))        # what the pause read
        mem = capture.Memory(capture.Budget(1 << 20))
        mem.shared = shared
        frames.append((0x1500, cfa, mem))
    capture.read_as_bpf(tables, frames, batch)
    assert batches == [[(0x9000, 24)], [(0xA000, 5)]]          # one read a level, shared
    for _pc, _cfa, mem in frames:
        assert mem.read(0x9000, 24) == live[(0x9000, 24)] and mem.read(0xA000, 5) == b"hello"
