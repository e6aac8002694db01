"""What changed between two snapshots: per process, the goroutines that appeared, vanished
or changed state, grouped by where they were created and what their stacks are, counts
first (`sideeye diff A.json B.json`, `snap_b.diff(snap_a)`).

Processes are matched by service name, else container name, else executable and pid. In a
process that is still the same one (same pid), goroutines are matched by id: Go never
reuses an id within a process. A process that restarted (another pid) has no ids in common
with its old self, so its goroutines are compared as groups: a group with more goroutines
than before "appeared", one with fewer "vanished".

Duck-typed over the model (snapshot.model imports this module), so it imports nothing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

RUNTIME_PREFIXES = ("runtime.", "runtime/", "internal/")


@dataclass(frozen=True)
class GroupKey:
    """Goroutines alike for a diff: the same creation site and the same stack shape (the
    sequence of functions, lines ignored, so a worker parked on two lines is one group)."""
    created_by: str                 # "pkg.f file.go:12", or "" for the main goroutine
    stack: tuple[str, ...]          # functions, leaf first

    @property
    def top(self) -> str:
        """The first frame of the program's own (not the runtime's), else the leaf."""
        for fn in self.stack:
            if not fn.startswith(RUNTIME_PREFIXES):
                return fn
        return self.stack[0] if self.stack else "?"


@dataclass
class GoroutineGroup:
    key: GroupKey
    count: int
    ids: list[int] = field(default_factory=list)
    states: Counter = field(default_factory=Counter)   # "waiting: chan receive" -> n

    def to_json(self) -> dict:
        return {"count": self.count, "created_by": self.key.created_by, "top": self.key.top,
                "stack": list(self.key.stack), "ids": sorted(self.ids),
                "states": dict(self.states)}


@dataclass
class Change:
    """One goroutine, alive in both, whose state, wait reason or top frame moved."""
    id: int
    before: str
    after: str

    def to_json(self) -> dict:
        return {"id": self.id, "before": self.before, "after": self.after}


@dataclass
class ProcessDiff:
    name: str                       # the service, container or executable it was matched by
    pid_before: int | None
    pid_after: int | None
    appeared: list[GoroutineGroup] = field(default_factory=list)
    vanished: list[GoroutineGroup] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    count_before: int = 0
    count_after: int = 0

    @property
    def restarted(self) -> bool:
        return None not in (self.pid_before, self.pid_after) and self.pid_before != self.pid_after

    @property
    def shown_name(self) -> str:
        """The name a heading shows beside the pid: without the " (pid N)" that a process
        named by its executable carries in `name` (its matching key), said once."""
        pid = self.pid_before if self.pid_before is not None else self.pid_after
        return self.name.removesuffix(f" (pid {pid})")

    def to_json(self) -> dict:
        return {"name": self.name, "pid_before": self.pid_before, "pid_after": self.pid_after,
                "count_before": self.count_before, "count_after": self.count_after,
                "appeared": [g.to_json() for g in self.appeared],
                "vanished": [g.to_json() for g in self.vanished],
                "changed": [c.to_json() for c in self.changed]}


@dataclass
class SnapshotDiff:
    processes: list[ProcessDiff]

    def to_json(self) -> dict:
        return {"format": "sideeye.diff/v1", "processes": [p.to_json() for p in self.processes]}

    @property
    def empty(self) -> bool:
        return not any(p.appeared or p.vanished or p.changed for p in self.processes)


def group_key(g) -> GroupKey:
    cb = g.created_by
    site = f"{cb.function} {_base(cb.file)}:{cb.line}" if cb else ""
    return GroupKey(site, tuple(f.function for f in g.frames))


def state_of(g) -> str:
    return f"{g.status}: {g.wait_reason}" if g.wait_reason else g.status


def process_name(p) -> str:
    if getattr(p, "service", None):
        return p.service
    if p.container is not None:
        return p.container.name
    return f"{_base(p.exe) or 'pid'} (pid {p.pid})"


def diff(before, after) -> SnapshotDiff:
    """What changed from snapshot `before` to snapshot `after`."""
    olds = {process_name(p): p for p in before.processes}
    news = {process_name(p): p for p in after.processes}
    out = []
    for name in list(olds) + [n for n in news if n not in olds]:
        out.append(diff_process(name, olds.get(name), news.get(name)))
    return SnapshotDiff(out)


def diff_process(name: str, old, new) -> ProcessDiff:
    d = ProcessDiff(name, old.pid if old else None, new.pid if new else None,
                    count_before=len(old.goroutines) if old else 0,
                    count_after=len(new.goroutines) if new else 0)
    olds = {g.id: g for g in old.goroutines} if old else {}
    news = {g.id: g for g in new.goroutines} if new else {}
    if old is not None and new is not None and old.pid == new.pid:
        d.appeared = group_goroutines(g for i, g in news.items() if i not in olds)
        d.vanished = group_goroutines(g for i, g in olds.items() if i not in news)
        d.changed = sorted((Change(i, _where(olds[i]), _where(g)) for i, g in news.items()
                            if i in olds and _where(olds[i]) != _where(g)),
                           key=lambda c: c.id)
    else:
        d.appeared, d.vanished = _group_balance(olds.values(), news.values())
    return d


def _where(g) -> str:
    """A goroutine's state and the frame it waits in, for 'changed'."""
    top = next((f for f in g.frames if not f.function.startswith(RUNTIME_PREFIXES)),
               g.frames[0] if g.frames else None)
    at = f" in {top.function} ({_base(top.file)}:{top.line})" if top else ""
    return state_of(g) + at


