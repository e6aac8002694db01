"""The report's view model: a Snapshot shaped into plain dicts of cleaned, display-ready
strings (groups and buckets of stacks, frames, waits, captured-variable tables), which the
template renders with autoescape on.

Everything captured from the target is untrusted: its unpaired surrogates and control
characters are made visible here, and the template escapes the rest.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_sideeye.report import flamegraph
from pytest_sideeye.report.text import clean, go_quote
from pytest_sideeye.snapshot import (
    Endpoint,
    Frame,
    Goroutine,
    Process,
    Snapshot,
    Variable,
    apart_text,
    done_context_text,
    done_contexts,
    labels_text,
    own_frame,
    skew_text,
)
from pytest_sideeye.snapshot import buckets as bk

MAX_IDS_SHOWN = 12           # goroutine ids listed per bucket before "+N more"
MAX_VALUE_SETS = 3           # distinct variable-value sets shown inline per frame
MAX_TABLE_ROWS = 1000        # rows per captured-function table (all values stay in the JSON)
MAX_LOG_CHARS = 256 * 1024   # the tail of container logs kept on the page
MAX_CELL_CHARS = 160         # one-line value preview in a table cell or summary
MAX_LINK_LINES = 20          # link lines shown per bucket (all links are in the Links table)
ONE_LINE_VALUE = 72          # values up to this width print on one line


# --------------------------------------------------------------------------- formatting

def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_ms(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e6:.2f}"


def fmt_duration(ns: int) -> str:
    s = ns / 1e9
    if s < 1:
        return f"{ns / 1e6:.0f} ms" if ns >= 1e6 else f"{ns / 1e6:.2f} ms"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def fmt_ids(ids: Sequence[int], limit: int = MAX_IDS_SHOWN) -> str:
    """Sorted ids as ranges (`23-25, 31`), the first `limit` ranges and a count of the rest."""
    ranges: list[tuple[int, int]] = []
    for i in ids:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    parts = [str(a) if a == b else f"{a}\u2013{b}" for a, b in ranges[:limit]]
    rest = sum(b - a + 1 for a, b in ranges[limit:])
    return ", ".join(parts) + (f" \u2026 +{fmt_count(rest)} more" if rest else "")


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_value(value: Any, type_: str = "", indent: int = 0) -> str:
    """Pretty-print a captured JSON value the way Go code reads: structs as {F: v},
    maps as map[k: v], slices as [a, b], strings quoted, null as nil. Short values stay
    on one line; longer ones break one element per line."""
    flat = _flat(value, type_)
    if len(flat) + indent <= ONE_LINE_VALUE or not isinstance(value, (dict, list)) or not value:
        return flat
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, list):
        elem = _element_type(type_)
        body = ",\n".join(inner + format_value(v, elem, indent + 1) for v in value)
        return f"[\n{body},\n{pad}]"
    is_map = type_.startswith("map[")
    vt = _map_value_type(type_) if is_map else ""
    body = ",\n".join(f"{inner}{_key(k, is_map)}: {format_value(v, vt, indent + 1)}"
                      for k, v in value.items())
    return f"{'map[' if is_map else '{'}\n{body},\n{pad}{']' if is_map else '}'}"


def _flat(value: Any, type_: str = "") -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, list):
        elem = _element_type(type_)
        return "[" + ", ".join(_flat(v, elem) for v in value) + "]"
    if isinstance(value, dict):
        is_map = type_.startswith("map[")
        vt = _map_value_type(type_) if is_map else ""
        body = ", ".join(f"{_key(k, is_map)}: {_flat(v, vt)}" for k, v in value.items())
        return f"map[{body}]" if is_map else "{" + body + "}"
    return clean(repr(value))


def _key(k: str, is_map: bool) -> str:
    # Struct fields print bare; map keys (and anything odd) print quoted, so a hostile
    # key cannot pose as structure.
    return k if not is_map and _IDENT.match(k) else go_quote(str(k))


def _element_type(type_: str) -> str:
    m = re.match(r"^(?:\[\d*\])+(.*)$", type_)
    return m.group(1) if m else ""


def _map_value_type(type_: str) -> str:
    depth = 0
    for i, ch in enumerate(type_[3:], start=3):
        depth += ch == "["
        depth -= ch == "]"
        if depth == 0:
            return type_[i + 1:]
    return ""


def preview(text: str, limit: int = MAX_CELL_CHARS) -> str:
    one = text.replace("\n", " ")
    one = re.sub(r" {2,}", " ", one)
    return one if len(one) <= limit else one[:limit - 1] + "\u2026"


def short_path(file: str, origin: str) -> str:
    """GOROOT and module-cache prefixes say nothing in a stack; the full path stays in
    the element's title."""
    if origin in (bk.STDLIB, bk.RUNTIME):
        i = file.rfind("/src/")
        if i >= 0:
            return "$GOROOT" + file[i:]
    i = file.find("/pkg/mod/")
    if i >= 0:
        return "$GOMODCACHE/" + file[i + len("/pkg/mod/"):]
    return file


