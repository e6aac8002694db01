import docker
import pytest
from shop_client import cancel_during_rush, wait_until_up


@pytest.fixture
def gateway_url():
    """The shop runs already (`docker-compose -p shop up -d` before pytest): find the
    gateway's published port."""
    (gateway,) = docker.from_env(version="auto").containers.list(filters={"label": [
        "com.docker.compose.project=shop", "com.docker.compose.service=gateway"]})
    url = f"http://127.0.0.1:{gateway.ports['8080/tcp'][0]['HostPort']}"
    wait_until_up(url)
    return url


@pytest.mark.sideeye(containers=["compose:shop"])
def test_cancel_during_rush(gateway_url):
    cancel_during_rush(gateway_url)
