"""pclntab.Symtab against the Go toolchain's own answers: runtime.CallersFrames (inline
expansion, printed in the inlines fixture), `go tool addr2line`, `go tool nm`, and the
DWARF call frame information for the pcsp table."""
from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support import GO_VERSIONS

from pytest_sideeye.binary.elf import StaticImage
from pytest_sideeye.binary.pclntab import Symtab, decode_pcvalue, func_name_for_print
from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.services import toolchains

BUILDS = {  # name -> go build options for the inlines fixture
    "default": {},
    "pie": {"flags": ("-buildmode=pie",)},
    "nodwarf": {"ldflags": "-w"},
    "stripped": {"ldflags": "-s -w"},
    # cgo's external linker puts C start-up code at the start of .text.
    "external": {"ldflags": "-linkmode=external", "static": False},
}


def symtab_of(path: Path) -> Symtab:
    with open(path, "rb") as f:
        return StaticImage(ELFFile(f)).symtab()


def run_records(binary: Path) -> tuple[int, list[tuple[str, list[int], list[tuple]]]]:
    """Run the fixture: (runtime address of main.main, [(label, pcs, frames)])."""
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    main_addr, stacks = 0, []
    for line in out.splitlines():
        if line.startswith("MAIN "):
            main_addr = int(line.split()[1], 16)
        elif line.startswith("STACK "):
            _, label, *pcs = line.split()
            stacks.append((label, [int(p, 16) for p in pcs], []))
        elif line.startswith("FRAME "):
            fn, file, ln, inl = line[6:].split("\t")
            stacks[-1][2].append((fn, file, int(ln), inl == "1"))
    return main_addr, stacks


def expand_like_callers(st: Symtab, pcs: list[int], bias: int) -> list[tuple]:
    """What CallersFrames prints, from frames_for_pc: runtime.Callers gives one PC per
    logical frame (a return address for the innermost frame of each physical frame,
    then fake return PCs for its inlined callers), so expand each physical frame once
    and skip the PCs that belong to its inline chain."""
    out, i, callee = [], 0, None
    while i < len(pcs):
        pc = pcs[i] - bias
        frames = st.frames_for_pc(pc, is_call_site=True, callee=callee)
        out += [(f.function, f.file, f.line, f.inlined) for f in frames]
        callee = st.func_for_pc(pc).name
        i += max(1, len(frames))
    return out


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("build", BUILDS)
def test_inline_expansion_matches_callers_frames(go_build, version, build):
    binary = go_build("inlines", version, **BUILDS[build])
    st = symtab_of(binary)
    main_addr, stacks = run_records(binary)
    bias = main_addr - st.func_by_name("main.main").entry
    assert (bias != 0) == (build == "pie")
    labels = {label for label, _, _ in stacks}
    assert labels == {"inlined", "plain", "ptrmethod", "valuemethod", "closure", "generic",
                      "genericmethod", "goroutine"}
    inlined_seen = 0
    for label, pcs, frames in stacks:
        assert expand_like_callers(st, pcs, bias) == frames, label
        inlined_seen += sum(1 for f in frames if f[3])
    # The fixture inlines leafInlined/middleInlined/outerInlined at least.
    assert inlined_seen >= 3


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_names_of_inlined_generic_closure_and_method_frames(go_build, version):
    st = symtab_of(go_build("inlines", version))
    _, stacks = run_records(go_build("inlines", version))
    by_label = {label: (pcs, frames) for label, pcs, frames in stacks}
    pcs, frames = by_label["inlined"]
    leaf = st.frames_for_pc(pcs[1], is_call_site=True)
    assert [f.function for f in leaf] == ["main.leafInlined", "main.middleInlined",
                                         "main.outerInlined", "main.runRecords"]
    assert [f.inlined for f in leaf] == [True, True, True, False]
    # The innermost frame is looked up inside the CALL; its callers at their call sites.
    assert leaf[0].pc == pcs[1] - 1 and leaf[-1].pc == pcs[4] - 1
    assert len({f.entry for f in leaf}) == 1
    assert {f[0] for f in by_label["genericmethod"][1]} >= {"main.(*Box[...]).Get"}
    assert any(f[0] == "main.Map[...]" for f in by_label["generic"][1])
    assert any(f[0].startswith("main.runRecords.func") for f in by_label["closure"][1])
    assert any(f[0] == "main.T.ValueMethod" for f in by_label["valuemethod"][1])


