"""The bad input matrix (issue 7, docs/bad-input.md): every input a user can get wrong gives
exit code 2 and exactly one line on stderr, never a traceback.

Each case runs the real `sideeye` command against a real process, binary, Docker daemon or
file. The rows of docs/bad-input.md are checked to name every case here, so the document
cannot drift from what is tested.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support import missing, patched_go_version

from pytest_sideeye.errors import BpfUnavailable

ROOT = Path(__file__).resolve().parents[2]
SIDEEYE = Path(sys.executable).parent / "sideeye"
DOC = ROOT / "docs" / "bad-input.md"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# Still uid 0, but without a single capability (what a security module refusing root
# looks like to the process: uid 0, and the kernel says no).
ROOT_WITHOUT_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
PF_KTHREAD = 0x00200000   # include/linux/sched.h


def sideeye(*args: str, env: dict | None = None, prefix: list[str] = (), preexec=None,
            timeout: float = 180) -> tuple[int, str]:
    r = subprocess.run([*prefix, str(SIDEEYE), *args], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})), preexec_fn=preexec,
                       timeout=timeout)
    return r.returncode, r.stderr


def one_line(rc: int, stderr: str, *words: str) -> str:
    """Asserts the contract; returns the line for further checks."""
    if os.environ.get("SIDEEYE_SHOW_LINES"):
        print(f"\nSHOWN: {stderr.strip()}")
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert rc == 2, f"exit code {rc}: {stderr}"
    for w in words:
        assert w.lower() in lines[0].lower(), f"{w!r} not in {lines[0]!r}"
    return lines[0]


# --- processes to point the CLI at ---------------------------------------------------------

class Running:
    """A started program, killed at the end; READY/ready lines are waited for."""

    def __init__(self, path, *args: str):
        self.p = subprocess.Popen([str(path), *args], stdout=subprocess.PIPE, text=True)
        if "sleep" not in str(path):
            self.p.stdout.readline()

    @property
    def pid(self) -> str:
        return str(self.p.pid)

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.p.kill()
        self.p.wait()


@pytest.fixture(scope="module")
def parked(go_build):
    with Running(go_build("manyparked"), "-n", "10") as r:
        yield r


def kernel_thread_pid() -> str:
    """pid 2 (kthreadd) when this PID namespace shows it, else any kernel thread: flags
    (field 9 of /proc/PID/stat) with PF_KTHREAD."""
    for pid in ["2", *sorted(filter(str.isdigit, os.listdir("/proc")), key=int)]:
        try:
            data = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2:].split()[6]) & PF_KTHREAD:
            return pid
    missing("no kernel thread in this PID namespace")


# exe_for_pid in a process of its own (run as another user, or without capabilities):
# prints the one line it raises, or OK.
EXE_PROBE = """
import sys
from pytest_sideeye.engine.process import exe_for_pid
from pytest_sideeye.errors import SideeyeError
try:
    exe_for_pid(int(sys.argv[1]))
    print("OK")
except SideeyeError as e:
    print(e)
