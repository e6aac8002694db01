"""What the tests of containers users start themselves share: the images (built once per
session: ledger from fixtures/goapps, sleeper, a static C program that runs no Go), and a
throw-away pytest project run in a subprocess whose junit XML and reports are read back.

Every container an inner run starts carries the label RUN_LABEL=<run id>, so the outer
test can check what is left and remove it whatever happened inside.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from support import GOAPPS, ROOT

from pytest_sideeye.plugin.attach import sanitise
from pytest_sideeye.snapshot import Snapshot

RUN_LABEL = "sideeye-containers-test-run"
SLEEPER_C = ROOT / "fixtures" / "capps" / "sleeper" / "main.c"


def ledger_image() -> str:
    from pytest_sideeye.services.images import go_image
    return go_image("ledger", GOAPPS / "ledger")


def sleeper_image(workdir: Path) -> str:
    """A FROM-scratch image of the static C program: no Go inside."""
    import docker
    source = SLEEPER_C.read_bytes()
    tag = f"sideeye-test/sleeper:{hashlib.sha256(source).hexdigest()[:16]}"
    client = docker.from_env(version="auto")
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    exe = workdir / "sleeper"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(exe), str(SLEEPER_C)], check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in (
                ("Dockerfile", b'FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT ["/sleeper"]\n',
                 0o644),
                ("sleeper", exe.read_bytes(), 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
    return tag


class Project:
    """A pytest project in a folder, run in a subprocess (the real HOME for the caches)."""

    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.run_id = uuid.uuid4().hex[:12]
        self.extra_env = dict(env or {})
        self.write("pytest.ini", "[pytest]\n")

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(TESTCONTAINERS_RYUK_DISABLED="true", SIDEEYE_TEST_RUN=self.run_id,
                   SIDEEYE_TEST_RUN_LABEL=RUN_LABEL, **self.extra_env)
        return env

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
               "no:hypothesispytest", "-p", "no:randomly", "--sideeye-dir=reports",
               "-W", "ignore::DeprecationWarning", "--junitxml=junit.xml", "-rA", *args]
        r = subprocess.run(cmd, cwd=self.path, env=self.env(), capture_output=True,
                           text=True, timeout=timeout)
        print(r.stdout[-30000:], r.stderr[-5000:], sep="\n")  # shown when a check fails
        return r

    def outcomes(self) -> dict[str, str]:
        """Test name -> passed / failed / error / skipped, from the junit XML."""
        out = {}
        for case in ET.parse(self.path / "junit.xml").iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")),
                        "passed")
            out[case.get("name")] = {"failure": "failed"}.get(kind, kind)
        return out

    def properties(self, name: str) -> dict[str, str]:
        """The junit properties of test `name`."""
        for case in ET.parse(self.path / "junit.xml").iter("testcase"):
            if case.get("name") == name:
                return {q.get("name"): q.get("value") for q in case.iter("property")}
        raise AssertionError(f"no test {name} in junit.xml")

    def message(self, name: str) -> str:
        for case in ET.parse(self.path / "junit.xml").iter("testcase"):
            if case.get("name") == name:
                return "\n".join((c.get("message") or "") + "\n" + (c.text or "")
                                 for c in case if c.tag in ("failure", "error"))
        raise AssertionError(f"no test {name} in junit.xml")

    def report(self, nodeid: str, stem: str) -> Snapshot:
        path = self.path / "reports" / sanitise(nodeid) / f"{stem}.json"
        assert path.is_file(), f"no {path}; have {sorted(path.parent.glob('*'))}"
        return Snapshot.load(path)

    def leftovers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label={RUN_LABEL}={self.run_id}"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()

    def remove_leftovers(self) -> None:
        ids = self.leftovers()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        subprocess.run(["docker", "network", "prune", "-f", "--filter",
                        f"label={RUN_LABEL}={self.run_id}"], capture_output=True)


def by_service(snap: Snapshot) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in snap.processes:
        out.setdefault(p.service, []).append(p)
    return out