def addr2line(version: str, binary: Path, pcs: list[int]) -> list[tuple[str, str, int]]:
    go = toolchains.go_binary(version)
    out = subprocess.run([str(go), "tool", "addr2line", str(binary)], text=True,
                         input="".join(f"{pc:#x}\n" for pc in pcs), capture_output=True,
                         check=True, timeout=60).stdout.splitlines()
    res = []
    for name, pos in zip(out[0::2], out[1::2]):
        file, _, line = pos.rpartition(":")
        res.append((name, file, int(line)))
    return res


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_pc_lookup_matches_go_tool_addr2line(go_build, version):
    binary = go_build("inlines", version)
    st = symtab_of(binary)
    rng = random.Random(1)
    funcs = list(st.funcs())
    # A spread of PCs: every entry of the main package, and random PCs everywhere.
    pcs = [f.entry for f in funcs if f.name.startswith("main.")]
    for f in rng.sample(funcs, 300):
        pcs.append(rng.randrange(f.entry, f.end))
    expected = addr2line(version, binary, pcs)
    mismatches = []
    for pc, (name, file, line) in zip(pcs, expected):
        if line < 0:    # padding between functions: addr2line says ":-1", the runtime "?:0"
            file, line = "?", 0
        got = (st.func_for_pc(pc).name, *st.file_line(pc))
        if got != (name, file, line):
            mismatches.append((hex(pc), got, (name, file, line)))
    assert not mismatches, mismatches[:5]
    assert len(expected) == len(pcs)


