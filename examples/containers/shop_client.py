"""The shop's public API as the example tests call it (through the gateway), and the
race that deadlocks the orders service: cancelling an order while another is placed."""
import json
import threading
import time
import urllib.request


def call(base: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:   # no client timeout: the suite's decides
        return json.load(resp)


def wait_until_up(base: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cancel_during_rush(base: str) -> None:
    first = call(base, "/api/orders", {"customer": "ada", "item": "teapot", "qty": 1})
    for path, body in ((f"/api/orders/cancel/{first['id']}", {}),
                       ("/api/orders", {"customer": "grace", "item": "kettle", "qty": 1})):
        threading.Thread(target=call, args=(base, path, body), daemon=True).start()
    time.sleep(1.0)
    assert call(base, "/api/orders")   # hangs while orders is deadlocked
