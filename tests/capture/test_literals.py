"""String literals are captured whole, whatever the state of their pages (issue 24, item 4).

Literals live in the binary's read-only segment: file-backed pages the process may never
have touched, which a read that does not fault pages in (the stop hook) cannot read and
one that does (the iterator) pays for in the pause. The fixture `literals` parks
goroutines on literals it never reads, large ones on pages of their own far apart; the
binary's pages are dropped from the page cache before every snapshot, as on a machine that
has not read the binary lately. Both capture paths must read them whole, every time, and
without faulting the target's pages in (they are read from the file, after the resume)."""
from __future__ import annotations

import json
import os
import time

import pytest
from elftools.elf.elffile import ELFFile
from oracle import start_app
from support import GO_VERSIONS, GOAPPS

from pytest_sideeye import engine
from pytest_sideeye.binary import ReadOnlyData, analyze
from pytest_sideeye.capture import Limits
from pytest_sideeye.engine.process import load_bias
from pytest_sideeye.services import images

pytestmark = pytest.mark.usefixtures("needs_root")

SPEC = {"main.greet": ["banner"], "main.show": ["text"], "main.settle": ["o.Tags"]}
LIMITS = Limits(string_bytes=32 << 10)   # the largest literal whole
SNAPSHOTS = 20
PAGE = 4096

# The fixture's literals, built the way its constants are.
K16 = "0123456789abcdef"
K256 = K16 * 16
K4K = K256 * 16
K16K = K4K * 4
BANNER = "<script>alert('literal: banner')</script>"
FAR = [f"literal: far {c}|" + K256 for c in "ABC"]    # inside a 768 KiB literal
TEXTS = ["literal: small|" + K256, "literal: mid|" + K4K * 2, "literal: large|" + K16K + K4K,
         *FAR]
TAGS = [{"region": "eu", "lane": str(i % 4)} for i in range(3)]


def drop_from_page_cache(path) -> None:
    """Evict the file's pages that no process maps (the target's untouched pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def far_addresses(exe) -> dict[str, int]:
    """Link-time address of each far literal, found in the file's read-only segments
    (pyelftools, independently of the code under test)."""
    with open(exe, "rb") as f:
        data = f.read()
        segs = [(s["p_vaddr"], s["p_offset"], s["p_filesz"])
                for s in ELFFile(f).iter_segments()
                if s["p_type"] == "PT_LOAD" and not s["p_flags"] & 3]
    out = {}
    for text in FAR:
        off = data.index(text.encode())
        [vaddr] = [v + off - o for v, o, n in segs if o <= off < o + n]
        out[text[:15]] = vaddr
    return out


def resident(pid: int, addr: int) -> bool:
    """Whether the target's page at addr is mapped in its page tables (pagemap bit 63)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(addr // PAGE * 8)
        return bool(int.from_bytes(f.read(8), "little") >> 63)


def captured(snap) -> tuple[list, list, list]:
    banners, texts, tags = [], [], []
    for fn, out in (("main.greet", banners), ("main.show", texts), ("main.settle", tags)):
        for _g, f in snap.frames(fn):
            out += [v.value for v in f.variables]
    key = json.dumps
    return banners, sorted(texts, key=key), sorted(tags, key=key)


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("bpf_capture", ["1", "0"])
def test_literals_never_read_are_captured_whole(go_build, version, bpf_capture, monkeypatch):
    exe = go_build("literals", version)
    far = far_addresses(exe)
    pages = sorted(a // PAGE for a in far.values())
    assert all(b - a >= 32 for a, b in zip(pages, pages[1:])), f"literals not far apart: {far}"
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    # What is under test is where the bytes come from, not the pause budget: on a loaded
    # machine the Python rounds (maps) can take past the default 10 ms.
    monkeypatch.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "500")
    want = ([BANNER], sorted(TEXTS, key=json.dumps), sorted(TAGS, key=json.dumps))
    with start_app(exe) as app:
        assert not any(resident(app.pid, a) for a in far.values()), "fixture touched them"
        collectors = set()
        for i in range(SNAPSHOTS):
            drop_from_page_cache(exe)
            snap = engine.take_snapshot([app.pid], capture=SPEC, limits=LIMITS)
            got = captured(snap)
            assert got == want, f"snapshot {i + 1}: {json.dumps(got)[:300]}"
            collectors.add(snap.processes[0].collector)
        if bpf_capture == "0" or collectors == {"stop hook"}:
            # Read from the file after the resume: no pause faulted them in. (An iterator
            # that captured in BPF, when the stop hook could not, reads what it is given.)
            assert not any(resident(app.pid, a) for a in far.values())


def test_read_only_data_reads_what_the_process_memory_holds(go_build):
    """ReadOnlyData of /proc/PID/exe at the process's load bias gives the bytes of
    /proc/PID/mem (a PIE build: the bias is not 0), and nothing outside its read-only
    segments."""
    exe = go_build("literals", GO_VERSIONS[-1], flags=("-buildmode=pie",))
    with start_app(exe) as app:
        bias = load_bias(app.pid, analyze(f"/proc/{app.pid}/exe"))
        assert bias != 0
        ro = ReadOnlyData.open(f"/proc/{app.pid}/exe", bias)
        assert ro is not None and ro.ranges
        lo, hi, _off = ro.ranges[-1]
        with open(f"/proc/{app.pid}/mem", "rb", buffering=0) as mem:
            for link_addr in far_addresses(exe).values():
                assert ro.read(link_addr + bias, 600) == os.pread(mem.fileno(), 600,
                                                                 link_addr + bias)
            assert ro.read(hi - 16, 16) == os.pread(mem.fileno(), 16, hi - 16)
        assert ro.read(hi - 8, 16) is None            # runs past the segment's end
        assert ro.read(analyze(exe).symbols["runtime.allglen"] + bias, 8) is None  # writable


@pytest.mark.usefixtures("needs_docker")
@pytest.mark.parametrize("bpf_capture", ["1", "0"])
def test_a_containers_literals_are_read_from_the_binary_it_runs(bpf_capture, monkeypatch):
    """In a container the executable's path means nothing on the host: the literals are
    read from /proc/PID/exe, whole, and none of their pages is faulted in."""
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf_capture)
    monkeypatch.setenv("SIDEEYE_CAPTURE_PAUSE_MS", "500")
    tag = images.go_image("literals", GOAPPS / "literals", GO_VERSIONS[1])
    c = images.docker_client().containers.run(tag, detach=True)
    try:
        pid = wait_ready(c)
        assert not os.path.exists(os.readlink(f"/proc/{pid}/exe"))   # not a host path
        far = far_addresses(f"/proc/{pid}/exe")
        snap = engine.take_snapshot([engine.Target(pid)], capture=SPEC, limits=LIMITS)
        assert captured(snap) == ([BANNER], sorted(TEXTS, key=json.dumps),
                                  sorted(TAGS, key=json.dumps))
        if bpf_capture == "0" or snap.processes[0].collector == "stop hook":
            assert not any(resident(pid, a) for a in far.values())
    finally:
        c.remove(force=True)


def wait_ready(container, timeout: float = 30.0) -> int:
    """The container's Go process, once it printed READY (host PID)."""
    deadline = time.monotonic() + timeout
    while b"READY" not in container.logs():
        assert time.monotonic() < deadline, container.logs()[-500:]
        time.sleep(0.05)
    container.reload()
    return container.attrs["State"]["Pid"]
