"""Three shop tests. The last one hangs: cancelling an order while another is placed
deadlocks the orders service (see services/orders/main.go). The sideeye report shows the
two handler goroutines, each holding one mutex and waiting for the other."""
import threading
from concurrent.futures import Future


def in_background(fn, *args) -> Future:
    """Run a call on a daemon thread: a request stuck in a deadlocked service must not keep
    the test (or pytest) from finishing once the timeout fails it."""
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def test_place_order(shop):
    order = shop.place("ada", "teapot", 2)
    assert order["status"] == "placed"
    assert [o["id"] for o in shop.orders()] == [order["id"]]


def test_cancel_order(shop):
    order = shop.place("grace", "kettle")
    assert shop.cancel(order["id"])["status"] == "cancelled"
    assert shop.orders()[0]["status"] == "cancelled"


def test_cancel_during_rush(shop):
    """A customer cancels while another order comes in: both must go through."""
    first = shop.place("ada", "teapot")
    cancelled = in_background(shop.cancel, first["id"])
    placed = in_background(shop.place, "grace", "kettle")
    assert cancelled.result()["status"] == "cancelled"
    assert placed.result()["status"] == "placed"