# --------------------------------------------------------------------------- view model

@dataclass
class Options:
    max_table_rows: int = MAX_TABLE_ROWS
    max_ids: int = MAX_IDS_SHOWN


def variable_view(v: Variable) -> dict:
    """How one captured variable shows: a one-line preview and, when that is not the
    whole story, the full pretty-printed value."""
    name, type_ = clean(v.name), clean(v.type)
    if v.error:
        text, full = f"<error: {clean(v.error)}>", ""
    elif not v.available:
        text, full = "<unavailable at this PC>", ""
    else:
        flat = _flat(v.value, v.type)
        text = preview(flat)
        full = format_value(v.value, v.type) if text != flat or len(flat) > ONE_LINE_VALUE else ""
        if v.truncated:
            text += " \u2026(truncated)"
    return {"name": name, "type": type_, "preview": text, "full": full,
            "bad": bool(v.error or not v.available)}


def _vars_signature(vs: list[Variable]) -> str:
    # repr of JSON values is exact and deterministic, and much cheaper than json.dumps
    # when called once per goroutine per captured frame.
    return repr([(v.name, v.type, v.value, v.available, v.truncated, v.error) for v in vs])


def frame_variable_sets(bucket: bk.Bucket, index: int) -> tuple[list[dict], int]:
    """Distinct variable-value sets at frame `index` across the bucket's goroutines, most
    common first (capped), and how many distinct sets were left out."""
    seen: dict[str, list[int]] = {}
    first: dict[str, list[Variable]] = {}
    for g in bucket.goroutines:
        vs = g.frames[index].variables
        if not vs:
            continue
        sig = _vars_signature(vs)
        if sig not in seen:
            seen[sig], first[sig] = [], vs
        seen[sig].append(g.id)
    ordered = sorted(seen, key=lambda s: (-len(seen[s]), min(seen[s])))
    sets = [{"ids": fmt_ids(sorted(seen[s]), 6), "count": len(seen[s]),
             "all": len(seen[s]) == bucket.count and len(seen) == 1,
             "vars": [variable_view(v) for v in first[s]]}
            for s in ordered[:MAX_VALUE_SETS]]
    return sets, max(0, len(ordered) - MAX_VALUE_SETS)


def frame_view(bucket: bk.Bucket, index: int) -> dict:
    f = bucket.frames[index]
    # A compiler-generated wrapper is plumbing: dimmed like the runtime's own frames.
    org = bk.RUNTIME if f.wrapper else bk.origin(f.function, f.file)
    sets, more = frame_variable_sets(bucket, index)
    return {"function": clean(f.function), "file": clean(f.file),
            "short": clean(short_path(f.file, org)), "line": f.line, "inlined": f.inlined,
            "origin": org, "own": org in (bk.MAIN, bk.USER), "var_sets": sets,
            "wrapper": f.wrapper,
            "more_sets": more}


def created_by_view(bucket: bk.Bucket) -> list[dict]:
    sites = bucket.created_by()
    parents: dict[tuple, set] = defaultdict(set)
    for g in bucket.goroutines:
        if g.created_by is not None and g.created_by.goroutine is not None:
            parents[bk.created_key(g.created_by)].add(g.created_by.goroutine)
    out = []
    for (fn, file, line), n in sites.most_common(3):
        ps = sorted(parents.get((fn, file, line), ()))
        out.append({"function": clean(fn), "file": clean(file), "line": line, "count": n,
                    "parents": fmt_ids(ps, 4) if ps else ""})
    return out


