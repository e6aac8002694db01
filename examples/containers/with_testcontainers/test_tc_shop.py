from shop_client import cancel_during_rush


def test_cancel_during_rush(shop):
    cancel_during_rush(shop["url"])