"""


def probe_exe(pid: int, prefix: list[str]) -> str:
    r = subprocess.run([*prefix, sys.executable, "-c", EXE_PROBE, str(pid)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if os.environ.get("SIDEEYE_SHOW_LINES"):
        print(f"\nSHOWN: {r.stdout.strip()}")
    return r.stdout.strip()


# --- seccomp: the bpf(2) syscall refused, as Docker's default profile does -----------------

def deny_bpf_syscall() -> None:
    """preexec_fn: a seccomp filter making bpf(2) fail with EPERM for the child (the
    situation of a container started without CAP_SYS_ADMIN under Docker's default
    seccomp profile). Root stays root: the kernel just refuses BPF."""
    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    ld, jeq, ret = 0x20, 0x15, 0x06
    insns = [(ld, 0, 0, 4), (jeq, 0, 3, 0xC000003E),      # not x86-64: allow
             (ld, 0, 0, 0), (jeq, 0, 1, 321),              # syscall nr == bpf?
             (ret, 0, 0, 0x00050000 | 1),                  # SECCOMP_RET_ERRNO | EPERM
             (ret, 0, 0, 0x7FFF0000)]                      # SECCOMP_RET_ALLOW
    filters = (SockFilter * len(insns))(*[SockFilter(*i) for i in insns])
    prog = SockFprog(len(insns), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or \
            libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:   # NO_NEW_PRIVS; SECCOMP filter
        os._exit(97)


# --- the matrix --------------------------------------------------------------------------------

def test_not_a_go_program():
    with Running("/usr/bin/sleep", "30") as r:
        one_line(*sideeye("snapshot", "--pid", r.pid), "not a Go")


def test_no_such_process():
    p = subprocess.Popen(["true"])
    p.wait()
    one_line(*sideeye("snapshot", "--pid", str(p.pid)), str(p.pid))


def test_kernel_thread_is_not_a_go_program():
    """A kernel thread has no /proc/PID/exe (ENOENT, as for a process that is gone): the
    line says what it is, not that it is gone."""
    pid = kernel_thread_pid()
    line = one_line(*sideeye("snapshot", "--pid", pid), f"process {pid} is a kernel thread",
                    "not a Go program")
    assert "gone" not in line


def test_unreadable_exe_as_root_says_why(needs_root):
    """Root (uid 0) refused /proc/PID/exe gets the kernel's reason, not "run as root". The
    refusal is real: uid 0 without capabilities reading the exe of another user's process
    (EACCES). (The CLI itself stops earlier there, on the missing capabilities: this is
    what root refused by a security module would see.)"""
    p = subprocess.Popen([*NOBODY, "/usr/bin/sleep", "30"])
    try:
        for _ in range(200):   # until setpriv has become nobody and exec'd sleep
            if os.readlink(f"/proc/{p.pid}/exe") == "/usr/bin/sleep":
                break
            time.sleep(0.01)
        line = probe_exe(p.pid, ROOT_WITHOUT_CAPS)
    finally:
        p.kill()
        p.wait()
    assert line == f"cannot read /proc/{p.pid}/exe: Permission denied"


def test_unreadable_exe_as_another_user_says_run_as_root():
    """Who is not root and may not read another user's /proc/PID/exe is told to be root."""
    line = probe_exe(os.getpid(), NOBODY)
    assert line == f"cannot read the executable of process {os.getpid()}: run as root"


def unknown_version(go_build, ldflags: str, tmp_path: Path) -> Path:
    """hello without DWARF, claiming Go 1.99.11: a version the layout table lacks."""
    return patched_go_version(go_build("hello", "1.24.11", ldflags=ldflags), "go1.24.11",
                              "go1.99.11", tmp_path / f"hello{ldflags.replace(' ', '')}")


def test_go_binary_without_dwarf_of_an_unknown_version(needs_root, go_build, tmp_path):
    with Running(unknown_version(go_build, "-w", tmp_path)) as r:
        one_line(*sideeye("snapshot", "--pid", r.pid), "DWARF",
                 "Go 1.99.11 is not in the runtime layout table", "-ldflags=-w")


def test_stripped_go_binary_of_an_unknown_version(needs_root, go_build, tmp_path):
    with Running(unknown_version(go_build, "-s -w", tmp_path)) as r:
        one_line(*sideeye("snapshot", "--pid", r.pid), "stripped",
                 "Go 1.99.11 is not in the runtime layout table")


def test_error_line_names_the_process_it_is_about(needs_root, go_build, tmp_path):
    """Two processes of one binary without DWARF, one after the other: each line may only
    name its own /proc/PID, not the one analysed first."""
    binary = unknown_version(go_build, "-w", tmp_path)
    with Running(binary) as first, Running(binary) as second:
        for r in (first, second):
            line = one_line(*sideeye("snapshot", "--pid", r.pid), "DWARF")
            named = set(re.findall(r"/proc/(\d+)/", line))
            assert named <= {r.pid}, f"pid {r.pid}'s line names {sorted(named)}: {line}"


def test_go_version_older_than_supported(needs_root, go_build, tmp_path):
    from pytest_sideeye.services import toolchains
    built = go_build("hello", toolchains.default_version())
    old = patched_go_version(built, f"go{toolchains.default_version()}",
                             "go1.17." + toolchains.default_version().split(".", 2)[2], tmp_path / "old")
    with Running(old) as r:
        one_line(*sideeye("snapshot", "--pid", r.pid), "Go 1.17 is not supported")


