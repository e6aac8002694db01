"""Stage 5b (after the engine and services, before the plugin and the CLI), the sideeye
agent: one long-lived privileged process per machine that takes snapshots for whoever may
ask (docs/agent.md), and the client side that asks it.

Takes snapshot requests on a Unix socket (HTTP/1.1 + JSON, protocol.py), authorizes them
by the caller's kernel-verified credentials (authorize.py), takes them one at a time with
the engine kept warm (server.py: `Agent`, `serve`); gives the sideeye.snapshot/v1
document. Client side (client.py): `take_snapshot` (the engine's signature) goes through
the agent whenever its socket answers, else the engine in this process when privileged,
else raises the one-line reason; `route` says which, `health` asks the agent.
"""
from pytest_sideeye.agent.client import (
                                         AgentAnswered,
                                         AgentUnavailable,
                                         ContainerTarget,
                                         Route,
                                         container_target,
                                         health,
                                         missing_privileges,
                                         route,
                                         snapshot_bytes,
                                         snapshot_via_agent,
                                         take_snapshot,
                                         warm,
)
from pytest_sideeye.agent.protocol import MAX_BODY_BYTES, MAX_TARGETS, REQUEST_TIMEOUT_S

# The server side (and with it the engine) is imported on first use: a client asking the
# agent must start fast (the CLI's whole run is timed in benchmarks/agent_bench.py).
_SERVER_NAMES = ("MAX_CONNECTIONS", "QUEUE_SIZE", "Agent", "serve")
_AUTHORIZE_NAMES = ("Caller", "Refused")


def __getattr__(name: str):
    if name in _SERVER_NAMES:
        from pytest_sideeye.agent import server
        return getattr(server, name)
    if name in _AUTHORIZE_NAMES:
        from pytest_sideeye.agent import authorize
        return getattr(authorize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MAX_BODY_BYTES", "MAX_CONNECTIONS", "MAX_TARGETS", "QUEUE_SIZE",
           "REQUEST_TIMEOUT_S", "Agent", "AgentAnswered", "AgentUnavailable", "Caller", "ContainerTarget",
           "Refused", "Route", "container_target", "health", "missing_privileges", "route", "serve",
           "snapshot_bytes", "snapshot_via_agent", "take_snapshot", "warm"]