def group_goroutines(goroutines) -> list[GoroutineGroup]:
    by_key: dict[GroupKey, GoroutineGroup] = {}
    for g in goroutines:
        k = group_key(g)
        grp = by_key.setdefault(k, GoroutineGroup(k, 0))
        grp.count += 1
        grp.ids.append(g.id)
        grp.states[state_of(g)] += 1
    return sorted(by_key.values(), key=lambda x: (-x.count, x.key.top, x.key.created_by))


def _group_balance(olds, news) -> tuple[list[GoroutineGroup], list[GoroutineGroup]]:
    """Without common ids: groups that grew (appeared) and groups that shrank (vanished),
    each by the difference."""
    before = {g.key: g for g in group_goroutines(olds)}
    after = {g.key: g for g in group_goroutines(news)}
    appeared, vanished = [], []
    for k in set(before) | set(after):
        n_old = before[k].count if k in before else 0
        n_new = after[k].count if k in after else 0
        if n_new > n_old:
            appeared.append(_delta(after[k], n_new - n_old))
        elif n_old > n_new:
            vanished.append(_delta(before[k], n_old - n_new))
    order = lambda x: (-x.count, x.key.top, x.key.created_by)  # noqa: E731
    return sorted(appeared, key=order), sorted(vanished, key=order)


def _delta(g: GoroutineGroup, n: int) -> GoroutineGroup:
    return GoroutineGroup(g.key, n, list(g.ids), Counter(g.states))


def render_text(d: SnapshotDiff) -> str:
    """The diff as text, counts first: one block per process, one line per group."""
    lines: list[str] = []
    for p in d.processes:
        pid = (f"pid {p.pid_before}" if p.pid_before == p.pid_after
               else f"pid {p.pid_before} -> {p.pid_after}")
        lines.append(f"{p.shown_name} ({pid}): {p.count_before} -> {p.count_after} goroutines"
                     + (" (restarted: compared by groups)" if p.restarted else ""))
        for title, groups in (("appeared", p.appeared), ("vanished", p.vanished)):
            for g in groups:
                where = f", created by {g.key.created_by}" if g.key.created_by else ""
                state = ", ".join(f"{n} {s}" for s, n in g.states.most_common())
                lines.append(f"  {'+' if title == 'appeared' else '-'}{g.count:<5} {title:<9}"
                             f" {g.key.top}{where} [{state}]")
        for c in p.changed:
            lines.append(f"  ~      changed   goroutine {c.id}: {c.before} -> {c.after}")
        if not (p.appeared or p.vanished or p.changed):
            lines.append("  no change")
    return "\n".join(lines) + "\n"


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else ""
