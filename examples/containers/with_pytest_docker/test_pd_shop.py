from shop_client import cancel_during_rush


def test_cancel_during_rush(docker_services, gateway_url):
    cancel_during_rush(gateway_url)
