"""The example shop: gateway -> orders -> ledger, each a Go service in Docker.

Each test gets its own three containers on its own network; they find each other by
service name. Run with the plugin's timeout so a hang becomes a report:

    pytest examples --sideeye-on-timeout --sideeye-on-failure --sideeye-timeout=8
"""
import json
import urllib.request

import pytest

from pytest_sideeye import go_service

ledger = go_service("ledger", source="services/ledger", ports=[8080],
                    ready_http=(8080, "/healthz"), env={"LEDGER_LATENCY": "150ms"})
orders = go_service("orders", source="services/orders", ports=[8080],
                    ready_http=(8080, "/healthz"), env={"LEDGER_URL": "http://ledger:8080"})
gateway = go_service("gateway", source="services/gateway", ports=[8080],
                     ready_http=(8080, "/healthz"), env={"ORDERS_URL": "http://orders:8080"})


class Shop:
    """The public API, as a customer's client would call it: through the gateway."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        # No client timeout on purpose: the suite's timeout decides when a hang is a hang.
        with urllib.request.urlopen(req) as resp:
            return json.load(resp)

    def place(self, customer: str, item: str, qty: int = 1) -> dict:
        return self.call("POST", "/api/orders", {"customer": customer, "item": item, "qty": qty})

    def cancel(self, order_id: int) -> dict:
        return self.call("POST", f"/api/orders/cancel/{order_id}")

    def orders(self) -> list:
        return self.call("GET", "/api/orders")


@pytest.fixture
def shop(ledger, orders, gateway) -> Shop:
    return Shop(gateway.url(8080))
