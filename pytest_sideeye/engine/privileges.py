"""Whether this process may take snapshots: the one privilege check the engine, the plugin
and `sideeye doctor` share.

A snapshot loads BPF programs (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN, which stands in
for both on every kernel that has them), reads other processes' memory and executables
(CAP_SYS_PTRACE) and stops them (CAP_KILL, for processes of other users). Root has them
all; capabilities alone are enough (setcap, or docker run --cap-add)."""
from __future__ import annotations

import os
from pathlib import Path

# Bits of linux/capability.h.
CAPS = {"CAP_KILL": 5, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38,
        "CAP_BPF": 39}
NEEDED = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_KILL")
FIX = ("run as root (sudo), or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_KILL "
       "(setcap, or docker run --cap-add)")


def effective_caps() -> set[str] | None:
    """The names of this process's effective capabilities; None where /proc says nothing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                bits = int(line.split()[1], 16)
                return {name for name, bit in CAPS.items() if bits >> bit & 1}
    except (OSError, ValueError, IndexError):
        return None
    return None


def who() -> str:
    return "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"


def missing_caps(caps: set[str]) -> list[str]:
    have = set(caps)
    if "CAP_SYS_ADMIN" in have:
        have |= {"CAP_BPF", "CAP_PERFMON"}
    return [c for c in NEEDED if c not in have]


def missing_privileges() -> str | None:
    """One line saying what is missing, or None when snapshots may be taken."""
    caps = effective_caps()
    if caps is None:
        return None  # nothing to go by: let the kernel answer
    lacking = missing_caps(caps)
    if not lacking:
        return None
    return (f"snapshots need root, or {', '.join(NEEDED)}; this process ({who()}) lacks "
            f"{', '.join(lacking)}: run it as root (sudo), or grant those (setcap, or "
            "docker run --cap-add)")
