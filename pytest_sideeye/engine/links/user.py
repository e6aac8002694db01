"""User links (capture.UserLink): two frames whose captured values are equal."""
from __future__ import annotations

import json

from pytest_sideeye.snapshot import Endpoint, Link, Snapshot

MAX_USER_PAIRS = 1000


def user_links(snap: Snapshot, specs: list) -> list[Link]:
    """A link for each pair of frames whose captured values are equal."""
    links: list[Link] = []
    for ul in specs:
        clients = _values_of(snap, ul.client_function, ul.client_expr.text)
        servers: dict[str, list[Endpoint]] = {}
        for value, ep in _values_of(snap, ul.server_function, ul.server_expr.text):
            servers.setdefault(value, []).append(ep)
        for value, cep in clients:
            for sep in servers.get(value, []):
                if sep != cep and len(links) < MAX_USER_PAIRS:
                    links.append(Link("user", cep, sep, value=value))
    return links


def _values_of(snap: Snapshot, function: str, expr: str) -> list[tuple[str, Endpoint]]:
    out = []
    for p in snap.processes:
        for g in p.goroutines:
            for f in g.frames:
                if f.function != function:
                    continue
                for v in f.variables:
                    if v.name == expr and v.available and v.error is None \
                            and not v.truncated and v.value is not None:
                        out.append((json.dumps(v.value, sort_keys=True), Endpoint(p.pid, g.id)))
    return out
