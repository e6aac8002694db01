"""Plain sockets: a goroutine reading or writing a connection (internal/poll's FD). The
pairing rule of last resort: the connection itself, its two most telling goroutines; a
`unix` link for a Unix socket, else `tcp`."""
from __future__ import annotations

from pytest_sideeye.engine.links.ends import End, endpoint
from pytest_sideeye.snapshot import Link

PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "internal/poll.(*FD).Read": ("read", {"fd": ("fd.Sysfd",)}),
    "internal/poll.(*FD).Write": ("write", {"fd": ("fd.Sysfd",)}),
}
# A blocked writer (its peer does not read) says more than a reader.
RANK = {"write": 1, "read": 2}


def keep(role: str, got: dict) -> bool:
    return True


def pair(client: End | None, server: End | None, client_addr: str | None,
         server_addr: str | None) -> list[Link]:
    unix = (client or server).sock.unix
    return [Link("unix" if unix else "tcp", endpoint(client, None), endpoint(server, None),
                 client_addr, server_addr)]
