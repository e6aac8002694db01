"""Who may ask the agent for what. The agent reads other processes' memory for whoever
asks, so it decides by the caller's kernel-verified credentials (SO_PEERCRED, and the
supplementary groups with SO_PEERGROUPS), never by what the request claims:

  rule 1, root: any process;
  rule 2, members of the socket's group: processes inside Docker containers (which a
          docker-group member controls anyway) and processes running under the caller's
          own uid; nothing else;
  rule 3, everyone else: refused.

Each refusal is one line naming the rule (Refused, HTTP 403).
"""
from __future__ import annotations

import grp
import os
import re
import socket
import struct
from dataclasses import dataclass

from pytest_sideeye.agent.protocol import HttpError

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)   # Linux >= 4.13
RULE_ROOT = "rule 1 (root: any process)"
RULE_GROUP = ("rule 2 (members of group {group}: processes in Docker containers and "
              "their own uid's processes)")
RULE_OTHERS = "rule 3 (everyone else is refused)"
RULE_REMOTE = ("rule 4 (remote callers, over TLS with the agent's token: processes in "
               "Docker containers)")
# A process in a Docker container sits in a cgroup named after the container's id, under
# /docker/<id> (cgroupfs driver) or docker-<id>.scope (systemd driver). Moving a process
# there takes root, so the cgroup is as trustworthy as the kernel's own credentials.
_DOCKER_CGROUP = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?(?:/|$)")


class Refused(HttpError):
    def __init__(self, message: str):
        super().__init__(403, message)


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    remote: str | None = None   # "ADDR:PORT" of a caller on the TLS listener
    # The subject of the client certificate it presented, verified against the agent's
    # --tls-client-ca: it stands in for the token.
    certified: str | None = None

    def describe(self) -> str:
        if self.remote:
            return f"remote {self.remote}" + (f" ({self.certified})" if self.certified else "")
        return f"uid {self.uid} (pid {self.pid})"


def remote_caller(address: str, certified: str | None = None) -> Caller:
    """A caller on the TLS listener: no uid to go by; its token or its verified client
    certificate (checked before any rule) is all it has."""
    return Caller(0, -1, -1, (), remote=address, certified=certified)


def peer_of(sock: socket.socket) -> Caller:
    """The connecting process's credentials as the kernel recorded them at connect()."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    try:
        # Python caps the buffer at 1024 bytes: 256 groups (more is ERANGE, below).
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError:
        groups = ()   # no supplementary groups known: only the primary gid counts
    return Caller(pid, uid, gid, tuple(groups))


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class Authorizer:
    """The rules for one socket, whose group is `gid`. `in_docker(pid)` answers whether a
    process runs in a running Docker container (docker_check below, or a test's own)."""

    def __init__(self, gid: int, in_docker):
        self.gid = gid
        self.in_docker = in_docker

    def rule_for(self, caller: Caller) -> str:
        """The rule the caller falls under; Refused for everyone else (rule 3)."""
        if caller.remote:
            return RULE_REMOTE
        if caller.uid == 0:
            return RULE_ROOT
        if caller.gid == self.gid or self.gid in caller.groups:
            return RULE_GROUP.format(group=group_name(self.gid))
        raise Refused(f"refused by {RULE_OTHERS}: {caller.describe()} is neither root nor "
                      f"a member of group {group_name(self.gid)}")

    def check_target(self, caller: Caller, pid: int) -> None:
        """Refused unless the caller may snapshot `pid` (the caller passed rule_for)."""
        if caller.remote:
            if not self.in_docker(pid):
                raise Refused(f"refused by {RULE_REMOTE}: pid {pid} is not in a Docker "
                              "container")
            return
        if caller.uid == 0:
            return
        rule = RULE_GROUP.format(group=group_name(self.gid))
        uids = process_uids(pid)
        if uids is None:
            return   # gone: the engine says so in that process's error
        if all(u == caller.uid for u in uids):
            return
        if self.in_docker(pid):
            return
        raise Refused(f"refused by {rule}: pid {pid} runs as uid {_owner(uids)}, not "
                      f"{caller.uid}, and is not in a Docker container")


def _owner(uids: tuple[int, ...]) -> str:
    return str(uids[0]) if len(set(uids)) == 1 else "/".join(map(str, uids))


def process_uids(pid: int) -> tuple[int, ...] | None:
    """Real, effective and saved uid of a process (all three must be the caller's, as for
    ptrace); None when it does not exist."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return tuple(int(x) for x in line.split()[1:4])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def docker_container_of(pid: int) -> str | None:
    """The id of the Docker container whose cgroup holds `pid`, from /proc (or None)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    m = _DOCKER_CGROUP.search(text)
    return m.group(1) if m else None


def docker_check(pid: int) -> bool:
    """Whether `pid` is in a Docker container that dockerd says is running: its cgroup
    names the container, and the container exists (a stale cgroup name proves nothing)."""
    cid = docker_container_of(pid)
    if cid is None:
        return False
    from pytest_sideeye.services import connect_docker
    try:
        client = connect_docker(timeout=5)
        try:
            state = client.api.inspect_container(cid).get("State", {})
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no Docker, no such container: not in a container
        return False
    return bool(state.get("Running"))


def socket_gid(path: str) -> int:
    return os.stat(path).st_gid
