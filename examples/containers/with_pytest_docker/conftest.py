from pathlib import Path

import pytest
from shop_client import wait_until_up


@pytest.fixture(scope="session")
def docker_compose_file():
    return str(Path(__file__).parent.parent / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_command():
    return "docker-compose"   # compose v1 (Debian 12); the default is "docker compose"


@pytest.fixture(scope="session")
def docker_setup():
    return ["up -d"]          # pytest-docker's default also passes --build


@pytest.fixture
def gateway_url(docker_services):
    """pytest-sideeye finds the project behind docker_services: every service of it is
    snapshotted, named project/service."""
    url = f"http://127.0.0.1:{docker_services.port_for('gateway', 8080)}"
    wait_until_up(url)
    return url
