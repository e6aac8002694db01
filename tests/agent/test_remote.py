"""The remote agent: `sideeye agent --listen tcp://ADDR:PORT` with TLS and a token, tested
with the agent inside a network namespace of its own joined to this one by a veth pair
(the "other machine"; it shares the host's processes and Docker, as a node's agent
would). The CLI here reaches it with SIDEEYE_AGENT_URL; a wrong token, and a process
outside any container, are refused in one line (rule 4)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest
from support import GOAPPS, ROOT, missing

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]

PORT = 7443


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def other_machine(shared_dir):
    """(namespace name, its address): a network namespace linked by a veth pair."""
    tag = secrets.token_hex(3)
    ns, here, there = f"sideeye-{tag}", f"se{tag}a", f"se{tag}b"
    net = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    try:
        run("ip", "netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        missing(f"cannot make a network namespace: {e}")
    try:
        run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        run("ip", "link", "set", there, "netns", ns)
        run("ip", "addr", "add", f"{net}.1/24", "dev", here)
        run("ip", "link", "set", here, "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", there)
        run("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def remote_agent(other_machine, shared_dir):
    ns, address = other_machine
    folder = shared_dir / f"remote-{ns}"
    folder.mkdir()
    cert, key, token = folder / "agent.crt", folder / "agent.key", folder / "token"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
        "-out", str(cert), "-days", "1", "-subj", f"/CN={address}",
        "-addext", f"subjectAltName=IP:{address}")
    token.write_text(secrets.token_hex(24) + "\n")
    token.chmod(0o600)
    # A CA of client certificates: a caller with one it signed needs no token.
    ca, ca_key = folder / "clients-ca.crt", folder / "clients-ca.key"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "1", "-subj", "/CN=sideeye test clients")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "pytest_sideeye.cli.main", "agent",
         "--socket", str(folder / "agent.sock"), "--log", str(folder / "agent.log"),
         "--listen", f"tcp://{address}:{PORT}", "--tls-cert", str(cert), "--tls-key", str(key),
         "--token-file", str(token), "--tls-client-ca", str(ca)], cwd=ROOT,
        stderr=subprocess.PIPE, text=True)
    env = {**os.environ, "SIDEEYE_AGENT": "1", "SIDEEYE_AGENT_URL": f"https://{address}:{PORT}",
           "SIDEEYE_AGENT_TOKEN_FILE": str(token), "SIDEEYE_AGENT_CA": str(cert)}
    deadline = time.monotonic() + 30
    ask = [sys.executable, "-c", "from pytest_sideeye.agent import health; health()"]
    while subprocess.run(ask, env=env, capture_output=True, cwd="/").returncode != 0:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the remote agent did not answer"
        time.sleep(0.1)
    yield env, folder
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def hello_container():
    from pytest_sideeye.services import connect_docker
    from pytest_sideeye.services.images import go_image  # the image go_service would run
    tag = go_image("hello", GOAPPS / "hello")
    client = connect_docker()
    container = client.containers.run(tag, detach=True, auto_remove=False,
                                      labels={"sideeye-agent-test": "remote"})
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in container.logs():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        container.reload()
        yield container, container.attrs["State"]["Pid"]
    finally:
        container.remove(force=True)
        client.close()


def snapshot(env: dict, pid: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_sideeye.cli.main", "snapshot",
                           "--pid", str(pid), "--json", "/dev/stdout"], env=env, cwd="/",
                          capture_output=True, text=True, timeout=120)


def test_the_cli_snapshots_a_container_through_the_remote_agent(remote_agent, hello_container,
                                                                 start_target):
    env, folder = remote_agent
    _container, pid = hello_container
    r = snapshot(env, pid)
    assert r.returncode == 0, r.stderr
    proc, = json.loads(r.stdout)["processes"]
    assert proc["error"] is None
    assert any(f["function"] == "main.main" for g in proc["goroutines"] for f in g["frames"])
    log = (folder / "agent.log").read_text()
    assert "listening on tcp://" in log and "snapshot for uid -1" not in log
    assert "snapshot for remote " in log
    # Rule 4: with the token, only processes in Docker containers.
    outside = start_target()
    r = snapshot(env, outside.pid)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "sideeye: sideeye agent: refused by rule 4 (remote callers, over TLS with the agent's "
        f"token: processes in Docker containers): pid {outside.pid} is not in a Docker "
        "container")


def test_a_wrong_token_is_refused(remote_agent, hello_container, shared_dir):
    env, _folder = remote_agent
    _container, pid = hello_container
    wrong = shared_dir / "wrong-token"
    wrong.write_text(secrets.token_hex(24))
    r = snapshot({**env, "SIDEEYE_AGENT_TOKEN_FILE": str(wrong)}, pid)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "sideeye: sideeye agent: refused by rule 4 (remote callers, over TLS with the agent's "
        "token: processes in Docker containers): wrong or missing token")
    # Without the agent's CA, TLS itself fails: the one line says so.
    r = snapshot({**env, "SIDEEYE_AGENT_CA": ""}, pid)
    assert r.returncode == 2 and "TLS with the sideeye agent at https://" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_docker_host_alone_finds_the_remote_agent(remote_agent, hello_container):
    """A test runner whose DOCKER_HOST names the other machine asks that machine's agent
    without SIDEEYE_AGENT_URL (https://DOCKER_HOST's host:SIDEEYE_AGENT_PORT)."""
    env, folder = remote_agent
    _container, pid = hello_container
    address = env["SIDEEYE_AGENT_URL"].split("//")[1].rsplit(":", 1)[0]
    derived = {k: v for k, v in env.items() if k != "SIDEEYE_AGENT_URL"}
    derived.update(DOCKER_HOST=f"tcp://{address}:2376", SIDEEYE_AGENT_PORT=str(PORT))
    before = (folder / "agent.log").read_text().count("snapshot for remote ")
    r = snapshot(derived, pid)
    assert r.returncode == 0, r.stderr
    proc, = json.loads(r.stdout)["processes"]
    assert proc["error"] is None and proc["goroutines"]
    assert (folder / "agent.log").read_text().count("snapshot for remote ") == before + 1


def client_cert(folder, name: str, signed_by_ca: bool = True) -> tuple[str, str]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    if signed_by_ca:
        csr = folder / f"{name}.csr"
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
            str(csr), "-subj", f"/CN={name}")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(folder / "clients-ca.crt"),
            "-CAkey", str(folder / "clients-ca.key"), "-CAcreateserial", "-out", str(crt),
            "-days", "1")
    else:
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-days", "1", "-subj", f"/CN={name}")
    return str(crt), str(key)


