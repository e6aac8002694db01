"""Sockets: fd -> TCP 4-tuple, from each process's own network namespace (/proc/PID/fd and
/proc/PID/net/tcp{,6}), read after the resume, so that the two ends of one connection are
found in two processes whether they talk over a Docker network or the host's loopback.

Unix domain sockets: fd -> (inode, the peer's inode) from the kernel's sock_diag
(UNIX_DIAG_PEER; /proc/net/unix has no peer), for the sockets of this process's network
namespace (sock_diag answers for its caller's): the two ends of a connection name each
other's inode. A socket's inode is unique on the machine, whatever the namespace."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Socket:
    """TCP: local and remote are (ip, port). Unix (unix=True): (name, inode) of this end
    and of its peer, the name its path ("@..." for an abstract one) or "" when unnamed."""
    local: tuple[str, int]
    remote: tuple[str, int]
    listening_local: bool     # its local address accepts connections (it is the acceptor)
    unix: bool = False


class NetView:
    """/proc reads for the processes of one snapshot, each network namespace read once."""

    def __init__(self) -> None:
        self._tables: dict[str, tuple[dict[int, tuple], set]] = {}
        self._unix: dict[int, tuple[str, int]] | None = None

    def netns(self, pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return f"pid:{pid}"

    def sockets(self, pid: int) -> dict[int, Socket]:
        """fd -> Socket for the TCP sockets of pid (empty when it cannot be read)."""
        ns = self.netns(pid)
        if ns not in self._tables:
            self._tables[ns] = _tcp_tables(pid)
        conns, listening = self._tables[ns]
        out = {}
        for fd, inode in _socket_inodes(pid).items():
            entry = conns.get(inode)
            if entry is None:
                continue
            local, remote = entry
            out[fd] = Socket(local, remote,
                             local in listening or (_any(local[0]), local[1]) in listening)
        return out

    def unix_sockets(self, pid: int) -> dict[int, Socket]:
        """fd -> Socket for the connected Unix sockets of pid that this process's network
        namespace holds (empty when none, or sock_diag cannot be read)."""
        inodes = _socket_inodes(pid)
        if not inodes:
            return {}
        if self._unix is None:
            self._unix = unix_table()
        out = {}
        for fd, inode in inodes.items():
            entry = self._unix.get(inode)
            if entry is None or not entry[1]:
                continue          # not a Unix socket of this namespace, or not connected
            name, peer = entry
            peer_name = self._unix.get(peer, ("", 0))[0]
            # The acceptor's end carries the listener's name; the dialer's is unnamed.
            out[fd] = Socket((name, inode), (peer_name, peer), bool(name) and not peer_name,
                             unix=True)
        return out


def _any(ip: str) -> str:
    return "::" if ":" in ip else "0.0.0.0"


def _socket_inodes(pid: int) -> dict[int, int]:
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(name)] = int(target[8:-1])
    return out


def _tcp_tables(pid: int) -> tuple[dict[int, tuple], set]:
    """inode -> (local, remote) of established connections, and the listening
    addresses, in pid's network namespace."""
    conns, listening = {}, set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, remote, state, inode = (_address(parts[1]), _address(parts[2]),
                                           parts[3], int(parts[9]))
            if state == "0A":
                listening.add(local)
            elif inode:
                conns[inode] = (local, remote)
    # A dual-stack listener on [::]:8080 accepts IPv4 too.
    listening |= {("0.0.0.0", port) for ip, port in list(listening) if ip == "::"}
    return conns, listening


def _address(hexaddr: str) -> tuple[str, int]:
    """`0100007F:1F90` -> ("127.0.0.1", 8080); IPv6 words are in host (little-endian)
    order; an IPv4-mapped IPv6 address becomes the IPv4 one, so both ends compare."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return str(ip), int(port_hex, 16)


def format_addr(addr: tuple[str, int]) -> str:
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def address_text(sock: Socket, addr: tuple[str, int]) -> str | None:
    """How a link names one of sock's addresses: ip:port, or a Unix socket's name (None
    when unnamed)."""
    if sock.unix:
        return addr[0] or None
    return format_addr(addr)


# --- Unix sockets: sock_diag over netlink (linux/sock_diag.h, linux/unix_diag.h) ----------

_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_NAME, _UDIAG_SHOW_PEER = 0x1, 0x4
_UNIX_DIAG_NAME, _UNIX_DIAG_PEER = 0, 2
_NLMSGHDR = struct.Struct("=IHHII")           # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")   # family, protocol, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")    # family, type, state, pad, ino, cookie


def unix_table() -> dict[int, tuple[str, int]]:
    """inode -> (name, peer inode) of every Unix socket of this process's network
    namespace (peer 0: not connected). Empty when sock_diag cannot be read."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
            req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                                      _UDIAG_SHOW_NAME | _UDIAG_SHOW_PEER, 0xFFFFFFFF,
                                      0xFFFFFFFF)
            nl.sendall(_NLMSGHDR.pack(_NLMSGHDR.size + len(req), _SOCK_DIAG_BY_FAMILY,
                                      _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req)
            out: dict[int, tuple[str, int]] = {}
            while True:
                data = nl.recv(1 << 16)
                if not data:
                    return out
                for kind, body in _messages(data):
                    if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                        return out
                    if kind == _SOCK_DIAG_BY_FAMILY and len(body) >= _UNIX_DIAG_MSG.size:
                        inode = _UNIX_DIAG_MSG.unpack_from(body)[4]
                        out[inode] = _unix_attrs(body[_UNIX_DIAG_MSG.size:])
    except OSError:
        return {}


def _messages(data: bytes):
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, pos)[:2]
        if length < _NLMSGHDR.size:
            return
        yield kind, data[pos + _NLMSGHDR.size:pos + length]
        pos += (length + 3) & ~3


def _unix_attrs(attrs: bytes) -> tuple[str, int]:
    name, peer, pos = "", 0, 0
    while pos + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, pos)
        if length < 4:
            break
        value = attrs[pos + 4:pos + length]
        if kind == _UNIX_DIAG_NAME:
            name = ("@" + value[1:].decode(errors="replace") if value[:1] == b"\0"
                    else value.rstrip(b"\0").decode(errors="replace"))
        elif kind == _UNIX_DIAG_PEER and len(value) >= 4:
            peer = struct.unpack_from("=I", value)[0]
        pos += (length + 3) & ~3
    return name, peer
