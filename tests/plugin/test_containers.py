"""Containers users start themselves (testcontainers, the Docker SDK, compose, pytest-docker)
are snapshotted like go_service ones: found behind fixture values (`auto`) or by selectors,
every Go process, a container without Go named with its logs, never stopped by the plugin.

The shop of examples/services runs in them: gateway -> orders -> ledger. Cancelling an
order while another is placed deadlocks orders, so the gateway's call to orders hangs:
the timeout report must link the gateway's waiting goroutine to the orders handler.
Inner pytest runs in subprocesses; images are built once per session.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from containers_support import RUN_LABEL, Project, by_service, sleeper_image
from support import ROOT

from pytest_sideeye.plugin.attach import sanitise
from pytest_sideeye.snapshot import Snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_root", "needs_docker")]

SHOP = ROOT / "examples" / "services"

# The inner suites' shared part: images from the environment, the shop's calls.
SHOP_HELPERS = """
import json, os, threading, time, urllib.request

RUN = os.environ["SIDEEYE_TEST_RUN"]
LABELS = {os.environ["SIDEEYE_TEST_RUN_LABEL"]: RUN}
IMAGES = {k[:-len("_IMAGE")].lower(): v for k, v in os.environ.items() if k.endswith("_IMAGE")}


def wait_http(url, seconds=30):
    end = time.monotonic() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read()
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def host_port(container, port=8080):
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])


