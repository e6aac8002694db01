"""The link probes' slots from the pre-read, through the agent (its engine, its settings,
its JSON answer): every idle reader of fixture sockflip linked to its own connection, the
flipper to the one it waits on in every snapshot (tests/preread_links.py), and the count
of probe frames taken from the pre-read in the answer. The engine's own route, and the
proof that the check can fail: tests/engine/test_preread_links.py."""
from __future__ import annotations

import pytest
from oracle import start_app
from preread_links import CAPTURE, IDLE, SNAPSHOTS, check_snapshots

from pytest_sideeye.agent import snapshot_via_agent

pytestmark = [pytest.mark.usefixtures("needs_root")]


def test_probe_slots_from_the_preread_through_the_agent(agent, go_build):
    spec = [f"{fn}: {', '.join(exprs)}" for fn, exprs in CAPTURE.items()]
    with start_app(go_build("sockflip"), "-n", str(IDLE)) as app:
        ports = [int(p) for p in app.ready_line.split()[1:]]
        seen, disagree, from_preread = check_snapshots(
            lambda: snapshot_via_agent([app.pid], capture=spec, socket_path=str(agent.socket)),
            app.pid, ports, SNAPSHOTS // 2)
    assert seen >= SNAPSHOTS // 8, f"the flipper was parked in only {seen} snapshots"
    assert not disagree, f"stale probe slots in {len(disagree)} of {seen}: {disagree[:5]}"
    assert min(from_preread) >= IDLE, from_preread
