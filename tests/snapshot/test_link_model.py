"""The links model: JSON in and out (every field checked), and the wait chains it forms."""
from __future__ import annotations

import pytest

from pytest_sideeye.snapshot import Endpoint, Goroutine, Link, Process, Snapshot


def g(i: int, reason: str = "chan receive") -> Goroutine:
    return Goroutine(i, "waiting", reason, None, None, [])


def snap_with(links: list[Link], gs: dict[int, list[int]]) -> Snapshot:
    return Snapshot([Process(pid=pid, goroutines=[g(i) for i in ids]) for pid, ids in gs.items()],
                    links=links)


def link(c: tuple[int, int | None] | None, s: tuple[int, int | None] | None,
         kind: str = "http") -> Link:
    return Link(kind, Endpoint(*c) if c else None, Endpoint(*s) if s else None)


def test_json_round_trip_and_absent_fields():
    ln = Link("grpc", Endpoint(1, 7), Endpoint(2, None), "10.0.0.1:5", "10.0.0.2:80",
              method="/a.B/C", stream_id=3)
    d = ln.to_json()
    assert d == {"kind": "grpc", "client": {"pid": 1, "goroutine": 7},
                 "server": {"pid": 2, "goroutine": None}, "client_addr": "10.0.0.1:5",
                 "server_addr": "10.0.0.2:80", "method": "/a.B/C", "stream_id": 3}
    assert Link.from_json(d) == ln
    outside = Link("http", None, Endpoint(2, 3), client_addr="1.2.3.4:5", path="/x")
    assert Link.from_json(outside.to_json()) == outside
    secure = Link("http", Endpoint(1, 7), Endpoint(2, 3), path="/x", tls=True, transport="h1")
    assert secure.to_json()["tls"] is True and secure.to_json()["transport"] == "h1"
    assert Link.from_json(secure.to_json()) == secure
    # A document written before links existed reads as having none.
    doc = Snapshot().to_json()
    del doc["links"]
    assert Snapshot.from_json(doc).links == []


@pytest.mark.parametrize("bad", [
    {"kind": "smoke", "client": None, "server": None},
    {"kind": "tcp", "client": {"pid": "1", "goroutine": 2}, "server": None},
    {"kind": "tcp", "client": {"goroutine": 2}, "server": None},
    {"kind": "http", "client": None, "server": None, "path": 7},
    {"kind": "grpc", "client": None, "server": None, "stream_id": True},
    {"kind": "http", "client": None, "server": None, "tls": "yes"},
    {"kind": "http", "client": None, "server": None, "transport": "h3"},
    "not an object",
])
def test_bad_links_are_value_errors(bad):
    doc = {"format": "sideeye.snapshot/v1", "processes": [], "links": [bad]}
    with pytest.raises(ValueError):
        Snapshot.from_json(doc)


def test_chain_follows_links_across_processes_to_the_local_wait():
    # outside -> gateway g7 -> orders g31 -> ledger g4 (blocked locally); a second,
    # shorter chain gateway g8 -> orders g32.
    links = [link(None, (1, 7)), link((1, 7), (2, 31)), link((2, 31), (3, 4)),
             link((1, 8), (2, 32))]
    s = snap_with(links, {1: [7, 8], 2: [31, 32], 3: [4]})
    chains = s.chains()
    assert [c.goroutines for c in chains] == [[(1, 7), (2, 31), (3, 4)], [(1, 8), (2, 32)]]
    assert chains[0].links == links[1:3] and not chains[0].cycle
    gw7 = s.goroutine(1, 7)
    assert s.waiting_on(gw7) == [links[1]] and s.serving(gw7) == [links[0]]


def test_a_cycle_is_one_chain_and_a_tail_into_it_is_another():
    links = [link((1, 1), (2, 2)), link((2, 2), (1, 1)), link((3, 9), (1, 1))]
    chains = snap_with(links, {1: [1], 2: [2], 3: [9]}).chains()
    assert [(c.goroutines, c.cycle) for c in chains] == [
        ([(3, 9), (1, 1), (2, 2), (1, 1)], True), ([(1, 1), (2, 2), (1, 1)], True)]


def test_sides_without_a_goroutine_or_outside_do_not_chain():
    links = [link((1, 1), (2, None), "tcp"), link((1, 2), None, "tcp"),
             link((1, 3), (2, 99))]        # goroutine 99 is not in the snapshot
    assert snap_with(links, {1: [1, 2, 3], 2: [5]}).chains() == []


def test_waiting_on_needs_the_pid_when_ids_repeat():
    s = snap_with([link((1, 5), (2, 5))], {1: [5], 2: [5]})
    assert s.waiting_on(s.processes[0].goroutines[0]) == s.links
    assert s.serving(s.processes[1].goroutines[0]) == s.links
    with pytest.raises(ValueError):
        s.waiting_on(g(5))


def test_a_user_links_value_round_trips_and_is_checked():
    """Link.value (user links: the equal value, as JSON text) is written, read back, and
    refused when it is not a string."""
    ln = Link("user", Endpoint(1, 7), Endpoint(2, 3), value='"order=42"')
    d = ln.to_json()
    assert d == {"kind": "user", "client": {"pid": 1, "goroutine": 7},
                 "server": {"pid": 2, "goroutine": 3}, "value": '"order=42"'}
    assert Link.from_json(d) == ln and Link.from_json(d).value == '"order=42"'
    with pytest.raises(ValueError, match="'value' should be a string"):
        Link.from_json({**d, "value": 42})
