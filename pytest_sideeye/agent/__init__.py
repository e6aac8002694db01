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
from pytest_sideeye.agent.authorize import Caller, Refused
from pytest_sideeye.agent.client import (
                                         AgentAnswered,
                                         AgentUnavailable,
                                         ContainerTarget,
                                         Route,
                                         container_target,
                                         health,
                                         missing_privileges,
                                         route,
                                         snapshot_via_agent,
                                         take_snapshot,
)
from pytest_sideeye.agent.protocol import MAX_BODY_BYTES, MAX_TARGETS, REQUEST_TIMEOUT_S
from pytest_sideeye.agent.server import MAX_CONNECTIONS, QUEUE_SIZE, Agent, serve

__all__ = ["MAX_BODY_BYTES", "MAX_CONNECTIONS", "MAX_TARGETS", "QUEUE_SIZE",
           "REQUEST_TIMEOUT_S", "Agent", "AgentAnswered", "AgentUnavailable", "Caller", "ContainerTarget",
           "Refused", "Route", "container_target", "health", "missing_privileges", "route", "serve",
           "snapshot_via_agent", "take_snapshot"]