def labels_view(bucket: bk.Bucket) -> list[dict]:
    """The bucket's distinct pprof label sets, most common first (capped): the set as Go
    1.27 prints it, and which goroutines hold it."""
    held: dict[str, list[int]] = {}
    for g in bucket.goroutines:
        if g.labels:
            held.setdefault(labels_text(g.labels), []).append(g.id)
    ordered = sorted(held, key=lambda t: (-len(held[t]), min(held[t])))
    return [{"text": clean(t), "ids": fmt_ids(sorted(held[t]), 6), "count": len(held[t]),
             "all": len(held[t]) == bucket.count} for t in ordered[:MAX_VALUE_SETS]]


def wait_view(bucket: bk.Bucket, reference_ns: int | None) -> str:
    """`9.0 s – 12.4 s` (how long members have been blocked, lower bounds) when the
    process carries a CLOCK_MONOTONIC reference; empty when durations cannot be known."""
    since = bucket.wait_since()
    if not since or reference_ns is None:
        return ""
    durations = [max(0, reference_ns - s) for s in since]
    lo, hi = min(durations), max(durations)
    text = fmt_duration(lo) if fmt_duration(lo) == fmt_duration(hi) else \
        f"{fmt_duration(lo)} \u2013 {fmt_duration(hi)}"
    return "\u2265 " + text


def states_view(states: Counter) -> list[dict]:
    return [{"label": clean(s), "count": n} for s, n in states.most_common()]


def bucket_view(bucket: bk.Bucket, reference_ns: int | None, opts: Options,
                glinks: dict[int, list[dict]] | None = None) -> dict:
    head = bk.headline_frame(bucket.frames)
    blocking = _blocking_frame(bucket.frames, head)
    states = bucket.states()
    return {
        "count": bucket.count,
        "states": states_view(states),
        "states_json": json.dumps({clean(k): v for k, v in states.items()},
                                  ensure_ascii=False, separators=(",", ":")),
        "functions": "\n".join(clean(f.function) for f in bucket.frames),
        "headline": clean(head.function) if head else "(no stack)",
        "blocking": clean(blocking.function) if blocking and blocking is not head else "",
        "where": f"{clean(short_path(head.file, bk.origin(head.function, head.file)))}:{head.line}"
                 if head else "",
        "wait": wait_view(bucket, reference_ns),
        "ids": fmt_ids(bucket.ids(), opts.max_ids),
        "created_by": created_by_view(bucket),
        "labels": labels_view(bucket),
        "frames": [frame_view(bucket, i) for i in range(len(bucket.frames))],
        "truncated": [{"why": clean(w), "count": n} for w, n in bucket.truncated().most_common()],
        "threads": sorted({g.thread for g in bucket.goroutines if g.thread is not None})[:8],
        "links": _bucket_links(bucket, glinks or {}),
    }


def _bucket_links(bucket: bk.Bucket, glinks: dict[int, list[dict]]) -> dict:
    lines = [line for g in sorted(bucket.goroutines, key=lambda g: g.id)
             for line in glinks.get(g.id, [])]
    return {"lines": lines[:MAX_LINK_LINES], "more": max(0, len(lines) - MAX_LINK_LINES),
            # goroutines whose lines are cut still get their anchor: other sides link here
            "anchors": [x["anchor"] for x in lines[MAX_LINK_LINES:] if x["anchor"]]}


def _blocking_frame(frames: list[Frame], head: Frame | None) -> Frame | None:
    """What the headline frame called that blocked, when that is library code worth
    naming (`sync.(*Mutex).Lock`, `time.Sleep`, a database driver); runtime internals
    say less than the wait reason already does."""
    if head is None:
        return None
    i = next(i for i, f in enumerate(frames) if f is head)
    if i == 0:
        return None
    callee = frames[i - 1]
    return callee if bk.origin(callee.function, callee.file) in (bk.STDLIB, bk.DEPENDENCY) \
        else None


TIER_NAMES = {bk.TIER_USER: "user", bk.TIER_STDLIB: "stdlib", bk.TIER_RUNTIME: "runtime"}


