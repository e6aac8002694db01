"""The report's flame graph of one process: every goroutine's stack from its root (the
outermost frame) down, stacks merged where they share a beginning, each frame as wide as
the goroutines running through it. Laid out here as plain rectangles; the template draws
them as a static SVG (no script), each with a tooltip, coloured by where the code comes
from (your code, dependencies, standard library, runtime).

Like pprof's flame graph, but of goroutines instead of samples: a wide bar low down is
where many goroutines sit right now."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from pytest_sideeye.report.text import clean
from pytest_sideeye.snapshot import Goroutine
from pytest_sideeye.snapshot import buckets as bk

WIDTH = 1200          # viewBox units across
ROW = 17              # units per frame, down
MIN_WIDTH = 2.0       # narrower frames are left out (their goroutines still count above)
MAX_DEPTH = 64        # deeper frames are left out (the stacks in the page have them all)
CHAR_WIDTH = 6.6      # of the 11-unit font: how many characters of a name fit a bar


@dataclass
class Node:
    name: str
    origin: str = ""
    count: int = 0
    children: dict[str, "Node"] = field(default_factory=dict)


@dataclass(frozen=True)
class Bar:
    x: float
    y: int
    w: float
    label: str         # what fits of the function's name ("" when nothing does)
    title: str         # the tooltip: full name, goroutines, share
    origin: str        # main, user, dependency, stdlib, runtime


def merge(goroutines: Iterable[Goroutine]) -> Node:
    """The stacks as a tree from their roots; inlined frames are frames like the others."""
    root = Node("all goroutines")
    for g in goroutines:
        root.count += 1
        node = root
        for f in list(reversed(g.frames))[:MAX_DEPTH]:
            child = node.children.get(f.function)
            if child is None:
                child = node.children[f.function] = Node(f.function, bk.origin(f.function, f.file))
            child.count += 1
            node = child
    return root


def layout(root: Node, width: float = WIDTH) -> tuple[list[Bar], int]:
    """(bars, height): the root on top, children left to right by name."""
    bars: list[Bar] = []
    if not root.count:
        return bars, 0
    scale = width / root.count
    depth = 0
    stack = [(root, 0.0, 0)]
    while stack:
        node, x, level = stack.pop()
        w = node.count * scale
        if w < MIN_WIDTH:
            continue
        depth = max(depth, level + 1)
        share = 100.0 * node.count / root.count
        name = clean(node.name)
        bars.append(Bar(round(x, 2), level * ROW, round(w, 2), _fit(name, w),
                        f"{name} \u2014 {node.count} goroutine"
                        f"{'s' if node.count != 1 else ''} ({share:.3g}%)",
                        node.origin or "all"))
        cx = x
        children = sorted(node.children.values(), key=lambda c: c.name)
        placed = []
        for c in children:
            placed.append((c, cx, level + 1))
            cx += c.count * scale
        stack.extend(reversed(placed))
    return bars, depth * ROW


def _fit(name: str, w: float) -> str:
    room = int((w - 6) / CHAR_WIDTH)
    if room >= len(name):
        return name
    if room < 4:
        return ""
    short = name.rsplit("/", 1)[-1]   # the package path goes first
    return short if room >= len(short) else short[:room - 1] + "\u2026"


def view(goroutines: Iterable[Goroutine]) -> dict:
    """What the template needs for one process's graph."""
    bars, height = layout(merge(goroutines))
    return {"bars": bars, "height": height, "width": WIDTH, "row": ROW - 1}
