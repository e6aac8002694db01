"""Render a snapshot as text in the style of Go's `/debug/pprof/goroutine?debug=2`.

The output reads like the runtime's own dump, so people and tools that know that format
(panicparse, godump.parse_dump) read it unchanged. Where a snapshot knows more than the
runtime prints, it is added in forms the runtime format leaves room for:

- one `# pid ...` header line per process (pid, exe, Go version, container, pause) plus
  `# error:` / `# note:` lines; the runtime never prints lines starting with "#";
- a goroutine's OS thread as ", thread N" inside the header brackets;
- each frame's pc as ` pc=0x...` on its file line. The runtime marks inlined frames by
  the absence of a "+0x" offset; a non-inlined frame here always has the pc suffix, so
  the distinction survives (the runtime's offset needs the function entry, which the
  model does not keep). An inlined frame shares its physical frame's pc: it is shown
  there only;
- variables under their frame as `\t\tname (type) = value`, values compact JSON
  (the runtime never indents two tabs);
- a cut-short stack as `...truncated: <reason>...`.

"N minutes": the model's wait_since_ns is a CLOCK_MONOTONIC timestamp taken when the
goroutine blocked, so minutes need the monotonic time of the snapshot itself: the
Process's `monotonic_ns` (set by the engine at the pause), or `now_monotonic_ns` passed
by the caller, which wins. Without either, minutes are shown only for goroutines parsed
from a runtime dump (godump's DumpInfo.wait_minutes). Like the runtime, minutes are
printed only from one minute up.
"""
from __future__ import annotations

import json
from typing import Iterable

from pytest_sideeye.snapshot.contexts import done_context_text, done_contexts
from pytest_sideeye.snapshot.godump import dump_info
from pytest_sideeye.snapshot.links import Chain, Endpoint, Link
from pytest_sideeye.snapshot.model import Frame, Goroutine, Process, Snapshot, Variable

_MINUTE_NS = 60_000_000_000
_NO_STACK = "\tgoroutine running on other thread; stack unavailable"


def render(target: Snapshot | Process | Iterable[Process], *,
           now_monotonic_ns: int | None = None) -> str:
    """The whole snapshot (or one process) as debug=2-style text."""
    if isinstance(target, Snapshot):
        processes = target.processes
    elif isinstance(target, Process):
        processes = [target]
    else:
        processes = list(target)
    blocks = [render_process(p, now_monotonic_ns=now_monotonic_ns) for p in processes]
    if isinstance(target, Snapshot) and target.links:
        blocks.insert(0, render_links(target))
    done = render_done_contexts(target) if isinstance(target, Snapshot) else ""
    if done:
        blocks.insert(1 if target.links else 0, done)
    skew = skew_text(target) if isinstance(target, Snapshot) else None
    if skew:
        blocks.insert(0, f"# {skew}")
    rules = render_rules(processes)
    if rules:
        blocks.append(rules)
    return "\n".join(blocks)


def render_rules(processes: Iterable[Process]) -> str:
    """Type rules' values, one `# type TYPE:` section per rule after the goroutines, a
    comment line per value found (a debug=2 reader skips them; each value is also under
    its frame, named as here):
    `#   pid 4242 goroutine 18 main.byPointer o: ID = 101, Customer = "ada"`."""
    found: dict[str, list[str]] = {}
    for p in processes:
        for g in p.goroutines:
            for f in g.frames:
                values: dict[tuple[str, str], list[str]] = {}
                for v in f.variables:
                    if v.rule is not None:
                        of = v.of or ""
                        rel = v.name[len(of):].lstrip(".") if v.name.startswith(of) else v.name
                        text = render_variable(v).split(" = ", 1)[-1]
                        values.setdefault((v.rule, of), []).append(
                            f"{rel} = {text}" if rel else text)
                for (rule, of), parts in values.items():
                    found.setdefault(rule, []).append(_one_line(
                        f"#   pid {p.pid} goroutine {g.id} {f.function} {of}: "
                        + ", ".join(parts)))
    return "".join(_one_line(f"# type {rule}: {len(lines)} value"
                             f"{'s' if len(lines) != 1 else ''}") + "\n"
                   + "\n".join(lines) + "\n" for rule, lines in sorted(found.items()))


def _one_line(text: str) -> str:
    """A comment line stays one line whatever names it holds."""
    return visible(text.replace("\r", "\\r").replace("\n", "\\n"))


def _invisible_table() -> dict[int, str]:
    """What the target's text may hold that a terminal would act on or a reader not see:
    C0 and C1 controls and DEL (an escape sequence; C1's CSI is one byte), the line and
    paragraph separators, the byte-order mark and the bidirectional controls, which
    reorder what is read around them. Each becomes its \\uXXXX escape, as JSON (and
    Go's strconv.Quote, report/text.go_quote) write them, so a JSON value still reads
    back exactly."""
    codes = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0xFEFF, 0x200E, 0x200F,
             *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    return {c: f"\\u{c:04x}" for c in codes if c != 0x09}