def test_a_client_certificate_stands_in_for_the_token(remote_agent, hello_container):
    """--tls-client-ca: a certificate the CA signed is let in without the token (rule 4
    still holds); a self-signed one fails the handshake, in one line."""
    env, folder = remote_agent
    _container, pid = hello_container
    no_token = {k: v for k, v in env.items() if k != "SIDEEYE_AGENT_TOKEN_FILE"}
    crt, key = client_cert(folder, "ci-runner")
    r = snapshot({**no_token, "SIDEEYE_AGENT_CERT": crt, "SIDEEYE_AGENT_KEY": key}, pid)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["processes"][0]["goroutines"]
    assert "(CN=ci-runner)" in (folder / "agent.log").read_text()
    # Neither token nor certificate: refused by the rule.
    r = snapshot(no_token, pid)
    assert r.returncode == 2 and "wrong or missing token" in r.stderr
    # A certificate the CA did not sign: TLS itself fails.
    crt, key = client_cert(folder, "intruder", signed_by_ca=False)
    r = snapshot({**no_token, "SIDEEYE_AGENT_CERT": crt, "SIDEEYE_AGENT_KEY": key}, pid)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    # The agent's alert names the reason; when its close overtakes the alert, the client
    # still says TLS failed and asks about the certificate.
    assert "TLS with the sideeye agent at https://" in r.stderr
    assert "UNKNOWN_CA" in r.stderr or "this client's certificate" in r.stderr
