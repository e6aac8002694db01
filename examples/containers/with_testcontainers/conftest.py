import pytest
from shop_client import wait_until_up
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network


@pytest.fixture
def shop():
    """The shop's three services, started with testcontainers. Nothing to tell
    pytest-sideeye: it finds the containers behind the fixture's value."""
    with Network() as net:
        ledger = DockerContainer("shop/ledger", network=net, network_aliases=["ledger"])
        orders = DockerContainer("shop/orders", network=net, network_aliases=["orders"],
                                 env={"LEDGER_URL": "http://ledger:8080"})
        gateway = DockerContainer("shop/gateway", network=net, ports=[8080],
                                  env={"ORDERS_URL": "http://orders:8080"})
        with ledger, orders, gateway:
            base = f"http://localhost:{gateway.get_exposed_port(8080)}"
            wait_until_up(base)
            yield {"ledger": ledger, "orders": orders, "gateway": gateway, "url": base}
