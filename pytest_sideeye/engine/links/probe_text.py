"""Pieces of probe expressions the protocols share.

Interfaces are crossed by type assertions, which the BPF reads follow (a plain field
through an interface would send every such frame to the much slower Python rounds). No
alternative for TLS (`.(*crypto/tls.Conn).conn...`): on a plain connection the BPF reads
would follow a *net.TCPConn as a tls.Conn into garbage, and every such failed read sends
its frame to the Python rounds (measured: +8 ms for 300 parked requests)."""
from __future__ import annotations

TCP_FD = ".(*net.TCPConn).conn.fd.pfd.Sysfd"
UNIX_FD = ".(*net.UnixConn).conn.fd.pfd.Sysfd"


def conn_fd(conn: str) -> tuple[str, ...]:
    """The fd of the net.Conn `conn`, a TCP or a Unix socket. The two alternatives cost
    the pause little: both conn types are one pointer to a netFD, so the BPF reads of the
    second are the first's, found in the capture's cache of reads."""
    return (conn + TCP_FD, conn + UNIX_FD)