_INVISIBLE = _invisible_table()


def visible(text: str) -> str:
    """Text from the target (a captured value, a request's path) as the text form prints
    it: nothing in it can drive the reader's terminal or reorder the line."""
    return text.translate(_INVISIBLE)


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def skew_text(snap: Snapshot) -> str | None:
    """The header's "8 processes within 0.4 ms": how far apart the processes were stopped
    (Snapshot.skew_ns); None with fewer than two processes collected."""
    n = sum(1 for p in snap.processes if p.monotonic_ns is not None)
    if snap.skew_ns is None or n < 2:
        return None
    how = "stopped together" if snap.together else "stopped one after the other"
    return f"{n} processes within {_ms(snap.skew_ns)} ({how})"


def apart_text(snap: Snapshot, link: Link) -> str | None:
    """"sides collected 12.3 ms apart" on a link whose two processes were stopped far
    apart (Snapshot.sides_apart_ns); None when the link is one instant's state."""
    gap = snap.sides_apart_ns(link)
    return None if gap is None else f"sides collected {_ms(gap)} apart"


# --- links and wait chains ------------------------------------------------------------------

def render_links(snap: Snapshot) -> str:
    """The `links:` section: wait chains first, then every link, as comment lines (a
    debug=2 reader skips them)."""
    lines = []
    chains = snap.chains()
    if chains:
        lines.append("# wait chains:")
        lines += [f"#   {chain_text(snap, c)}" for c in chains]
    lines.append("# links:")
    for ln in snap.links:
        req = f"  {visible(ln.request)}" if ln.request else ""
        addrs = f"  ({ln.client_addr} -> {ln.server_addr})" \
            if ln.client_addr and ln.server_addr else ""
        apart = apart_text(snap, ln)
        apart = f"  [{apart}]" if apart else ""
        lines.append(f"#   {ln.kind:4} {side_text(snap, ln.client, ln.client_addr)} -> "
                     f"{side_text(snap, ln.server, ln.server_addr)}{req}{addrs}{apart}")
    return "\n".join(lines) + "\n"


def render_done_contexts(snap: Snapshot) -> str:
    """Goroutines still waiting on a done context (snapshot/contexts.py), as comment lines
    right after the wait chains: the classic hang, listed first."""
    done = done_contexts(snap)
    if not done:
        return ""
    lines = ["# still waiting on a done context:"]
    lines += [f"#   {process_label(snap, d.pid)} g{d.goroutine}: {done_context_text(d)}"
              for d in done]
    return "\n".join(lines) + "\n"


def process_label(snap: Snapshot, pid: int) -> str:
    """How a process is named to a reader: its service, else its executable's name."""
    p = snap.process(pid)
    if p is None:
        return f"pid {pid}"
    name = p.service or (p.container.name if p.container else None) or \
        (p.exe.rsplit("/", 1)[-1] if p.exe else None)
    return f"{name} (pid {pid})" if name else f"pid {pid}"


def side_text(snap: Snapshot, ep: Endpoint | None, addr: str | None) -> str:
    """`orders (pid 13) goroutine 31`, `orders (pid 13), no goroutine waiting`, or the
    address of a peer outside the snapshot."""
    if ep is None:
        return addr or "?"
    who = process_label(snap, ep.pid)
    if ep.goroutine is None:
        return f"{who}, no goroutine waiting"
    return f"{who} goroutine {ep.goroutine}"


def chain_text(snap: Snapshot, chain: Chain) -> str:
    """`gateway g7 -> orders g31 [sync.Mutex.Lock] in main.(*service).cancel`."""
    parts = []
    for pid, gid in chain.goroutines:
        p = snap.process(pid)
        parts.append(f"{p.service if p and p.service else f'pid {pid}'} g{gid}")
    text = " -> ".join(parts)
    if chain.cycle:
        return text + " (a cycle)"
    last = snap.goroutine(*chain.goroutines[-1])
    if last is not None:
        where = own_frame(last)
        text += f" [{_status_text(last)}]" + (f" in {where.function}" if where else "")
    return text


def own_frame(g: Goroutine) -> Frame | None:
    """The goroutine's innermost frame outside Go's own library: where its code is
    waiting (the library's files are those beside the runtime's)."""
    goroot = next((f.file.rsplit("/src/runtime/", 1)[0] + "/src/" for f in g.frames
                   if "/src/runtime/" in f.file), None)
    for f in g.frames:
        if goroot is None or not f.file.startswith(goroot):
            return f
    return g.frames[0] if g.frames else None


def render_process(p: Process, *, now_monotonic_ns: int | None = None) -> str:
    if now_monotonic_ns is None:
        now_monotonic_ns = getattr(p, "monotonic_ns", None)
    lines = [process_header(p)]
    lines += [f"# error: {p.error}"] if p.error else []
    lines += [f"# note: {n}" for n in p.notes]
    text = "\n".join(lines) + "\n"
    for g in p.goroutines:
        text += "\n" + render_goroutine(g, now_monotonic_ns=now_monotonic_ns)
    return text


