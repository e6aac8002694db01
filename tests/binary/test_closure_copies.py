"""binary/closure_copies.py on real builds of fixture h2peers: net/http's
(*http2serverConn).runHandler passes `rw` and `req` to the handler in registers, so DWARF
has no location for them while the handler runs; their copies in its deferred closure
give one from Go 1.23 on (the closure's DWARF gives their offsets), and none on Go 1.21.
Live: fixture deferzoo (a closure deferred on every path, and one in an `if` not taken);
the h2c handler's goroutine linked by the stream id read there is
tests/engine/test_links_h2.py."""
from __future__ import annotations

import contextlib

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86 import X86_OP_REG
from oracle import start_app
from support import GO_VERSIONS

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine import Target, take_snapshot

RUN_HANDLER = "net/http.(*http2serverConn).runHandler"
CFA = 1 << 32


def _call_sites(info, fn) -> list[int]:
    """The pcs a parked frame of fn has (a return address minus one) at its calls of a
    func value (the handler, the hook, the deferred calls)."""
    f = info.symtab.func_by_name(fn)
    code = info.debug._read_code(f.entry, f.end - f.entry)
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    return [i.address + i.size - 1 for i in md.disasm(code, f.entry)
            if i.mnemonic == "call" and i.operands[0].type == X86_OP_REG]


def _where(info, fn, name, pc):
    scope = info.debug.function(fn).concrete
    var = next(v for v in scope.variables if v.name == name)
    return info.debug.location(var, scope.cu_offset, pc, CFA)


@pytest.mark.parametrize("version", ["1.24.11", "1.21.13"])
def test_run_handler_params_are_read_from_the_deferred_closure(go_build, version):
    info = analyze(go_build("h2peers", version), need_layout=False)
    sites = _call_sites(info, RUN_HANDLER)
    assert len(sites) >= 2, sites
    # The handler's call: the indirect call after the closures are registered (the first
    # one is the test hook markNewGoroutine's).
    handler_call = sites[1]
    for name in ("rw", "req"):
        pieces = _where(info, RUN_HANDLER, name, handler_call)
        if version == "1.21.13":    # no DW_AT_go_closure_offset: nothing to go by
            assert pieces is None or pieces[0].kind == "unavailable", pieces
            continue
        assert pieces is not None and [p.kind for p in pieces] == ["mem"], (name, pieces)
        assert CFA - 0x200 < pieces[0].addr < CFA, (name, hex(pieces[0].addr - CFA))
    # Before the closure exists, nothing is made up.
    if version != "1.21.13":
        f = info.symtab.func_by_name(RUN_HANDLER)
        assert _where(info, RUN_HANDLER, "rw", f.entry) is None or \
            _where(info, RUN_HANDLER, "rw", f.entry)[0].kind == "unavailable"


def test_a_parameter_is_read_from_its_deferred_closure_only_where_it_was_built(
        go_build, needs_root):
    """Fixture deferzoo, live, one snapshot of its three builds: always(o) defers a closure
    over o and parks in park(o), so o is read from the closure's copy (Go 1.23 on);
    sometimes(o, false) would defer one only if its flag were set, so its slot holds
    whatever the stack had: o stays unavailable there, never garbage."""
    with contextlib.ExitStack() as stack:
        apps = {v: stack.enter_context(start_app(go_build("deferzoo", v))) for v in GO_VERSIONS}
        snap = take_snapshot([Target(a.pid) for a in apps.values()],
                             capture={"main.always": ["o"], "main.sometimes": ["o"]})
    for version, app in apps.items():
        (proc,) = [p for p in snap.processes if p.pid == app.pid]
        got = {f.function: v for g in proc.goroutines for f in g.frames
               for v in f.variables if v.name == "o"}
        assert set(got) == {"main.always", "main.sometimes"}, (version, got)
        if version == "1.21.13":    # no DW_AT_go_closure_offset: nothing to go by
            assert not got["main.always"].available, got["main.always"]
        else:
            assert got["main.always"].value == {"ID": 71}, (version, got["main.always"])
        sometimes = got["main.sometimes"]
        assert not sometimes.available and sometimes.error is None, (version, sometimes)
