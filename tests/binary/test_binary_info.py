"""gobinary.analyze and runtime_layout on real binaries of the three Go toolchains, with
`go tool nm`, the runtime sources' constants and a live process as oracles."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support import GO_VERSIONS, patched_go_version

from pytest_sideeye.binary import elf as binelf
from pytest_sideeye.binary import info as gobinary
from pytest_sideeye.binary.layout import (
    DwarfIndex,
    RuntimeLayout,
    table_digest,
    variable_address,
)
from pytest_sideeye.engine.process import exe_for_pid, load_bias
from pytest_sideeye.errors import MissingDebugInfo, NotGoBinary, SideeyeError, TargetGone
from pytest_sideeye.memo import MEMO
from pytest_sideeye.services import toolchains

RUNTIME_GLOBALS = ("runtime.allgs", "runtime.allglen", "runtime.allm",
                   "runtime.waitReasonStrings", "runtime.buildVersion",
                   "runtime.firstmoduledata")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test starts cold, with its own disk cache."""
    monkeypatch.setenv("SIDEEYE_BINARY_CACHE", str(tmp_path / "binaries"))
    MEMO.clear()
    yield
    MEMO.clear()


def go_nm(version: str, binary: Path) -> dict[str, int]:
    out = subprocess.run([str(toolchains.go_binary(version)), "tool", "nm", str(binary)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].strip():
            syms.setdefault(parts[2], int(parts[0], 16))
    return syms


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_analyze_matches_go_tool_nm(go_build, version):
    binary = go_build("inlines", version)
    info = gobinary.analyze(binary)
    nm = go_nm(version, binary)
    assert info.go_version == f"go{version}"
    assert not info.pie
    assert info.text_start == nm["runtime.text"]
    for name in RUNTIME_GLOBALS:
        assert info.symbols[name] == nm[name], name
    assert info.symbols["runtime.goexit"] == nm["runtime.goexit.abi0"]
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        image = binelf.StaticImage(elf)
        # The moduledata offsets used when there is no symbol table.
        md = info.symbols["runtime.firstmoduledata"]
        assert image.u64(md + binelf.MODULEDATA_TEXT) == nm["runtime.text"]
        assert image.gofunc_from_moduledata(md) == nm["go:func.*"]
        index = DwarfIndex(elf)
        # The DWARF fallback for binaries without .symtab gives the same addresses.
        for name in RUNTIME_GLOBALS[:5]:
            assert variable_address(index, name) == nm[name], name
    assert info.build_id and "/" not in info.build_id


# Facts from each release's runtime/runtime2.go and runtime/runtime2.go waitReasonStrings.
WAIT_REASONS = {
    "1.21.13": {"chan receive", "select", "sleep", "sync.Mutex.Lock", "IO wait",
                "semacquire"},
    "1.24.11": {"chan receive", "select", "sleep", "sync.Mutex.Lock", "sync.WaitGroup.Wait"},
    "1.27.3": {"chan receive", "select", "sleep", "sync.Mutex.Lock", "sync.WaitGroup.Wait"},
}


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_layout_facts(go_build, version):
    layout = gobinary.analyze(go_build("inlines", version)).layout
    st = layout.status_values
    assert (st["_Gidle"], st["_Grunnable"], st["_Grunning"], st["_Gsyscall"],
            st["_Gwaiting"], st["_Gdead"], st["_Gcopystack"], st["_Gpreempted"],
            st["_Gscan"]) == (0, 1, 2, 3, 4, 6, 8, 9, 0x1000)
    assert ("_Gleaked" in st) == (version >= "1.26")
    assert "_GCoff" not in st and "_GoidCacheBatch" not in st
    assert layout.wait_reasons[0] == ""
    assert WAIT_REASONS[version] <= set(layout.wait_reasons)
    g = layout.g_offsets
    # runtime.g starts with stack{lo,hi} then stackguard0; sched is a gobuf of words.
    assert (g["stack.lo"], g["stack.hi"], g["stackguard0"]) == (0, 8, 16)
    assert g["sched.sp"] + 8 == g["sched.pc"] and g["sched.pc"] + 8 == g["sched.g"]
    assert g["sched.sp"] < g["syscallsp"] < g["atomicstatus"] < g["goid"] < g["waitreason"]
    assert layout.g_sizes["atomicstatus"] == 4 and layout.g_sizes["goid"] == 8
    assert layout.g_sizes["waitreason"] == 1
    assert ("syscallbp" in g) == (version >= "1.23")
    assert "parentGoid" in g
    assert g["gopc"] < g["startpc"] < layout.g_size
    assert max(layout.m_offsets.values()) < layout.m_size
    assert layout.m_offsets["g0"] == 0
    again = RuntimeLayout.from_json(json.loads(layout.dumps()))
    assert again == layout


def test_pie_build(go_build):
    binary = go_build("inlines", "1.24.11", flags=("-buildmode=pie",))
    info = gobinary.analyze(binary)
    assert info.pie
    proc, main_addr, _ = start_parked(binary)
    try:
        bias = load_bias(proc.pid, info)
        assert bias != 0 and bias % 4096 == 0
        assert main_addr - bias == info.symtab.func_by_name("main.main").entry
    finally:
        stop(proc)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_no_dwarf_takes_its_layouts_from_the_table(go_build, version):
    """-ldflags=-w: the layouts come from the table (made from reference builds of the
    same Go version) and equal what this program's own DWARF build says; the symbol table
    still gives the runtime globals."""
    info = gobinary.analyze(go_build("inlines", version, ldflags="-w"))
    own = gobinary.analyze(go_build("inlines", version)).layout
    assert info.layout.source.startswith("table (Go 1.") and not info.has_dwarf
    for name in ("g_offsets", "g_size", "m_offsets", "m_size", "status_values",
                 "wait_reasons", "g_sizes", "m_sizes"):
        assert getattr(info.layout, name) == getattr(own, name), name
    nm = go_nm(version, go_build("inlines", version, ldflags="-w"))
    assert info.globals_from == "symbols"
    assert info.symbols["runtime.allgs"] == nm["runtime.allgs"]
    main = info.symtab.func_by_name("main.main")
    assert info.symtab.frames_for_pc(main.entry, is_call_site=False)[0].function == "main.main"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_binary_finds_the_runtime_globals_in_its_code(go_build, version):
    """-s -w: no symbol table either. allgs, allglen and allm come from the code of
    runtime.allgadd and runtime.mcommoninit, and equal the -w build's symbols (the two
    builds differ only in the tables the linker drops)."""
    binary = go_build("inlines", version, ldflags="-s -w")
    info = gobinary.analyze(binary)
    assert info.go_version == f"go{version}" and not info.has_symtab
    assert info.globals_from == "code"
    nm = go_nm(version, go_build("inlines", version, ldflags="-w"))
    for name in ("runtime.allgs", "runtime.allglen", "runtime.allm"):
        assert info.symbols[name] == nm[name], name
    # Found without any symbol table: moduledata by its pointer to the pcHeader.
    with open(binary, "rb") as f:
        image = binelf.StaticImage(ELFFile(f))
        pcln_addr, _ = image.pclntab_section()
        assert image.u64(info.symbols["runtime.firstmoduledata"]) == pcln_addr
    assert info.symbols["runtime.goexit"] == info.symtab.func_by_name("runtime.goexit").entry


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_binary_finds_runtime_sched_in_its_code(go_build, version):
    """-s -w: runtime.sched (the pre-read reads sched.timeToRun) comes from
    runtime.newproc1's atomic add to sched.goidgen, checked by schedEnableUser's
    lock(&sched.lock), and equals the -w build's symbol."""
    info = gobinary.analyze(go_build("inlines", version, ldflags="-s -w"))
    nm = go_nm(version, go_build("inlines", version, ldflags="-w"))
    assert info.symbols.get("runtime.sched") == nm["runtime.sched"]


def test_a_version_the_table_lacks_is_refused_by_name(go_build, tmp_path):
    binary = go_build("inlines", "1.24.11", ldflags="-w")
    alien = patched_go_version(binary, "go1.24.11", "go1.99.11", tmp_path / "alien")
    with pytest.raises(MissingDebugInfo) as e:
        gobinary.analyze(alien)
    msg = str(e.value)
    assert "Go 1.99.11 is not in the runtime layout table" in msg and "\n" not in msg
    assert "1.21" in msg and "1.27" in msg      # names what the table has
    # A patch release of a minor whose checked patches differ is not guessed either.
    from pytest_sideeye.binary.layout import table_layout, table_versions
    if "1.24" not in table_versions():
        assert table_layout("go1.24.7") is None
    assert table_layout("go1.24.11") is not None and table_layout("go1.20.1") is None


def test_not_go_binaries(tmp_path):
    with pytest.raises(NotGoBinary, match="not a Go binary"):
        gobinary.analyze("/bin/ls")
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotGoBinary, match="not an ELF"):
        gobinary.analyze(text)
    with pytest.raises(SideeyeError, match="no such file"):
        gobinary.analyze(tmp_path / "missing")
    if Path("/usr/sbin/runc").exists():   # Debian's runc: Go 1.19, stripped
        with pytest.raises(SideeyeError, match=r"Go 1\.19 is not supported; supported: 1\.21"):
            gobinary.analyze("/usr/sbin/runc")