def group_view(group: bk.Group, reference_ns: int | None, opts: Options,
               glinks: dict[int, list[dict]] | None = None) -> dict:
    bviews = [bucket_view(b, reference_ns, opts, glinks) for b in group.buckets]
    return {"count": group.count, "tier": TIER_NAMES[group.tier],
            "linked": any(b["links"]["lines"] for b in bviews),
            "states": states_view(group.states()), "buckets": bviews,
            "headline": bviews[0]["headline"], "blocking": bviews[0]["blocking"],
            "wait": _merge_waits(group, reference_ns)}


def _merge_waits(group: bk.Group, reference_ns: int | None) -> str:
    merged = bk.Bucket(group.buckets[0].key, [g for b in group.buckets for g in b.goroutines])
    return wait_view(merged, reference_ns)


def process_label(p: Process) -> str:
    if p.service:
        return clean(p.service)
    if p.container:
        return clean(p.container.name)
    return clean(os.path.basename(p.exe)) if p.exe else f"pid {p.pid}"


def reference_ns(p: Process) -> int | None:
    """CLOCK_MONOTONIC at the moment of the pause (Process.monotonic_ns, set by the
    engine), the reference for wait_since_ns. Snapshots without it show no durations."""
    ref = getattr(p, "monotonic_ns", None)
    return ref if isinstance(ref, int) and ref > 0 else None


def process_view(index: int, p: Process, opts: Options,
                 glinks: dict[int, list[dict]] | None = None) -> dict:
    ref = reference_ns(p)
    groups = bk.group_process(p)
    has_since = any(g.wait_since_ns for g in p.goroutines)
    logs, logs_cut = _logs_tail(p.logs)
    return {
        "anchor": f"p{index}", "label": process_label(p), "pid": p.pid, "exe": clean(p.exe),
        "go_version": clean(p.go_version),
        "layouts": clean(p.layouts) if p.layouts and p.layouts != "DWARF" else "",
        "container": {"id": clean(p.container.id)[:12], "name": clean(p.container.name),
                      "image": clean(p.container.image)} if p.container else None,
        "service": clean(p.service) if p.service else "",
        "count": len(p.goroutines), "pause_ms": fmt_ms(p.pause_ns),
        "pause_parts": ", ".join(f"{clean(k)} {fmt_ms(v)}" for k, v in p.pause_parts_ns.items()),
        "error": clean(p.error) if p.error else "",
        "notes": [clean(n) for n in p.notes],
        "groups": [group_view(g, ref, opts, glinks) for g in groups],
        "flame": flamegraph.view(p.goroutines),
        "bucket_count": sum(len(g.buckets) for g in groups),
        "no_reference": has_since and ref is None,
        "logs": logs, "logs_cut": logs_cut,
        "logs_lines": logs.count("\n") + (1 if logs and not logs.endswith("\n") else 0),
    }


def _logs_tail(logs: str | None) -> tuple[str, int]:
    if not logs:
        return "", 0
    text = clean_logs(logs)
    if len(text) <= MAX_LOG_CHARS:
        return text, 0
    return text[-MAX_LOG_CHARS:], len(text) - MAX_LOG_CHARS


def clean_logs(logs: str) -> str:
    # Logs keep their tabs and newlines; carriage returns would otherwise hide text.
    return clean(logs.replace("\r\n", "\n"))


def captures_view(snapshot: Snapshot, labels: list[str], opts: Options) -> list[dict]:
    """One table per captured function: a row per frame (across goroutines and processes),
    a column per captured expression. A type rule's values have tables of their own
    (rules_view)."""
    tables: dict[str, dict] = {}
    for pi, p in enumerate(snapshot.processes):
        for g in p.goroutines:
            for f in g.frames:
                if not any(v.rule is None for v in f.variables):
                    continue
                t = tables.setdefault(f.function, {"function": clean(f.function),
                                                   "columns": {}, "rows": [], "total": 0})
                t["total"] += 1
                for v in f.variables:
                    if v.rule is None:
                        t["columns"].setdefault(v.name, {"name": clean(v.name),
                                                         "type": clean(v.type)})
                if len(t["rows"]) < opts.max_table_rows:
                    t["rows"].append((pi, g, f))
    out = []
    for fn in sorted(tables, key=lambda k: (bk.tier([Frame(k, "", 0)]), k)):
        t = tables[fn]
        names = list(t["columns"])
        rows = [_capture_row(labels[pi], g, f, names) for pi, g, f in t["rows"]]
        out.append({"function": t["function"], "columns": [t["columns"][n] for n in names],
                    "rows": rows, "total": t["total"], "shown": len(rows),
                    "anchor": "c" + hashlib.sha1(fn.encode("utf-8", "surrogatepass")).hexdigest()[:10]})
    return out


