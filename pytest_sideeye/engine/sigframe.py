"""Where the Go signal handler's code is, so that a thread caught in it can be unwound
through the kernel's signal frame into the goroutine it interrupted (bpf/snapshot.bpf.c,
signal_context). The kernel enters runtime.sigtramp with the return address
runtime.sigreturn__sigaction (the handler's sa_restorer) on top of its signal frame; the
ucontext holding the interrupted registers follows that word."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

TRAMPOLINE = "runtime.sigtramp"
RESTORER = "runtime.sigreturn__sigaction"


@dataclass(frozen=True)
class SignalCode:
    """Link-time code ranges [entry, end) of the handler's entry and its restorer."""
    tramp: tuple[int, int]
    restorer: tuple[int, int]

    # The config of a binary without them: the program then never looks for a frame.
    NONE: ClassVar[dict[str, int]] = dict.fromkeys(
        ("sigtramp_lo", "sigtramp_hi", "sigret_lo", "sigret_hi"), 0)

    def config(self, bias: int) -> dict[str, int]:
        """The program's config fields, at the process's load bias."""
        return {"sigtramp_lo": self.tramp[0] + bias, "sigtramp_hi": self.tramp[1] + bias,
                "sigret_lo": self.restorer[0] + bias, "sigret_hi": self.restorer[1] + bias}


def signal_code(symtab) -> SignalCode | None:
    """From the pclntab (stripped binaries have it too); None when either is missing (a
    runtime that names them otherwise: its threads in a handler stay unexplained)."""
    tramp, restorer = symtab.func_by_name(TRAMPOLINE), symtab.func_by_name(RESTORER)
    if tramp is None or restorer is None:
        return None
    return SignalCode((tramp.entry, tramp.end), (restorer.entry, restorer.end))
