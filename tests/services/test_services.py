"""go_service against the real Docker daemon: build, readiness, failures, networks between
services, host PIDs, cleanup on every path and the sweep of a killed run's leftovers.

The ledger image is built once (cached by content); readiness timeouts are kept short."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # only this module needs it; the root conftest is not mine

from support import GOAPPS

from pytest_sideeye import install, settings
from pytest_sideeye.errors import DockerUnavailable, SideeyeError
from pytest_sideeye.services import containers, fixture, images
from pytest_sideeye.services.containers import (
    L_BOOT,
    L_PID,
    L_PID_START,
    L_PIDNS,
    L_SERVICE,
    L_SESSION,
    L_TEST,
    LABEL,
    services_for,
)
from pytest_sideeye.services.fixture import go_service

LEDGER_SRC = "../../fixtures/goapps/ledger"  # relative to this file, as in a conftest

ledger = go_service("ledger", source=LEDGER_SRC, ports=[8080], ready_http=(8080, "/healthz"),
                    ready_timeout=20)
replica = go_service("replica", source=LEDGER_SRC, ports=[8080],
                     ready_http=(8080, "/healthz"), ready_timeout=20,
                     env={"LEDGER_PRIMARY": "http://ledger:8080"})
# -listen-delay opens the port late: docker-proxy accepts on the host port at once, so
# only a check against the container itself can tell.
late_tcp = go_service("late_tcp", source=LEDGER_SRC, ports=[8080], ready_tcp=8080,
                      args=["-listen-delay", "1s"], ready_timeout=20)
late_log = go_service("late_log", source=LEDGER_SRC, ports=[8080],
                      ready_log=r"ledger listening on \S+:8080", go_version="1.21.13",
                      args=["-listen-delay", "1s"], ready_timeout=20)
shared_ledger = go_service("shared_ledger", source=LEDGER_SRC, ports=[8080], scope="module",
                           ready_http=(8080, "/healthz"), ready_timeout=20)
mirror = go_service("mirror", source=LEDGER_SRC, ports=[8080], ready_http=(8080, "/healthz"),
                    env={"LEDGER_PRIMARY": "http://shared_ledger:8080"}, ready_timeout=20)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def post_json(url: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def labelled(**labels: str) -> tuple[list, list]:
    """Containers and networks carrying all these labels."""
    client = images.docker_client()
    selector = {"label": [f"{k}={v}" for k, v in labels.items()]}
    # sparse: the SDK would inspect each listed container, racing a removal (a 404)
    return (client.containers.list(all=True, filters=selector, sparse=True),
            client.networks.list(filters=selector))


def ledger_spec(name: str, base: Path | None = None, **kw) -> containers.ServiceSpec:
    """A spec as go_service would make it; the ledger sources unless told otherwise."""
    given = dict(source=None, image=None, dockerfile=None, ports=[8080], args=(), env=None,
                 scope="function", ready_http=None, ready_tcp=None, ready_log=None,
                 ready_timeout=5, go_version=None, networks=(), aliases=(), labels=None)
    if not {"source", "image", "dockerfile"} & set(kw):
        given["source"] = LEDGER_SRC
    given.update(kw)
    return fixture._make_spec(name, base or Path(__file__).parent, **given)


def start_direct(spec: containers.ServiceSpec, nodeid: str) -> containers.Service:
    return containers.start(spec, spec.image_tag(), nodeid, [nodeid])


# --------------------------------------------------------------------------- ready services

def test_http_ready_service_answers(needs_docker, ledger, request):
    body = get_json(ledger.url(8080, "/accounts"))
    assert body["balances"] == {"alice": 100, "bob": 50}
    assert ledger.url(8080, "healthz") == f"http://127.0.0.1:{ledger.host_port(8080)}/healthz"
    assert "ledger listening on [::]:8080" in ledger.logs()
    info = ledger.container_info()
    assert (info.id, info.name) == (ledger.container.id, ledger.container.name)
    assert info.image.startswith("sideeye/ledger:")
    labels = ledger.container.labels
    assert labels[LABEL] == "1" and labels[L_SESSION] == containers.SESSION_ID
    assert labels[L_TEST] == request.node.nodeid and labels[L_PID] == str(os.getpid())
    assert ledger.container.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] \
        == "127.0.0.1"


def test_pids_are_host_go_processes(needs_docker, ledger, go_build):
    ledger.container.reload()
    init_pid = ledger.container.attrs["State"]["Pid"]
    assert ledger.pids == [init_pid]
    exe = Path(f"/proc/{init_pid}/exe").read_bytes()
    binary = go_build("ledger").read_bytes()
    assert hashlib.sha256(exe).digest() == hashlib.sha256(binary).digest()
    # The host PID is PID 1 inside the container's namespace.
    nspid = next(l for l in Path(f"/proc/{init_pid}/status").read_text().splitlines()
                 if l.startswith("NSpid:"))
    assert nspid.split()[1:] == [str(init_pid), "1"]


def test_pids_include_every_go_process_of_the_container(needs_docker, ledger):
    # A second Go process exec'd into the container: in its PID namespace, not a child.
    ledger.container.exec_run(["/ledger", "-addr", ":9091"], detach=True)
    # Until the exec is done: `docker exec` first runs `runc init` (Go too) in the
    # container, whose cmdline reads empty while it becomes /ledger.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = ledger.pids
        if len(pids) == 2 and _cmdline(pids[1])[:1] == [b"/ledger"]:
            break
        time.sleep(0.05)
    init_pid, second = ledger.pids
    assert init_pid == ledger.container.attrs["State"]["Pid"]
    assert _cmdline(second)[:3] == [b"/ledger", b"-addr", b":9091"]
    # Only Go executables count: this Python process is not one.
    assert containers._is_go_executable(second)
    assert not containers._is_go_executable(os.getpid())


def test_tcp_readiness_waits_for_the_listener(needs_docker, late_tcp):
    assert get_json(late_tcp.url(8080, "/accounts/alice")) == {"id": "alice", "balance": 100}


def test_log_readiness_waits_for_the_line(needs_docker, late_log):
    assert "ledger listening on" in late_log.logs()
    assert get_json(late_log.url(8080, "/accounts/bob"))["balance"] == 50
    # Built with the pinned toolchain asked for, not the default one.
    assert b"go1.21.13" in Path(f"/proc/{late_log.pids[0]}/exe").read_bytes()


def test_two_services_reach_each_other_by_name(needs_docker, ledger, replica):
    status, headers, body = post_json(replica.url(8080, "/transfer"),
                                      {"from": "alice", "to": "bob", "amount": 7})
    assert (status, body, headers["X-Ledger-Via"]) == (200, {"ok": True}, "replica")
    assert get_json(ledger.url(8080, "/accounts"))["balances"] == {"alice": 93, "bob": 57}
    assert "transfer 7 from alice to bob" in ledger.logs()


def test_services_for_lists_the_tests_services(needs_docker, ledger, replica, request):
    assert services_for(request.node.nodeid) == [ledger, replica]
    assert services_for("tests/test_services.py::some_other_test") == []


def test_function_service_reaches_module_service(needs_docker, shared_ledger, mirror,
                                                 request):
    status, _, _ = post_json(mirror.url(8080, "/transfer"),
                             {"from": "bob", "to": "alice", "amount": 1})
    assert status == 200
    assert get_json(shared_ledger.url(8080, "/accounts/alice"))["balance"] == 101
    assert services_for(request.node.nodeid) == [shared_ledger, mirror]


def test_module_service_listed_only_for_tests_using_it(needs_docker, shared_ledger, request):
    assert services_for(request.node.nodeid) == [shared_ledger]
    # A test of this module that does not request it (found among the session's items).
    sibling = request.node.nodeid.split("::")[0] + "::test_http_ready_service_answers"
    assert services_for(sibling) == []


# --------------------------------------------------------------------------- failures

def test_exit_before_ready_reports_code_and_logs(needs_docker, request):
    spec = ledger_spec("badconfig", args=["-accounts", "alice=lots"],
                       ready_http=(8080, "/healthz"))
    svc = start_direct(spec, request.node.nodeid)
    try:
        problem = containers.wait_ready(svc)
    finally:
        svc.stop()
    assert problem is not None
    assert "service 'badconfig' exited with code 3 before it was ready" in problem
    assert 'bad -accounts entry "alice=lots"' in problem
    assert labelled(**{L_SERVICE: "badconfig", L_SESSION: containers.SESSION_ID})[0] == []


def test_never_ready_times_out_with_logs(needs_docker, request):
    spec = ledger_spec("warming", args=["-warmup", "1h"], ready_http=(8080, "/healthz"),
                       ready_timeout=1.5)
    svc = start_direct(spec, request.node.nodeid)
    started = time.monotonic()
    try:
        problem = containers.wait_ready(svc)
        waited = time.monotonic() - started
        logs = svc.logs()
    finally:
        svc.stop()
    assert problem is not None and waited >= 1.5
    assert "service 'warming' not ready after 1.5s" in problem
    assert "HTTP /healthz on port 8080 to answer < 500 (last answer 503)" in problem
    assert "ledger listening on" in problem and "ledger listening on" in logs
    assert svc.logs() == logs  # kept after removal, for the report


def test_stop_removes_container_and_network(needs_docker, request):
    svc = start_direct(ledger_spec("shortlived", ready_tcp=8080), request.node.nodeid)
    assert containers.wait_ready(svc) is None
    net_name = containers._networks.name_for(request.node.nodeid)
    assert net_name and svc in services_for(request.node.nodeid)
    svc.stop()
    svc.stop()
    client = images.docker_client()
    assert not client.containers.list(all=True, filters={"id": svc.container.id})
    assert not client.networks.list(names=[net_name])
    assert svc not in services_for(request.node.nodeid) and svc.pids == []


def test_sweep_removes_containers_of_dead_owners(needs_docker):
    client = images.docker_client()
    tag = images.go_image("ledger", GOAPPS / "ledger")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale_labels = {LABEL: "1", L_SESSION: "deadbeef0000", L_PID: str(dead.pid),
                    L_PID_START: "1", L_BOOT: containers._boot_id(), L_TEST: "t"}
    marker = uuid.uuid4().hex[:8]
    stale = client.containers.create(tag, name=f"sideeye-stale-{marker}",
                                     labels=stale_labels)
    stale_net = client.networks.create(f"sideeye-stale-{marker}", labels=stale_labels)
    ours = client.containers.create(tag, name=f"sideeye-ours-{marker}",
                                    labels={**containers.owner_labels(), L_TEST: "t"})
    # A user's container of the same image (compose, testcontainers...): it inherits the
    # image's label pytest-sideeye=1 but is not the plugin's to remove.
    users = client.containers.create(tag, name=f"sideeye-users-{marker}")
    assert users.labels.get(LABEL) == "1"
    try:
        removed = containers.sweep_stale()
        assert f"sideeye-stale-{marker}" in removed
        assert not client.containers.list(all=True, filters={"id": stale.id})
        assert not client.networks.list(names=[stale_net.name])
        assert client.containers.list(all=True, filters={"id": ours.id})
        assert client.containers.list(all=True, filters={"id": users.id})
    finally:
        for c in (stale, ours, users):
            containers._remove_container(c)
        containers._remove_network(stale_net)


def test_owner_alive_tells_pid_reuse_apart():
    mine = containers.owner_labels()
    assert containers.owner_alive(mine)
    assert not containers.owner_alive({**mine, L_PID_START: "1"})  # same PID, other process
    assert not containers.owner_alive({**mine, L_BOOT: "another-boot"})
    assert not containers.owner_alive({LABEL: "1"})
    # Another PID namespace's PIDs cannot be checked from here: never swept.
    assert containers.owner_alive({**mine, L_PID_START: "1", L_PIDNS: "pid:[1]"})


# --------------------------------------------------------------------------- declarations

@pytest.mark.parametrize("kw, message", [
    (dict(), "needs exactly one of source=, image= or dockerfile="),
    (dict(source=LEDGER_SRC, image="x"), "needs exactly one of"),
    (dict(source="no/such/dir"), "does not exist"),
    (dict(source=LEDGER_SRC, ports=[8080], ready_tcp=9090), "readiness port 9090 is not in"),
    (dict(source=LEDGER_SRC, scope="forever"), "scope must be one of"),
])
def test_bad_declarations_are_one_line_errors(kw, message):
    with pytest.raises(SideeyeError, match=message):
        go_service("svc", **kw)


def test_name_must_be_an_identifier():
    with pytest.raises(SideeyeError, match="must be a Python identifier"):
        go_service("my-service", source=LEDGER_SRC)


def test_dead_docker_socket_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(DockerUnavailable) as e:
        images.connect(timeout=5)
    assert str(e.value) == (f"Docker is not answering at unix://{tmp_path}/docker.sock: "
                            f"{install.start_docker()}")


# --------------------------------------------------------------------------- as a user writes it

QUICKSTART = '''
from pytest_sideeye import go_service
ledger = go_service("ledger", source="ledger", ports=[8080], ready_http=(8080, "/healthz"))
'''

EXTRA_FIXTURES = '''
from pytest_sideeye.services import containers
# Collected under its name, whatever the variable is called.
not_the_name = go_service("broken", source="ledger", ports=[8080], args=["-accounts", "x"],
                          ready_http=(8080, "/healthz"))
with open("session.txt", "w") as f:
    f.write(containers.SESSION_ID)
'''

USER_TESTS = '''
import json, time, urllib.request

def record(svc):
    with open("containers.txt", "a") as f:
        f.write(svc.container.id + "\\n")

def test_quickstart(ledger):
    record(ledger)
    with urllib.request.urlopen(ledger.url(8080, "/accounts/alice")) as r:
        assert json.loads(r.read())["balance"] == 100

def test_fails_after_start(ledger):
    record(ledger)
    assert False, "the test's own failure"

def test_broken_service(broken):
    pass

def test_waits(ledger):
    record(ledger)
    open("ready.txt", "w").close()
    time.sleep(60)

def test_exits_hard(ledger):
    import os
    record(ledger)
    open("ready.txt", "w").close()
    os._exit(3)  # what pytest-timeout's thread method does: no finalizer, no atexit
'''


@pytest.fixture
def user_project(pytester, monkeypatch):
    """A project laid out like the README's quick-start, with the ledger sources."""
    import shutil
    # pytester moves HOME: keep the real build cache, or every run rebuilds Go's std lib.
    monkeypatch.setenv("SIDEEYE_BUILD_CACHE", str(settings.build_cache()))
    shutil.copytree(GOAPPS / "ledger", pytester.path / "ledger")
    pytester.makeconftest(QUICKSTART + EXTRA_FIXTURES)
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester


