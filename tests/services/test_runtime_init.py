"""A container's process is `runc init` (the runtime, itself a Go binary) for a moment
after `containers.run()` returns, until it execs the image's program: the fresh-clone run
once snapshotted runc instead of the service ("Go 1.19 is not supported"). Its Go
processes are found once it has become the program; a `runc init` that never does is
none of them. Real processes named as runc names its init (argv "runc", "init")."""
from __future__ import annotations

import subprocess
import time

from pytest_sideeye.services import containers


def _as_runc_init(tmp_path, script: str) -> subprocess.Popen:
    (tmp_path / "init").write_text(script)
    # argv is exactly ["runc", "init"]: sh runs the file "init" from its cwd.
    return subprocess.Popen(["runc", "init"], executable="/bin/sh", cwd=tmp_path)


def test_a_runc_init_is_waited_for_until_it_becomes_the_program(go_build, tmp_path):
    exe = go_build("parkzoo")
    p = _as_runc_init(tmp_path, f"sleep 0.3; exec {exe}\n")
    try:
        time.sleep(0.05)
        assert containers._is_runtime_init(p.pid)
        assert containers._is_go_executable(p.pid)
        assert not containers._is_runtime_init(p.pid)
    finally:
        p.kill()
        p.wait()


def test_a_runc_init_that_stays_one_is_not_a_go_process(tmp_path):
    p = _as_runc_init(tmp_path, "sleep 30\n")
    try:
        time.sleep(0.05)
        t0 = time.monotonic()
        assert not containers._past_runtime_init(p.pid, wait_s=0.2)
        assert 0.2 <= time.monotonic() - t0 < 2
    finally:
        p.kill()
        p.wait()