def test_errors_are_one_line(tmp_path):
    for path in ("/bin/ls", tmp_path):
        with pytest.raises(SideeyeError) as e:
            gobinary.analyze(path)
        assert "\n" not in str(e.value)


def test_disk_cache_by_build_id(go_build, tmp_path):
    binary = go_build("inlines", "1.21.13")
    cold = gobinary.analyze(binary)
    files = list(gobinary.CACHE.folder.glob("*.json"))
    # By build id and the build info's Go version (a rewritten build info keeps the id),
    # and the layout table's digest (a binary without DWARF takes its layouts from it).
    assert [f.stem for f in files] == [f"{cold.build_id}-{cold.go_version}-{table_digest()}"]
    # A copy at another path with the same build id is served from the disk cache.
    copy = tmp_path / "copy"
    shutil.copy(binary, copy)
    MEMO.clear()
    warm = gobinary.analyze(copy)
    assert warm.layout == cold.layout and warm.symbols == cold.symbols
    assert warm.symtab.frames_for_pc(cold.symbols["runtime.goexit"] + 1, is_call_site=True) \
        == cold.symtab.frames_for_pc(cold.symbols["runtime.goexit"] + 1, is_call_site=True)
    # The memory cache returns the same object while the file is unchanged.
    assert gobinary.analyze(copy) is warm


