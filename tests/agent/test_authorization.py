"""Who may ask the agent for what, with real users the tests create: a member of the
docker and sideeye groups gets full snapshots of their own processes and of Docker
containers (through the CLI and the plugin, without root); each rule refuses what it must,
in one line naming the rule; every snapshot and refusal is a line of the agent's log."""
from __future__ import annotations

import json
import textwrap

import pytest
from agent_support import User, sideeye
from support import GOAPPS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root")]


RULE_2 = ("rule 2 (members of group sideeye: processes in Docker containers and their own "
          "uid's processes)")


def _parked(snap: dict) -> int:
    return sum(1 for g in snap["processes"][0]["goroutines"]
               if any(f["function"] == "main.parkedLeaf" for f in g["frames"]))


def test_member_snapshots_own_process_through_the_cli(agent, users, start_target, shared_dir):
    member = users["member"]
    target = start_target(user=member)
    out = member.home / "own.json"
    r = sideeye("snapshot", "--pid", str(target.pid), "--json", str(out),
                env=agent.client_env(member), user=member)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    snap = json.loads(out.read_text())
    proc = snap["processes"][0]
    assert proc["error"] is None and proc["pause_ns"] > 0
    # The whole process, as the program itself sees it: every parked goroutine.
    assert _parked(snap) == 1000 == target.dump().count("main.parkedLeaf(")
    assert any(f"snapshot for uid {member.uid} " in line and f"{target.pid} goroutines="
               in line for line in agent.log_lines()), agent.log_lines()


def test_rule_2_refuses_a_member_another_users_process(agent, users, start_target):
    member = users["member"]
    root_target = start_target()   # runs as root, outside any container
    r = sideeye("snapshot", "--pid", str(root_target.pid), "--json", str(member.home / "no.json"),
                env=agent.client_env(member), user=member)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "sideeye: sideeye agent: refused by rule 2 "
        "(members of group sideeye: processes in Docker containers and their own uid's "
        f"processes): pid {root_target.pid} runs as uid 0, not {member.uid}, and is not in a "
        "Docker container"], r.stderr
    assert root_target.state() not in "Tt"
    assert any("refused uid" in line and "rule 2" in line for line in agent.log_lines())


def uids_of(pid: int) -> list[int]:
    """Real, effective and saved uid, from /proc (the test's own reading)."""
    with open(f"/proc/{pid}/status") as f:
        return [int(x) for x in next(ln for ln in f if ln.startswith("Uid:")).split()[1:4]]


class EffectiveRoot(User):
    """The member as real uid, root as effective and saved uid (setreuid sets the saved
    uid to the new effective one): a process with mixed uids, as a set-uid program."""

    def prefix(self) -> list[str]:
        return ["setpriv", f"--ruid={self.uid}", "--euid=0", "--"]


def test_rule_2_refuses_a_process_whose_uids_are_not_all_the_members(agent, users, start_target):
    """Real uid the member's is not enough: effective and saved uid count too (as for
    ptrace), or a member could pause a set-uid program running as root."""
    member = users["member"]
    target = start_target(n=10, user=EffectiveRoot(member.name, member.uid, member.gid,
                                                    member.home))
    assert uids_of(target.pid) == [member.uid, 0, 0]
    r = sideeye("snapshot", "--pid", str(target.pid), "--json", str(member.home / "no.json"),
                env=agent.client_env(member), user=member)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"sideeye: sideeye agent: refused by {RULE_2}: pid {target.pid} runs as uid "
        f"{member.uid}/0/0, not {member.uid}, and is not in a Docker container"], r.stderr
    assert not (member.home / "no.json").exists()


def test_one_refused_target_refuses_the_whole_request(agent, users, start_target):
    """Every pid is checked before anything is paused: the member's own process, asked
    together with another user's, is not snapshotted either."""
    member = users["member"]
    own, other = start_target(n=10, user=member), start_target(n=10)
    mine = f"snapshot for uid {member.uid} "
    before = sum(mine in line for line in agent.log_lines())
    out = member.home / "both.json"
    r = sideeye("snapshot", "--pid", str(own.pid), "--pid", str(other.pid), "--json", str(out),
                env=agent.client_env(member), user=member)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"sideeye: sideeye agent: refused by {RULE_2}: pid {other.pid} runs as uid 0, not "
        f"{member.uid}, and is not in a Docker container"], r.stderr
    assert not out.exists()
    assert sum(mine in line for line in agent.log_lines()) == before, agent.log_lines()
    assert own.state() not in "Tt" and other.state() not in "Tt"