def go_nm(version: str, binary: Path, kinds: str) -> dict[str, set[int]]:
    """name -> addresses (ABI wrappers share their function's name) of these kinds."""
    go = toolchains.go_binary(version)
    out = subprocess.run([str(go), "tool", "nm", str(binary)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    syms: dict[str, set[int]] = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in kinds:
            syms.setdefault(parts[2], set()).add(int(parts[0], 16))
    return syms


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_function_entries_match_go_tool_nm(go_build, version):
    binary = go_build("inlines", version)
    st = symtab_of(binary)
    text = go_nm(version, binary, "Tt")
    checked = 0
    for f in st.funcs():
        # Assembly functions and ABI wrappers are "<name>.abi0" in nm, "<name>" in the table.
        known = text.get(f.name, set()) | text.get(f.name + ".abi0", set())
        if known:
            assert f.entry in known, f.name
            checked += 1
        assert st.func_for_pc(f.entry) == f
        assert st.func_for_pc(f.end - 1) == f
    assert checked > 0.99 * len(st)
    assert text["runtime.goexit.abi0"] == {st.func_by_name("runtime.goexit").entry}
    assert st.func_for_pc(st.text_start - 1) is None


def cfa_offsets(binary: Path, names: set[str], st: Symtab) -> list[tuple[int, int]]:
    """(pc, CFA offset from rsp) rows from .debug_frame for the functions named."""
    rows = []
    with open(binary, "rb") as fh:
        dwarf = ELFFile(fh).get_dwarf_info()
        for entry in dwarf.CFI_entries():
            if "initial_location" not in entry.header:
                continue
            f = st.func_for_pc(entry.header["initial_location"])
            if f is None or f.name not in names:
                continue
            table = entry.get_decoded().table
            for i, row in enumerate(table):
                end = table[i + 1]["pc"] if i + 1 < len(table) else f.end
                if row["cfa"].reg == 7:   # rsp
                    rows.extend((pc, row["cfa"].offset) for pc in range(row["pc"], end))
    return rows


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_sp_delta_matches_dwarf_call_frame_info(go_build, version):
    binary = go_build("inlines", version)
    st = symtab_of(binary)
    names = {"main.record", "main.runRecords", "main.main", "runtime.gopark",
             "runtime.newproc1", "runtime.schedule"}
    rows = cfa_offsets(binary, names, st)
    assert len(rows) > 500
    for pc, cfa in rows:
        if st.file_line(pc) == ("?", 0):
            continue    # alignment padding after the code: no table covers it
        # The CFA sits above the return address: frame size = CFA - 8.
        assert st.sp_delta(pc) == cfa - 8, hex(pc)
    assert st.sp_delta(st.func_by_name("main.record").entry) == 0


def test_go119_table_parses_but_older_formats_are_refused():
    runc = Path("/usr/sbin/runc")   # Debian's runc: Go 1.19, stripped (magic 0xfffffff0)
    if runc.exists():
        st = symtab_of(runc)
        main = st.func_by_name("main.main")
        assert main is not None and st.func_for_pc(main.entry + 1) == main
        assert st.frames_for_pc(main.entry, is_call_site=False)[0].file.endswith("main.go")
    for magic, version in ((0xFFFFFFFA, "1.16-1.17"), (0xFFFFFFFB, "1.2-1.15")):
        header = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + bytes(64)
        with pytest.raises(SideeyeError, match=f"Go {version} is not supported"):
            Symtab(header, 0x401000)
    with pytest.raises(SideeyeError, match="unknown Go function table"):
        Symtab(struct.pack("<IBBBB", 0x12345678, 0, 0, 1, 8) + bytes(64), 0x401000)


def test_decode_pcvalue_recorded_table():
    # value -1 -> 0 (+1) for 4 bytes, then +8 for 2 bytes, then end: zig-zag deltas.
    table = bytes([2, 4, 16, 2, 0])
    assert decode_pcvalue(table, 0, 0x1000, 1) == ([0x1004, 0x1006], [0, 8])


@pytest.mark.parametrize("raw, printed", [
    ("main.main", "main.main"),
    ("main.Map[go.shape.int,go.shape.string]", "main.Map[...]"),
    ("main.(*Box[go.shape.string]).Get", "main.(*Box[...]).Get"),
    ("main.G[go.shape.int].M[go.shape.[]uint8]", "main.G[...].M[...]"),
    ("main.F[go.shape.[]int]", "main.F[...]"),
])
def test_func_name_for_print(raw, printed):
    assert func_name_for_print(raw) == printed


# abi.FuncIDWrapper in each release's internal/abi/symtab.go.
WRAPPER_FUNC_ID = {"1.21.13": 21, "1.24.11": 22, "1.27.3": 23}


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_wrappers_are_elided_like_tracebacks(go_build, version):
    st = symtab_of(go_build("inlines", version))
    assert st.wrapper_func_id == WRAPPER_FUNC_ID[version]
    # The autogenerated (*T).ValueMethod the fixture calls through an interface.
    wrapper = st.func_by_name("main.(*T).ValueMethod")
    assert wrapper.func_id == st.wrapper_func_id
    pc = wrapper.entry + 1
    assert st.frames_for_pc(pc, is_call_site=True) == []
    assert st.func_for_pc(pc) == wrapper
    # ... but kept when it called into a panic, as the runtime does.
    kept = st.frames_for_pc(pc, is_call_site=True, callee="runtime.sigpanic")
    assert [f.function for f in kept] == ["main.(*T).ValueMethod"]
    assert st.is_injected_call(st.func_by_name("runtime.sigpanic"))
    assert not st.is_injected_call(wrapper)


def test_call_site_adjustment(go_build):
    st = symtab_of(go_build("inlines", "1.27.3"))
    f = st.func_by_name("main.runRecords")
    pc = f.entry + 0x20
    # The innermost frame is resolved at the adjusted PC (outer ones at call sites).
    assert st.frames_for_pc(pc, is_call_site=True)[0].pc == pc - 1
    assert st.frames_for_pc(pc, is_call_site=False)[0].pc == pc
    # At the entry (a frame set up without running code) the runtime keeps the PC.
    assert st.frames_for_pc(f.entry, is_call_site=True)[0].pc == f.entry
    assert st.frames_for_pc(st.text_start - 1, is_call_site=True) == []