def test_exe_for_pid():
    assert os.path.samefile(exe_for_pid(os.getpid()), "/proc/self/exe")
    with pytest.raises(TargetGone):
        exe_for_pid(2 ** 22 + 12345)


def test_buildinfo_both_formats(go_build):
    # Go 1.18+: strings inline after the 32-byte header (read from a real binary).
    info = gobinary.analyze(go_build("inlines", "1.21.13"), need_layout=False)
    assert info.go_version == "go1.21.13"
    # Before 1.18: pointers to Go string headers (no such toolchain here: a blob laid
    # out as debug/buildinfo reads it, with its data at made-up addresses).
    memory = {0x1000: struct.pack("<QQ", 0x2000, 8), 0x2000: b"go1.17.1",
              0x1010: struct.pack("<QQ", 0x3000, 4), 0x3000: b"path"}
    blob = binelf.BUILDINFO_MAGIC + bytes([8, 0]) + struct.pack("<QQ", 0x1000, 0x1010)
    assert binelf.parse_buildinfo(blob, lambda a, n: memory[a][:n]) == ("go1.17.1", "path")


# ---- a live process as the oracle of the runtime.g layout -------------------------------

def start_parked(binary: Path) -> tuple[subprocess.Popen, int, int]:
    # GOTRACEBACK=system: the SIGQUIT dump then shows runtime frames (gopark...) too.
    proc = subprocess.Popen([str(binary), "park"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, GOTRACEBACK="system"))
    main_addr = int(proc.stdout.readline().split()[1], 16)
    ready = proc.stdout.readline()
    assert ready.startswith("READY"), ready
    return proc, main_addr, int(ready.split()[1])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def quit_and_dump(proc: subprocess.Popen) -> str:
    """SIGQUIT: the runtime prints every goroutine to stderr and exits."""
    proc.send_signal(signal.SIGQUIT)
    _, err = proc.communicate(timeout=30)
    return err


def parse_dump(text: str) -> dict[int, dict]:
    """goid -> {state, top function, top file:line, +offset, created by main.park?}."""
    out = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        m = re.match(r"goroutine (\d+) .*?\[([^\]]+)\]:", lines[0])
        if not m or len(lines) < 3:
            continue
        pos = re.match(r"\s+(\S+):(\d+)(?: \+(0x[0-9a-f]+))?", lines[2])
        out[int(m.group(1))] = {
            "state": m.group(2).split(",")[0],
            "function": lines[1].rsplit("(", 1)[0],
            "file": pos.group(1), "line": int(pos.group(2)),
            "offset": int(pos.group(3), 16) if pos.group(3) else None,
            "parked_by_fixture": "created by main.park" in block,
        }
    return out


def read_goroutines(pid: int, info: gobinary.BinaryInfo, bias: int) -> dict[int, dict]:
    """Read every runtime.g through /proc/PID/mem at the offsets under test."""
    lay = info.layout
    g, size = lay.g_offsets, lay.g_size
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        def read(addr: int, n: int) -> bytes:
            mem.seek(addr)
            return mem.read(n)
        ptr, n = struct.unpack("<QQ", read(info.symbols["runtime.allgs"] + bias, 16))
        assert n == struct.unpack("<Q", read(info.symbols["runtime.allglen"] + bias, 8))[0]
        found = {}
        for gp in struct.unpack(f"<{n}Q", read(ptr, 8 * n)):
            raw = read(gp, size)
            goid = struct.unpack_from("<Q", raw, g["goid"])[0]
            found[goid] = {
                "status": struct.unpack_from("<I", raw, g["atomicstatus"])[0],
                "waitreason": raw[g["waitreason"]],
                "pc": struct.unpack_from("<Q", raw, g["sched.pc"])[0],
                "self": struct.unpack_from("<Q", raw, g["sched.g"])[0] == gp,
                "stack": struct.unpack_from("<QQ", raw, g["stack.lo"]),
                "sp": struct.unpack_from("<Q", raw, g["sched.sp"])[0],
            }
    return found