def rule_expression(v: Variable) -> str:
    """A type rule's variable's expression relative to its value: "ID" of "o.ID"; "" for
    the whole value."""
    of = v.of or ""
    return v.name[len(of):].lstrip(".") if v.name.startswith(of) else v.name


def rules_view(snapshot: Snapshot, labels: list[str], opts: Options) -> list[dict]:
    """One table per type rule: a row per value found (a frame's variable of the type, or
    one reached inside a captured value), a column per expression of the rule."""
    tables: dict[str, dict] = {}
    for pi, p in enumerate(snapshot.processes):
        for g in p.goroutines:
            for f in g.frames:
                values: dict[tuple[str, str], dict[str, Variable]] = {}
                for v in f.variables:
                    if v.rule is not None:
                        values.setdefault((v.rule, v.of or ""), {})[rule_expression(v)] = v
                for (rule, of), by_expr in values.items():
                    t = tables.setdefault(rule, {"columns": {}, "rows": [], "total": 0})
                    t["total"] += 1
                    for expr, v in by_expr.items():
                        t["columns"].setdefault(expr, {"name": clean(expr or "(value)"),
                                                       "type": clean(v.type)})
                    if len(t["rows"]) < opts.max_table_rows:
                        t["rows"].append((pi, g, f, of, by_expr))
    out = []
    for rule in sorted(tables):
        t = tables[rule]
        exprs = list(t["columns"])
        rows = []
        for pi, g, f, of, by_expr in t["rows"]:
            row = _capture_row(labels[pi], g, f, exprs, by_expr)
            row.update({"function": clean(f.function), "of": clean(of)})
            rows.append(row)
        out.append({"type": clean(rule), "columns": [t["columns"][e] for e in exprs],
                    "rows": rows, "total": t["total"], "shown": len(rows),
                    "anchor": "t" + hashlib.sha1(rule.encode("utf-8", "surrogatepass")).hexdigest()[:10]})
    return out


def _capture_row(label: str, g: Goroutine, f: Frame, names: list[str],
                 by_name: dict[str, Variable] | None = None) -> dict:
    if by_name is None:
        by_name = {v.name: v for v in f.variables if v.rule is None}
    cells = []
    for n in names:
        v = by_name.get(n)
        if v is None:
            cells.append({"text": "", "num": False, "bad": False})
            continue
        view = variable_view(v)
        num = v.value if isinstance(v.value, (int, float)) and not isinstance(v.value, bool) \
            and v.available and not v.error else None
        cells.append({"text": view["preview"], "num": num is not None, "bad": view["bad"]})
    return {"process": label, "goroutine": g.id, "state": clean(bk.state_label(g)),
            "where": f"{clean(os.path.basename(f.file))}:{f.line}", "cells": cells}


def state_options(snapshot: Snapshot) -> list[dict]:
    total: Counter = Counter()
    for p in snapshot.processes:
        total.update(bk.state_label(g) for g in p.goroutines)
    return states_view(total)


def all_functions(snapshot: Snapshot) -> list[str]:
    names = {f.function for p in snapshot.processes for g in p.goroutines for f in g.frames}
    return sorted(clean(n) for n in names)


def test_view(test: dict | None) -> dict | None:
    if not test:
        return None
    return {k: clean(test.get(k)) for k in ("nodeid", "phase", "outcome", "message")}


# --------------------------------------------------------------------------- links

def goroutine_anchor(pid: int, gid: int) -> str:
    return f"g{pid}-{gid}"


