"""What a snapshot of fixture `sockflip` must say, however it is taken (engine in this
process, or the agent): the link of each goroutine parked in main.readVia names the
connection its captured `tag` says it waits on (engine/links/preread_slots.py: the probes'
slots of the goroutines the pause did not walk again come from the pre-read)."""
from __future__ import annotations

CAPTURE = {"main.readVia": ["tag"]}
IDLE = 100          # sockflip -n: readers waiting for good, tags 2 ..
SNAPSHOTS = 40


def waits_on(snap, pid: int) -> tuple[dict, tuple | None]:
    """({tag: port its link names} of the idle readers, and (tag, port) of the flipper
    when it is parked in main.readVia, else None), from the snapshot's tcp links."""
    proc = next(p for p in snap.processes if p.pid == pid)
    by_id = {g.id: g for g in proc.goroutines}
    idle, flipper = {}, None
    for ln in snap.links:
        if ln.kind != "tcp" or ln.client is None or ln.client.pid != pid \
                or ln.client.goroutine not in by_id:
            continue
        g = by_id[ln.client.goroutine]
        frame = next((f for f in g.frames if f.function == "main.readVia"), None)
        if frame is None or g.status != "waiting":
            continue
        [tag] = frame.variables
        assert tag.available and tag.error is None, tag
        port = int(ln.client_addr.rpartition(":")[2])
        if tag.value >= 2:
            idle[tag.value] = port
        else:
            flipper = (tag.value, port)
    return idle, flipper


def check_snapshots(snapshot, pid: int, ports: list[int], n: int = SNAPSHOTS) -> tuple:
    """(snapshots with the flipper parked, those whose flipper link names the other
    connection, probe frames taken from the pre-read in each); every idle reader's link
    is checked in each snapshot."""
    seen, disagree, from_preread = 0, [], []
    for _ in range(n):
        snap = snapshot()
        [proc] = [p for p in snap.processes if p.pid == pid]
        if proc.error and "did not stop within" in proc.error:
            continue   # a loaded machine: the stop itself timed out (it was resumed)
        assert proc.error is None, proc.error
        assert proc.walk == "pre-read", proc.walk
        from_preread.append(proc.preread_probe_frames or 0)
        idle, flipper = waits_on(snap, pid)
        assert idle == {t: ports[t] for t in range(2, IDLE + 2)}, idle
        if flipper is None:
            continue   # running or runnable at that instant
        seen += 1
        tag, port = flipper
        if port != ports[tag]:
            disagree.append(flipper)
    return seen, disagree, from_preread
