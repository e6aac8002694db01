"""Three ways users start the shop's containers themselves, each snapshotted on a hang
with no go_service: testcontainers (with_testcontainers/), pytest-docker
(with_pytest_docker/), a compose project started before pytest (compose_first/). The
images shop/ledger, shop/orders and shop/gateway are the services of ../services built
beforehand (tests/plugin/test_containers.py tags them so)."""