def call(base, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def rush(base):
    \"\"\"Cancel an order while another is placed: orders deadlocks, both calls hang.\"\"\"
    first = call(base, "/api/orders", {"customer": "ada", "item": "teapot", "qty": 1})
    for path, body in ((f"/api/orders/cancel/{first['id']}", {}),
                       ("/api/orders", {"customer": "grace", "item": "kettle", "qty": 1})):
        threading.Thread(target=call, args=(base, path, body), daemon=True).start()
    time.sleep(1.0)
    call(base, "/api/orders")   # queues behind the deadlock: hangs
"""

SDK_CONFTEST = """
import docker, pytest
from testcontainers.core.container import DockerContainer
from shop import IMAGES, LABELS, RUN, host_port, wait_http

client = docker.from_env(version="auto")


@pytest.fixture
def network():
    net = client.networks.create(f"shop-{RUN}", labels=LABELS)
    yield net
    net.remove()


@pytest.fixture
def backends(network):
    \"\"\"ledger as a plain SDK container, orders through testcontainers.\"\"\"
    ledger = client.containers.run(IMAGES["ledger"], name=f"ledger-{RUN}", detach=True,
                                   labels=LABELS, network=network.name)
    orders = (DockerContainer(IMAGES["orders"]).with_name(f"orders-{RUN}")
              .with_env("LEDGER_URL", f"http://ledger-{RUN}:8080")
              .with_kwargs(network=network.name, labels=LABELS))
    orders.start()
    yield {"ledger": ledger, "orders": orders}
    orders.stop()
    ledger.remove(force=True)


@pytest.fixture
def gateway(network, backends):
    c = client.containers.run(IMAGES["gateway"], detach=True, labels=LABELS,
                              network=network.name, ports={"8080/tcp": ("127.0.0.1", None)},
                              environment={"ORDERS_URL": f"http://orders-{RUN}:8080"})
    wait_http(f"http://127.0.0.1:{host_port(c)}/healthz")
    yield c
    c.remove(force=True)


@pytest.fixture
def sleeper():
    c = client.containers.run(IMAGES["sleeper"], detach=True, labels=LABELS)
    yield c
    c.remove(force=True)
"""

SDK_TESTS = """
import pytest
from shop import call, host_port, rush


def test_hang(gateway, backends, sleeper):
    rush(f"http://127.0.0.1:{host_port(gateway)}")


def test_fails(gateway, backends):
    order = call(f"http://127.0.0.1:{host_port(gateway)}", "/api/orders",
                 {"customer": "ada", "item": "teapot", "qty": 1})
    assert order["status"] == "shipped"


def test_fixture(gateway, backends, sleeper, sideeye_snapshot):
    snap = sideeye_snapshot()
    names = sorted(p.service for p in snap.processes)
    assert names == ["backends[ledger]", "backends[orders]", "gateway", "sleeper"], names
    snap = sideeye_snapshot(services=["gateway"])
    assert [p.service for p in snap.processes] == ["gateway"]


@pytest.mark.sideeye(containers=["none"])
def test_none(gateway):
    pytest.fail("no snapshot wanted")
"""


@pytest.fixture(scope="session")
def shop_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shop's services and the sleeper, built once (go_service's content-addressed
    images: a later run finds them by digest)."""
    from pytest_sideeye.services.images import go_image
    images = {name: go_image(name, SHOP / name) for name in ("ledger", "orders", "gateway")}
    images["sleeper"] = sleeper_image(tmp_path_factory.mktemp("sleeper"))
    return images


def shop_project(path: Path, images: dict[str, str]) -> Project:
    p = Project(path, {f"{k.upper()}_IMAGE": v for k, v in images.items()})
    p.write("shop.py", SHOP_HELPERS)
    return p


def assert_shop_hang_seen(snap, gateway: str, orders: str) -> None:
    """Every Go process there, the gateway's call linked to the orders handler."""
    procs = by_service(snap)
    for name in (gateway, orders):
        (proc,) = procs[name]
        assert proc.error is None and proc.goroutines, (name, proc.error)
    gw, od = procs[gateway][0].pid, procs[orders][0].pid
    linked = [ln for ln in snap.links if ln.kind == "http" and ln.client and ln.server
              and (ln.client.pid, ln.server.pid) == (gw, od)]
    assert linked, [ln.to_json() for ln in snap.links]
    stuck = list(snap.goroutines(wait_reason="sync.Mutex.Lock"))
    assert len(stuck) >= 2, [g.frames[:4] for g in snap.goroutines()]


def assert_no_go_named_with_logs(snap, name: str) -> None:
    (proc,) = by_service(snap)[name]
    assert proc.error is None and proc.goroutines == []
    assert "runs no Go program" in proc.notes
    assert "sleeper up, waiting" in proc.logs


def test_sdk_and_testcontainers_found_by_auto(tmp_path, shop_images):
    """A timeout, a failure, sideeye_snapshot() and `none`, with containers found behind
    fixture values: a dict of an SDK container and a testcontainers one, plain SDK ones."""
    p = shop_project(tmp_path, shop_images)
    p.write("conftest.py", SDK_CONFTEST)
    p.write("test_shop.py", SDK_TESTS)
    try:
        t0 = time.monotonic()
        p.run("-p", "no:timeout", "--sideeye-timeout=8", "--sideeye-on-timeout",
              "--sideeye-on-failure")
        print(f"inner run: {time.monotonic() - t0:.1f} s")
        assert p.outcomes() == {"test_hang": "failed", "test_fails": "failed",
                                "test_fixture": "passed", "test_none": "failed"}
        assert "Timeout (>8 s) — sideeye snapshot: reports/test_shop.py__test_hang/timeout.html" \
            in p.message("test_hang")
        hang = p.report("test_shop.py::test_hang", "timeout")
        assert sorted(by_service(hang)) == ["backends[ledger]", "backends[orders]",
                                            "gateway", "sleeper"]
        assert_shop_hang_seen(hang, "gateway", "backends[orders]")
        assert_no_go_named_with_logs(hang, "sleeper")
        # Every container found behind the fixtures was being prepared for a snapshot
        # before the body ran (the first test of their images; warming.py).
        assert set(p.properties("test_hang").get("sideeye.warmed", "").split(", ")) == {
            "backends[ledger]", "backends[orders]", "gateway"}
        gw = by_service(hang)["gateway"][0]
        assert "gateway listening" in gw.logs and gw.container.id
        failed = p.report("test_shop.py::test_fails", "call")
        assert {q.service for q in failed.processes} == {"backends[ledger]",
                                                         "backends[orders]", "gateway"}
        assert all(q.goroutines for q in failed.processes)
        assert not (p.path / "reports" / "test_shop.py__test_none").exists()
        # the users' fixtures removed their containers; the plugin removed none early
        assert p.leftovers() == []
    finally:
        p.remove_leftovers()


COMPOSE_FILE = """
version: "2.4"
services:
  ledger:
    image: ${LEDGER_IMAGE}
    labels: {RUN_LABEL_KEY: "${SIDEEYE_TEST_RUN}"}
  orders:
    image: ${ORDERS_IMAGE}
    environment: {LEDGER_URL: "http://ledger:8080"}
    labels: {RUN_LABEL_KEY: "${SIDEEYE_TEST_RUN}"}
  gateway:
    image: ${GATEWAY_IMAGE}
    environment: {ORDERS_URL: "http://orders:8080"}
    ports: ["127.0.0.1::8080"]
    labels: {RUN_LABEL_KEY: "${SIDEEYE_TEST_RUN}"}
  cache:
    image: ${SLEEPER_IMAGE}
    labels: {RUN_LABEL_KEY: "${SIDEEYE_TEST_RUN}"}
""".replace("RUN_LABEL_KEY", RUN_LABEL)

MORE_CONFTEST = """
import os, docker, pytest
from shop import IMAGES, LABELS, host_port, wait_http
from pytest_sideeye import sideeye_watch

client = docker.from_env(version="auto")


# pytest-docker, told to use compose v1 (Debian's docker-compose)
@pytest.fixture(scope="session")
def docker_compose_command():
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_setup():
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup():
    return ["down -t 1"]


@pytest.fixture(scope="session")
def docker_compose_file(pytestconfig):
    return os.path.join(str(pytestconfig.rootpath), "docker-compose.yml")


@pytest.fixture
def leaky():
    c = client.containers.run(IMAGES["leaky"], ["-addr", "0.0.0.0:8080"], detach=True,
                              labels=LABELS, ports={"8080/tcp": ("127.0.0.1", None)})
    wait_http(f"http://127.0.0.1:{host_port(c)}/healthz")
    yield c
    c.remove(force=True)


@pytest.fixture(scope="module")
def bank():
    \"\"\"Hands over only an id (a string): sideeye_watch names the container.\"\"\"
    c = client.containers.run(IMAGES["ledger"], detach=True, labels=LABELS)
    sideeye_watch(c.id, name="bank")
    yield c.id
    c.remove(force=True)
"""

MORE_TESTS = """
import os, urllib.request
import docker, pytest
from shop import IMAGES, LABELS, RUN, call

client = docker.from_env(version="auto")


@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.xdist_group(f"g{n}"))
                               for n in (0, 1)])
def test_docker_services(docker_services, n):
    url = f"http://127.0.0.1:{docker_services.port_for('gateway', 8080)}"
    docker_services.wait_until_responsive(lambda: _up(url), timeout=30, pause=0.2)
    order = call(url, "/api/orders", {"customer": "ada", "item": "teapot", "qty": 1})
    assert order["status"] == "shipped"


def _up(url):
    try:
        return urllib.request.urlopen(url + "/healthz", timeout=2).status == 200
    except Exception:
        return False


@pytest.mark.sideeye_leaks
def test_leak(leaky):
    port = leaky.ports["8080/tcp"][0]["HostPort"]
    urllib.request.urlopen(f"http://127.0.0.1:{port}/leak").read()


def test_watch(bank, sideeye_snapshot):
    snap = sideeye_snapshot()
    assert [(p.service, p.container.id) for p in snap.processes] == [("bank", bank)]
    assert snap.processes[0].goroutines


def test_watch_from_the_test(sideeye_watch, sideeye_snapshot):
    c = client.containers.run(IMAGES["sleeper"], detach=True, labels=LABELS)
    try:
        sideeye_watch(c, name="side")   # the fixture form; kept until this test ends
        snap = sideeye_snapshot()
        assert [(p.service, p.notes) for p in snap.processes] == [
            ("side", ["runs no Go program"])]
    finally:
        c.remove(force=True)


@pytest.mark.sideeye(containers=[f"label:sideeye-selected={RUN}"])
def test_label_selector(sideeye_snapshot):
    c = client.containers.run(IMAGES["ledger"], detach=True,
                              labels={**LABELS, "sideeye-selected": RUN})
    try:
        snap = sideeye_snapshot()
        assert [(p.service, p.container.id) for p in snap.processes] == [(c.name, c.id)]
    finally:
        c.remove(force=True)


@pytest.mark.sideeye(containers=["events"])
def test_events_selector(sideeye_snapshot):
    c = client.containers.run(IMAGES["ledger"], detach=True, labels=LABELS)
    try:
        snap = sideeye_snapshot()
        assert c.id in [p.container.id for p in snap.processes]
    finally:
        c.remove(force=True)


@pytest.mark.sideeye(containers=["bogus:x"])
def test_bad_selector():
    pass
"""


def test_pytest_docker_xdist_leaks_watch_and_selectors(tmp_path, shop_images):
    """pytest-docker's docker_services under xdist -n 2 (each worker its own pytest<pid>
    project, each report only its worker's), a leak check on an SDK container,
    sideeye_watch from a module fixture, label: and events selectors, a bad selector."""
    from support import GOAPPS

    from pytest_sideeye.services.images import go_image
    images = {**shop_images, "leaky": go_image("leaky", GOAPPS / "leaky")}
    p = shop_project(tmp_path, images)
    p.write("docker-compose.yml", COMPOSE_FILE)
    p.write("conftest.py", MORE_CONFTEST)
    p.write("test_more.py", MORE_TESTS)
    try:
        p.run("-n", "2", "--dist=loadgroup", "-p", "no:timeout", "--sideeye-on-failure")
        assert p.outcomes() == {
            "test_docker_services[0]": "failed", "test_docker_services[1]": "failed",
            "test_leak": "failed", "test_watch": "passed", "test_watch_from_the_test": "passed",
            "test_label_selector": "passed",
            "test_events_selector": "passed", "test_bad_selector": "error"}
        projects = set()
        for n in (0, 1):
            snap = p.report(f"test_more.py::test_docker_services[{n}]", "call")
            names = sorted(by_service(snap))
            project = names[0].split("/")[0]
            assert project.startswith("pytest") and names == [
                f"{project}/{s}" for s in ("cache", "gateway", "ledger", "orders")], names
            assert_no_go_named_with_logs(snap, f"{project}/cache")
            projects.add(project)
        assert len(projects) == 2   # one per worker, each report only its own
        leak = p.message("test_leak")
        assert "1 goroutine leaked by this test" in leak
        assert "leaky: 1 x main.waitForReply created by main.(*server).leak" in leak
        assert p.message("test_bad_selector").strip().count("\n") <= 1
        assert "sideeye marker containers=: bad container selector 'bogus:x'" in \
            p.message("test_bad_selector")
        assert p.leftovers() == []   # pytest-docker's down and the fixtures removed theirs
    finally:
        p.remove_leftovers()


EXAMPLES = ROOT / "examples" / "containers"
# What the README's section "Containers you start yourself" shows, verbatim.
README_FILES = ("with_testcontainers/conftest.py", "with_pytest_docker/conftest.py",
                "compose_first/test_compose_shop.py", "docker-compose.yml")


def test_readme_shows_the_container_examples_verbatim():
    readme = (ROOT / "README.md").read_text()
    for name in README_FILES:
        assert (EXAMPLES / name).read_text() in readme, name


def test_readme_container_examples_hang_into_reports(tmp_path, shop_images):
    """The three examples as a user runs them: the compose project up first, then pytest
    on examples/containers; each hang gets a timeout report with every Go process, linking
    the gateway's call to the orders handler, naming the container without Go (compose's
    cache) with its logs; the compose project selected by `compose:shop` still runs
    afterwards."""
    import docker
    client = docker.from_env(version="auto")
    for name, built in (("ledger", "ledger"), ("orders", "orders"), ("gateway", "gateway"),
                        ("cache", "sleeper")):
        client.images.get(shop_images[built]).tag(f"shop/{name}", "latest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    up = ["docker-compose", "-p", "shop", "-f", str(EXAMPLES / "docker-compose.yml")]
    try:
        r = subprocess.run([*up, "up", "-d"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                            "-p", "no:timeout", "-p", "no:randomly", str(EXAMPLES),
                            "--sideeye-timeout=8", "--sideeye-on-timeout",
                            f"--sideeye-dir={tmp_path / 'reports'}",
                            f"--junitxml={tmp_path / 'junit.xml'}", "-W", "ignore"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        print(r.stdout[-20000:], r.stderr[-3000:], f"{time.monotonic() - t0:.1f} s", sep="\n")
        cases = {c.get("classname"): [x.tag for x in c]
                 for c in ET.parse(tmp_path / "junit.xml").iter("testcase")}
        assert len(cases) == 3 and all("failure" in tags for tags in cases.values()), cases
        for folder, gateway, orders in (
                ("with_testcontainers/test_tc_shop.py", "shop[gateway]", "shop[orders]"),
                ("with_pytest_docker/test_pd_shop.py", "/gateway", "/orders"),
                ("compose_first/test_compose_shop.py", "shop/gateway", "shop/orders")):
            nodeid = f"containers/{folder}::test_cancel_during_rush"
            snap = Snapshot.load(tmp_path / "reports" / sanitise(nodeid) / "timeout.json")
            names = sorted(by_service(snap))
            assert len(names) == (3 if "testcontainers" in folder else 4), names
            if gateway.startswith("/"):   # pytest-docker's project: pytest<pid>
                project = names[0].split("/")[0]
                gateway, orders = project + gateway, project + orders
            assert_shop_hang_seen(snap, gateway, orders)
            if "compose" in folder:
                assert_no_go_named_with_logs(snap, "shop/cache")
        running = client.containers.list(filters={"label": "com.docker.compose.project=shop"})
        assert len(running) == 4
    finally:
        subprocess.run([*up, "down", "-t", "1"], capture_output=True, timeout=120)