def _side(snapshot: Snapshot, ep: Endpoint | None, addr: str | None) -> dict:
    """How the other end of a link is named: `orders · goroutine 31` linking to it, the
    process alone when no goroutine waits there, or the address of a peer outside."""
    if ep is None:
        return {"text": clean(addr or "?"), "href": None}
    who = _who(snapshot, ep.pid)
    if ep.goroutine is None:
        return {"text": f"{who}, no goroutine waiting on it", "href": None}
    return {"text": f"{who} \u00b7 goroutine {ep.goroutine}",
            "href": "#" + goroutine_anchor(ep.pid, ep.goroutine)}


def _who(snapshot: Snapshot, pid: int) -> str:
    """A process's label, with its pid when another process of the snapshot has it too."""
    p = snapshot.process(pid)
    if p is None:
        return f"pid {pid}"
    label = process_label(p)
    twins = sum(1 for q in snapshot.processes if process_label(q) == label)
    return f"{label} (pid {pid})" if twins > 1 else label


def goroutine_links(snapshot: Snapshot) -> dict[int, dict[int, list[dict]]]:
    """pid -> goroutine id -> its link lines ("waiting on -> ...", "serving <- ...");
    the first line of a goroutine carries its anchor, which the other side links to."""
    out: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for ln in snapshot.links:
        request = clean(ln.request)
        apart = apart_text(snapshot, ln) or ""
        for me, other, other_addr, role in ((ln.client, ln.server, ln.server_addr, "waiting on"),
                                            (ln.server, ln.client, ln.client_addr, "serving")):
            if me is None or me.goroutine is None:
                continue
            lines = out[me.pid][me.goroutine]
            lines.append({"anchor": "" if lines else goroutine_anchor(me.pid, me.goroutine),
                          "gid": me.goroutine, "role": role, "kind": ln.kind,
                          "arrow": "\u2192" if role == "waiting on" else "\u2190",
                          "other": _side(snapshot, other, other_addr), "request": request,
                          "apart": apart})
    return out


def chains_view(snapshot: Snapshot) -> list[dict]:
    """The wait chains, longest first: each step links to its goroutine; the end says what
    the last one waits on locally."""
    out = []
    for c in snapshot.chains():
        steps = []
        for pid, gid in c.goroutines:
            steps.append({"text": f"{_who(snapshot, pid)} g{gid}",
                          "href": "#" + goroutine_anchor(pid, gid)})
        last = snapshot.goroutine(*c.goroutines[-1])
        where = own_frame(last) if last is not None and not c.cycle else None
        out.append({"steps": steps, "cycle": c.cycle,
                    "state": clean(bk.state_label(last)) if last is not None else "",
                    "where": clean(where.function) if where else "",
                    "requests": [clean(ln.request) for ln in c.links]})
    return out


def done_contexts_view(snapshot: Snapshot) -> list[dict]:
    """Goroutines still waiting on a done context, longest done first (the classic hang)."""
    return [{"who": clean(f"{_who(snapshot, d.pid)} g{d.goroutine}"),
             "text": clean(done_context_text(d))} for d in done_contexts(snapshot)]


def links_view(snapshot: Snapshot) -> list[dict]:
    return [{"kind": ln.kind,
             "client": _side(snapshot, ln.client, ln.client_addr),
             "server": _side(snapshot, ln.server, ln.server_addr),
             "request": clean(ln.request),
             "apart": apart_text(snapshot, ln) or "",
             "addrs": clean(f"{ln.client_addr} \u2192 {ln.server_addr}")
             if ln.client_addr and ln.server_addr else ""} for ln in snapshot.links]


def page_view(snapshot: Snapshot, opts: Options) -> dict:
    glinks = goroutine_links(snapshot)
    procs = [process_view(i, p, opts, glinks.get(p.pid)) for i, p in enumerate(snapshot.processes)]
    labels = [f"{v['label']} ({v['pid']})" for v in procs]
    return {
        "test": test_view(snapshot.test),
        "taken_at": clean(snapshot.taken_at),
        "skew": clean(skew_text(snapshot) or ""),
        "processes": procs,
        "total": sum(p["count"] for p in procs),
        "groups_total": sum(len(p["groups"]) for p in procs),
        "captures": captures_view(snapshot, labels, opts),
        "rules": rules_view(snapshot, labels, opts),
        "chains": chains_view(snapshot),
        "done_contexts": done_contexts_view(snapshot),
        "links": links_view(snapshot),
        "states": state_options(snapshot),
        "functions": all_functions(snapshot),
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