def test_rule_3_refuses_everyone_else(agent, users, start_target):
    """The socket's mode keeps outsiders out; if it did not (a chmod by mistake), the agent
    still refuses them by its own rule."""
    outsider = users["outsider"]
    target = start_target(user=outsider)   # even their own process
    r = sideeye("snapshot", "--pid", str(target.pid), env=agent.client_env(outsider),
                user=outsider)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert "does not let this user in" in r.stderr, r.stderr
    agent.socket.chmod(0o666)
    try:
        r = sideeye("snapshot", "--pid", str(target.pid), env=agent.client_env(outsider),
                    user=outsider)
    finally:
        agent.socket.chmod(0o660)
    assert r.returncode == 2
    line, = r.stderr.splitlines()
    assert line.startswith("sideeye: sideeye agent: refused by rule 3 (everyone else is "
                           f"refused): uid {outsider.uid} (pid "), line
    assert line.endswith("is neither root nor a member of group sideeye")
    assert target.state() not in "Tt"


def test_rule_1_root_may_snapshot_any_process(agent, users, start_target):
    member_target = start_target(user=users["member"])
    root_target = start_target()
    r = sideeye("snapshot", "--pid", str(member_target.pid), "--pid", str(root_target.pid),
                "--json", "/dev/stdout", env=agent.client_env())
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert [p["error"] for p in snap["processes"]] == [None, None]
    assert any(line.split("Z ", 1)[1].startswith("sideeye-agent: snapshot for uid 0 ")
               for line in agent.log_lines())


INNER_CONFTEST = """
from pytest_sideeye import go_service

hello = go_service("hello", source={source!r}, ready_log="ready")
"""

INNER_TEST = """
import json, os, subprocess, sys


def test_snapshots_without_root(hello, sideeye_snapshot):
    assert os.geteuid() != 0
    snap = sideeye_snapshot()
    proc, = snap.processes
    assert proc.error is None, proc.error
    assert proc.container is not None and proc.goroutines
    assert any(f.function == "main.main" for g in proc.goroutines for f in g.frames)
    # The CLI too, naming the container.
    r = subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", "snapshot",
                        "--container", hello.container.id, "--json", "cli.json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.load(open("cli.json"))
    assert doc["processes"][0]["error"] is None
    assert doc["processes"][0]["goroutines"]
"""


def test_member_runs_pytest_without_sudo_and_gets_full_snapshots(agent, users, needs_docker):
    """The plugin as an ordinary user: go_service builds and starts the container (docker
    group), sideeye_snapshot goes through the agent (sideeye group, rule 2: a container)."""
    member = users["member"]
    project = member.home / "project"
    project.mkdir(exist_ok=True)
    (project / "conftest.py").write_text(textwrap.dedent(
        INNER_CONFTEST.format(source=str(GOAPPS / "hello"))))
    (project / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    (project / "pytest.ini").write_text("[pytest]\n")
    import os
    import subprocess
    import sys
    for path in [project, *project.iterdir()]:
        os.chown(path, member.uid, member.gid)
    r = subprocess.run([*member.prefix(), sys.executable, "-m", "pytest", "-p",
                        "no:cacheprovider", "-p", "no:hypothesispytest", "-q",
                        "--sideeye-dir=reports", "--sideeye-on-failure",
                        "-W", "ignore::DeprecationWarning"],
                       cwd=project, env=agent.client_env(member), capture_output=True,
                       text=True, timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    assert (project / "reports").is_dir()
    assert sum(f"snapshot for uid {member.uid} " in line for line in agent.log_lines()) >= 2
    # With snapshots on failure, the plugin had the agent load the service's programs
    # as soon as the service was up.
    assert any(f"warmed for uid {member.uid} " in line for line in agent.log_lines())
