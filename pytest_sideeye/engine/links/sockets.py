"""Sockets: fd -> TCP 4-tuple, from each process's own network namespace (/proc/PID/fd and
/proc/PID/net/tcp{,6}), read after the resume, so that the two ends of one connection are
found in two processes whether they talk over a Docker network or the host's loopback."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Socket:
    local: tuple[str, int]
    remote: tuple[str, int]
    listening_local: bool     # its local address accepts connections (it is the acceptor)


class NetView:
    """/proc reads for the processes of one snapshot, each network namespace read once."""

    def __init__(self) -> None:
        self._tables: dict[str, tuple[dict[int, tuple], set]] = {}

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