def process_header(p: Process) -> str:
    parts = [f"# pid {p.pid}"]
    if p.service:
        parts.append(f"service={p.service}")
    if p.exe:
        parts.append(f"exe={p.exe}")
    if p.go_version:
        parts.append(f"go={p.go_version}")
    if p.layouts and p.layouts != "DWARF":
        parts.append(f"layouts=\"{p.layouts}\"")
    if p.container:
        parts.append(f"container={p.container.name} ({p.container.id[:12]}) image={p.container.image}")
    if p.pause_ns is not None:
        parts.append(f"pause={p.pause_ns / 1e6:.3f}ms")
    parts.append(f"goroutines={len(p.goroutines)}")
    return " ".join(parts)


def goroutine_header(g: Goroutine, *, now_monotonic_ns: int | None = None) -> str:
    info = dump_info(g)
    status = _status_text(g)
    minutes = wait_minutes(g, now_monotonic_ns)
    if minutes is not None and minutes >= 1 and g.status in ("waiting", "syscall"):
        status += f", {minutes} minutes"
    if info.locked_to_thread:
        status += ", locked to thread"
    if g.thread is not None:
        status += f", thread {g.thread}"
    labels = f" {labels_text(g.labels)}" if g.labels else f" {info.labels}" if info.labels else ""
    return f"goroutine {g.id} [{status}]{labels}:"


def labels_text(labels: dict[str, str]) -> str:
    """pprof labels as Go 1.27's tracebacks print them: {key: value, ...}, each quoted
    when it holds anything but [A-Za-z0-9./_] (runtime/traceback.go)."""
    return "{" + ", ".join(f"{_label_word(k)}: {_label_word(v)}" for k, v in labels.items()) + "}"


def _label_word(s: str) -> str:
    if all(c.isascii() and (c.isalnum() or c in "./_") for c in s):
        return s
    return '"' + "".join(_LABEL_ESCAPES.get(c) or _label_char(c) for c in s) + '"'


_LABEL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def _label_char(c: str) -> str:
    """runtime.printquoted: printable ASCII as is, others as \\xNN, \\uNNNN, \\UNNNNNNNN."""
    n = ord(c)
    if 0x20 <= n <= 0x7E:
        return c
    if n < 127:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _status_text(g: Goroutine) -> str:
    if g.status == "leaked":
        return f"{g.wait_reason} (leaked)" if g.wait_reason else "leaked"
    if g.status == "waiting" and g.wait_reason:
        return g.wait_reason
    return g.status


def wait_minutes(g: Goroutine, now_monotonic_ns: int | None) -> int | None:
    """Whole minutes the goroutine has been blocked, when that can be known."""
    if now_monotonic_ns is not None and g.wait_since_ns:
        return max(0, now_monotonic_ns - g.wait_since_ns) // _MINUTE_NS
    return dump_info(g).wait_minutes


def render_goroutine(g: Goroutine, *, now_monotonic_ns: int | None = None) -> str:
    info = dump_info(g)
    lines = [goroutine_header(g, now_monotonic_ns=now_monotonic_ns)]
    for i, f in enumerate(g.frames):
        if info.elided and info.elided_at == i:
            lines.append(f"...{info.elided} frames elided...")
        if f.wrapper:   # debug=2 does not print compiler-generated wrappers
            continue
        lines += render_frame(f)
    lines += _truncation_lines(g, info)
    if g.created_by:
        c = g.created_by
        goid = f" in goroutine {c.goroutine}" if c.goroutine is not None else ""
        lines += [f"created by {c.function}{goid}", f"\t{c.file}:{c.line}"]
    return "\n".join(lines) + "\n"


def _truncation_lines(g: Goroutine, info) -> list[str]:
    if not g.truncated or (info.elided and info.elided_at is not None and info.elided_at < len(g.frames)):
        return []
    if g.truncated.startswith("stack unavailable"):
        return [_NO_STACK]
    if g.truncated == "additional frames elided":
        return ["...additional frames elided..."]
    if info.elided:  # elided at the very end of the printed frames
        return [f"...{info.elided} frames elided..."]
    return [f"...truncated: {g.truncated}..."]


def render_frame(f: Frame) -> list[str]:
    where = f"\t{f.file}:{f.line}"
    if not f.inlined:
        where += f" pc={f.pc:#x}"
    return [f"{f.function}(...)", where] + [render_variable(v) for v in f.variables]


def render_variable(v: Variable) -> str:
    if v.error:
        value = f"<error: {v.error}>"
    elif not v.available:
        value = "<unavailable>"
    else:
        value = json.dumps(v.value, separators=(",", ":"), ensure_ascii=False, default=str)
        if v.truncated:
            value += " ...(truncated)"
    kind = f" ({v.type})" if v.type else ""
    return visible(f"\t\t{v.name}{kind} = {value}".replace("\n", "\\n"))