@pytest.mark.parametrize("version, flags", [(v, ()) for v in GO_VERSIONS]
                         + [("1.24.11", ("-buildmode=pie",))])
def test_layout_reads_a_live_process(go_build, needs_root, version, flags):
    binary = go_build("inlines", version, flags=flags)
    info = gobinary.analyze(binary)
    proc, _, pid = start_parked(binary)
    try:
        bias = load_bias(pid, gobinary.analyze(exe_for_pid(pid)))
        live = read_goroutines(pid, info, bias)
        # The goroutines stay parked: the dump shows them as they were read.
        dump = parse_dump(quit_and_dump(proc))
    finally:
        stop(proc)
    assert 1 in live
    waiting = info.layout.status_values["_Gwaiting"]
    parked = {goid: d for goid, d in dump.items() if d["parked_by_fixture"]}
    assert len(parked) == 6 and set(parked) <= set(live)
    # The runtime may start system goroutines (GC workers) between the read and the dump.
    assert len(set(dump) & set(live)) >= 8
    states = set()
    for goid, d in parked.items():
        got = live[goid]
        assert got["status"] == waiting, goid
        assert info.layout.wait_reasons[got["waitreason"]] == d["state"], goid
        assert got["self"]
        lo, hi = got["stack"]
        assert lo < got["sp"] < hi
        # The leaf frame of a parked goroutine: sched.pc is a return address.
        top = info.symtab.frames_for_pc(got["pc"] - bias, is_call_site=True)[0]
        assert (top.function, top.file, top.line) == (d["function"], d["file"], d["line"])
        assert got["pc"] - bias - top.entry == d["offset"]
        states.add(d["state"])
    assert {"chan receive", "select", "sleep", "sync.Mutex.Lock"} <= states


def test_process_in_a_container(go_build, needs_docker, needs_root, tmp_path):
    """A container's process: its executable is read through /proc/PID/exe from the host
    and is the very binary that was put in the image."""
    binary = go_build("inlines", "1.24.11")
    shutil.copy(binary, tmp_path / "inlines")
    (tmp_path / "Dockerfile").write_text(
        'FROM scratch\nCOPY inlines /inlines\nENTRYPOINT ["/inlines", "park"]\n')
    tag = f"sideeye-test/gobinary:{os.getpid()}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    name = f"sideeye-gobinary-{os.getpid()}"
    try:
        subprocess.run(["docker", "run", "-d", "--name", name, tag], check=True,
                       capture_output=True, timeout=60)
        pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                                 check=True, capture_output=True, text=True).stdout)
        info = gobinary.analyze(exe_for_pid(pid))
        assert info.build_id == gobinary.analyze(binary).build_id
        assert load_bias(pid, info) == 0
        deadline = time.monotonic() + 10
        while True:   # the fixture parks its goroutines within 100 ms of starting
            live = read_goroutines(pid, info, 0)
            waiting = [g for g in live.values()
                       if g["waitreason"] < len(info.layout.wait_reasons)
                       and info.layout.wait_reasons[g["waitreason"]] == "sync.Mutex.Lock"]
            if waiting or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert 1 in live and len(waiting) == 1
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


@pytest.mark.parametrize("version", ["1.21.13", "1.27.3"])
def test_external_linking_without_symbols(go_build, version):
    """cgo's external linker puts C code at the start of .text; without .symtab the
    text start then comes from the pcHeader (up to 1.26) or the moduledata (1.27)."""
    kw = {"static": False}
    full = go_build("inlines", version, ldflags="-linkmode=external", **kw)
    with open(full, "rb") as f:
        text_section = binelf.StaticImage(ELFFile(f)).section(".text")[0]
    assert gobinary.analyze(full).text_start > text_section
    stripped = go_build("inlines", version, ldflags="-linkmode=external -s -w", **kw)
    info = gobinary.analyze(stripped, need_layout=False)
    out = subprocess.run([str(stripped)], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    main_addr = int(out.split()[1], 16)     # "MAIN 0x..." from the fixture
    assert info.symtab.func_for_pc(main_addr).name == "main.main"
    assert info.symtab.func_for_pc(main_addr).entry == main_addr