def test_no_root(parked):
    line = one_line(*sideeye("snapshot", "--pid", parked.pid, prefix=NOBODY), "root")
    assert "sudo" in line


def test_bpf_refused_by_seccomp(needs_root, parked):
    rc, err = sideeye("snapshot", "--pid", parked.pid, preexec=deny_bpf_syscall)
    assert rc != 97, "could not install the seccomp filter"
    one_line(rc, err, "BPF")


def test_kernel_without_btf(tmp_path):
    """A kernel without CONFIG_DEBUG_INFO_BTF cannot be made here (the running one has it):
    the reader of the BTF file is given a missing and a non-BTF path instead."""
    from pytest_sideeye.engine.bpf import kernel_btf
    for path in (tmp_path / "missing", Path(__file__)):
        with pytest.raises(BpfUnavailable) as e:
            kernel_btf(str(path))
        assert "\n" not in str(e.value) and ("BTF" in str(e.value))


def test_docker_not_running():
    rc, err = sideeye("snapshot", "--container", "whatever",
                      env={"DOCKER_HOST": "unix:///nonexistent"})
    one_line(rc, err, "Docker")


def test_unknown_container(needs_docker):
    name = f"sideeye-no-such-{uuid.uuid4().hex[:8]}"
    one_line(*sideeye("snapshot", "--container", name), name)


@pytest.mark.parametrize("spec, words", [
    ("main.noSuchFunction:i", ("unknown function", "main.noSuchFunction")),
    ("main.parkedLeaf:noSuchVariable", ("unknown variable", "noSuchVariable")),
    ("main.parkedLeaf:i[", ("bad capture expression",)),
    ("no-colon-here", ("bad capture spec",)),
    ("context:a b", ("bad capture spec", "context:KEYTYPE")),
    ("type:main.noSuchType", ("unknown type", "main.noSuchType")),
    ("context:main.noSuchKey", ("unknown context key type", "main.noSuchKey")),
    ("type:main.job: noSuchField", ("bad field", "noSuchField", "main.job")),
], ids=["unknown-function", "unknown-variable", "bad-expression", "bad-spec", "bad-context-rule",
        "unknown-type", "unknown-context-key-type", "type-rule-bad-field"])
def test_bad_capture_spec(needs_root, parked, spec, words):
    one_line(*sideeye("snapshot", "--pid", parked.pid, "--capture", spec), *words)


def test_json_path_not_writable(needs_root, parked, tmp_path):
    path = tmp_path / "no-such-dir" / "snap.json"
    one_line(*sideeye("snapshot", "--pid", parked.pid, "--json", str(path)), "cannot write",
             str(path))


def test_report_path_not_writable(tmp_path):
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"format": "sideeye.snapshot/v1", "processes": []}))
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "report.html"   # its "directory" is a file: no mkdir helps
    one_line(*sideeye("report", str(snap), "-o", str(out)), str(out))


def test_report_of_a_file_that_is_not_a_snapshot(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "sideeye.snapshot/v1", "processes": [{"pid": 1,
                                                                               "goroutines": 3}]}))
    one_line(*sideeye("report", str(bad), "-o", str(tmp_path / "r.html")), "not a")


# --- the document -------------------------------------------------------------------------------

def test_every_case_has_a_row_in_the_doc():
    """docs/bad-input.md names the test of each row; every test of this module has one,
    and every test a row names exists (here or in test_reliability.py)."""
    named = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    tests = {name for name in globals() if name.startswith("test_")}
    tests.discard("test_every_case_has_a_row_in_the_doc")
    named.discard("test_every_case_has_a_row_in_the_doc")
    reliability = (Path(__file__).with_name("test_reliability.py")).read_text()
    existing = tests | set(re.findall(r"^def (test_\w+)", reliability, re.M))
    assert tests <= named, f"tests without a row in {DOC.name}: {sorted(tests - named)}"
    assert named <= existing, f"rows naming no test: {sorted(named - existing)}"