def assert_nothing_left(project: Path) -> None:
    session = (project / "session.txt").read_text()
    containers, networks = labelled(**{L_SESSION: session})
    assert containers == [] and networks == []
    client = images.docker_client()
    for cid in (project / "containers.txt").read_text().split():
        # sparse: no inspect per container, which races a removal in progress (404)
        assert not client.containers.list(all=True, filters={"id": cid}, sparse=True)


def test_fixture_as_written_in_a_conftest(needs_docker, user_project):
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not waits and not exits_hard")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*service 'broken' exited with code 3 before it was ready; its logs:",
        '*ledger: bad -accounts entry "x" (want name=amount)',
    ])
    result.stdout.fnmatch_lines(["E * the test's own failure"])
    assert len((user_project.path / "containers.txt").read_text().split()) == 2
    assert_nothing_left(user_project.path)


def wait_nothing_left(project: Path, seconds: float) -> None:
    """The reaper works after its owner is gone: give it a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return assert_nothing_left(project)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill", "os-exit"])
def test_interrupted_run_cleans_up(needs_docker, user_project, how):
    signals = {"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
    test = "exits_hard" if how == "os-exit" else "waits"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "-k", test], cwd=user_project.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (user_project.path / "ready.txt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "never got ready"
            time.sleep(0.1)
        if how in signals:
            proc.send_signal(signals[how])
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len((user_project.path / "containers.txt").read_text().split()) == 1
    wait_nothing_left(user_project.path, 25)


# --------------------------------------------------------------------------- other image sources

def test_prebuilt_image_and_missing_image(needs_docker, request):
    tag = images.go_image("ledger", GOAPPS / "ledger")
    spec = ledger_spec("prebuilt", image=tag, ready_http=8080, ready_timeout=10)
    svc = start_direct(spec, request.node.nodeid)
    try:
        assert containers.wait_ready(svc) is None
        assert get_json(svc.url(8080, "/accounts/bob"))["balance"] == 50
    finally:
        svc.stop()
    with pytest.raises(SideeyeError, match=r"^go_service 'gone': image 'sideeye/no-such:x' is "
                                           r"not present locally and could not be pulled"):
        images.prebuilt_image("gone", "sideeye/no-such:x")


def test_dockerfile_relative_to_the_caller(needs_docker, go_build, tmp_path, request):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "ledgerd").write_bytes(go_build("ledger").read_bytes())
    (tmp_path / "svc" / "ledgerd").chmod(0o755)
    (tmp_path / "svc" / "Dockerfile").write_text(
        'FROM scratch\nCOPY ledgerd /ledgerd\nENTRYPOINT ["/ledgerd", "-accounts", "carol=9"]\n')
    spec = ledger_spec("custom", tmp_path, dockerfile="svc/Dockerfile",
                       ready_http=(8080, "healthz"), ready_timeout=10)
    assert spec.dockerfile == tmp_path / "svc" / "Dockerfile"
    svc = start_direct(spec, request.node.nodeid)
    try:
        assert containers.wait_ready(svc) is None
        assert svc.image.startswith("sideeye/custom:")
        assert get_json(svc.url(8080, "/accounts"))["balances"] == {"carol": 9}
        assert len(svc.pids) == 1
    finally:
        svc.stop()
        images.docker_client().images.remove(svc.image, force=True)


def test_no_docker_is_one_line_in_the_test(user_project, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/sideeye-no-such-docker.sock")
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "quickstart")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "Docker is not answering at unix:///tmp/sideeye-no-such-docker.sock: "
        f"{install.start_docker()}"])
    assert "Traceback" not in result.stdout.str()


def test_image_removed_mid_run_is_rebuilt(needs_docker, request):
    name = f"reborn_{uuid.uuid4().hex[:6]}"  # an image no other test shares
    spec = ledger_spec(name, ready_tcp=8080)
    first = spec.image_tag()
    images.docker_client().images.remove(first, force=True)
    svc = fixture._start_for_request(spec, request)  # the path a fixture takes
    try:
        assert svc.image == first and images.image_exists(first)
        assert get_json(svc.url(8080, "/accounts/alice"))["balance"] == 100
    finally:
        svc.stop()
        images.docker_client().images.remove(first, force=True)


def test_source_without_go_mod(needs_docker, tmp_path, request):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "main.go").write_bytes((GOAPPS / "ledger" / "main.go").read_bytes())
    spec = ledger_spec("nomod", tmp_path, source="svc", args=["-accounts", "dan=3"],
                       ready_http=(8080, "/healthz"), ready_timeout=10)
    svc = fixture._start_for_request(spec, request)
    try:
        assert get_json(svc.url(8080, "/accounts/dan")) == {"id": "dan", "balance": 3}
    finally:
        svc.stop()
        images.docker_client().images.remove(svc.image, force=True)


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
