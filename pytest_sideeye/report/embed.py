"""The snapshot embedded in a report, so that the page is also the data: a compact form of
sideeye.snapshot/v1 that shares identical stacks between goroutines (10,000 goroutines of
~10 frames: ~15 MB as plain v1, ~1 MB this way), written into a
<script type="application/json"> element with `<`, `>`, `&` escaped (no captured string
can end the element), and read back (`snapshot_from_report`, `load_snapshot`).
"""
from __future__ import annotations

import json
import re
from typing import Any

from pytest_sideeye.errors import SideeyeError
from pytest_sideeye.snapshot import FORMAT, Goroutine, Process, Snapshot

# The embedded snapshot shares identical stacks between goroutines: 10,000 goroutines with
# ~10 frames each would be ~15 MB as plain sideeye.snapshot/v1 JSON, ~1 MB this way.
EMBED_FORMAT = "sideeye.snapshot/v1+shared-stacks"
EMBED_ID = "sideeye-snapshot"

_JSON_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                        0x2028: "\\u2028", 0x2029: "\\u2029"}
# Lone surrogates cannot be encoded as UTF-8; as JSON escapes they round-trip exactly.
_JSON_SCRIPT_ESCAPES.update({c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)})


def json_for_script(doc: Any) -> str:
    """JSON that is inert inside <script type="application/json">: no `</script>`, no
    `<!--`, no characters that end a JavaScript line, and valid UTF-8."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).translate(
        _JSON_SCRIPT_ESCAPES)



# --------------------------------------------------------------------------- embedding

def embed_document(snapshot: Snapshot) -> dict:
    """The snapshot, lossless, in the sideeye.snapshot/v1+shared-stacks form: v1's
    top-level and process fields, plus tables stored once ("states": [status, wait
    reason] pairs, "stacks": frame lists without variables, each frame with the
    (name, type) list of its captures as "capture", "created_by": creation sites); each
    goroutine is {"id", "state", "stack", "created_by"?, "wait_since_ns"?, "values"?:
    {frame index: [value, ...]}, "variables"?: {frame index: [v1 variable, ...]},
    "thread"?, "truncated"?, "labels"?}. expand_embedded turns it back into plain v1 JSON."""
    stacks: dict[tuple, int] = {}
    sites: dict[tuple, int] = {}
    states: dict[tuple[str, str], int] = {}
    stack_list: list[list[dict]] = []
    site_list: list[dict] = []
    processes = []
    for p in snapshot.processes:
        pj = _process_fields(p)
        gs = []
        for g in p.goroutines:
            key = tuple((f.function, f.file, f.line, f.pc, f.inlined, f.wrapper)
                        for f in g.frames)
            si = stacks.get(key)
            if si is None:
                si = stacks[key] = len(stack_list)
                stack_list.append([{"function": f.function, "file": f.file, "line": f.line,
                                    "pc": f.pc, "inlined": f.inlined,
                                    **({"wrapper": True} if f.wrapper else {})}
                                   for f in g.frames])
            # (status, wait reason) pairs are few: stored once, referenced by index.
            state = states.setdefault((g.status, g.wait_reason), len(states))
            gj: dict[str, Any] = {"id": g.id, "state": state, "stack": si}
            if g.wait_since_ns is not None:
                gj["wait_since_ns"] = g.wait_since_ns
            if g.created_by is not None:
                cj = g.created_by.to_json()
                ck = tuple(cj.values())
                ci = sites.get(ck)
                if ci is None:
                    ci = sites[ck] = len(site_list)
                    site_list.append(cj)
                gj["created_by"] = ci
            _embed_variables(g, stack_list[si], gj)
            if g.thread is not None:
                gj["thread"] = g.thread
            if g.truncated:
                gj["truncated"] = g.truncated
            if g.labels:
                gj["labels"] = dict(g.labels)
            gs.append(gj)
        pj["goroutines"] = gs
        processes.append(pj)
    doc: dict[str, Any] = {"format": EMBED_FORMAT, "taken_at": snapshot.taken_at,
                           "states": [list(k) for k in states],
                           "stacks": stack_list, "created_by": site_list,
                           "processes": processes}
    if snapshot.test is not None:
        doc["test"] = dict(snapshot.test)
    if snapshot.settings is not None:
        doc["settings"] = dict(snapshot.settings)
    if snapshot.skew_ns is not None:
        doc["skew_ns"] = snapshot.skew_ns
    doc["together"] = snapshot.together
    doc["links"] = [ln.to_json() for ln in snapshot.links]
    return doc


def _process_fields(p: Process) -> dict:
    """Process.to_json without its goroutines (serializing those only to drop them was
    most of the render time at 100,000 goroutines)."""
    goroutines, p.goroutines = p.goroutines, []
    try:
        return p.to_json()
    finally:
        p.goroutines = goroutines


def _embed_variables(g: Goroutine, stack: list[dict], gj: dict) -> None:
    """Captured variables of one goroutine. The (name, type) list of a frame is stored once
    in the shared stack ("capture"); a goroutine whose variables there match it, all read
    cleanly, stores only the values ("values"); anything else is stored whole
    ("variables"). Names and types repeated per goroutine were most of the bytes."""
    values: dict[str, list] = {}
    full: dict[str, list] = {}
    for i, f in enumerate(g.frames):
        if not f.variables:
            continue
        frame = stack[i]
        schema = frame.get("capture")
        if schema is None:
            schema = frame["capture"] = [[v.name, v.type] for v in f.variables]
        if len(schema) == len(f.variables) and all(
                v.available and not v.truncated and not v.error and v.rule is None
                and c[0] == v.name
                and c[1] == v.type for c, v in zip(schema, f.variables)):
            values[str(i)] = [v.value for v in f.variables]
        else:
            full[str(i)] = [v.to_json() for v in f.variables]
    if values:
        gj["values"] = values
    if full:
        gj["variables"] = full


def _expand_variables(gj: dict, i: int, frame: dict) -> list[dict]:
    key = str(i)
    if key in gj.get("values", {}):
        return [{"name": n, "type": t, "value": v, "available": True, "truncated": False}
                for (n, t), v in zip(frame["capture"], gj["values"][key])]
    return gj.get("variables", {}).get(key, [])


def expand_embedded(doc: dict) -> dict:
    """The embedded document back to plain sideeye.snapshot/v1 JSON."""
    if doc.get("format") != EMBED_FORMAT:
        raise SideeyeError(f"the report's embedded snapshot has an unknown format "
                           f"{doc.get('format')!r}")
    stacks, sites, states = doc["stacks"], doc["created_by"], doc["states"]
    processes = []
    for pj in doc["processes"]:
        pj = dict(pj)
        gs = []
        for gj in pj["goroutines"]:
            frames = [{"function": f["function"], "file": f["file"], "line": f["line"],
                       "pc": f["pc"], "inlined": f["inlined"],
                       "variables": _expand_variables(gj, i, f),
                       **({"wrapper": True} if f.get("wrapper") else {})}
                      for i, f in enumerate(stacks[gj["stack"]])]
            status, wait_reason = states[gj["state"]]
            g = {"id": gj["id"], "status": status, "wait_reason": wait_reason,
                 "wait_since_ns": gj.get("wait_since_ns"),
                 "created_by": sites[gj["created_by"]] if "created_by" in gj else None,
                 "frames": frames}
            for k in ("thread", "truncated", "labels"):
                if k in gj:
                    g[k] = gj[k]
            gs.append(g)
        pj["goroutines"] = gs
        processes.append(pj)
    out = {"format": FORMAT, "taken_at": doc.get("taken_at", ""), "processes": processes,
           "links": doc.get("links", [])}
    for k in ("test", "settings", "skew_ns", "together"):
        if k in doc:
            out[k] = doc[k]
    return out


_EMBED_RE = re.compile(
    r'<script type="application/json" id="' + EMBED_ID + r'">(.*?)</script>', re.S)


def snapshot_from_report(html_text: str) -> Snapshot:
    """Read the snapshot back out of a report written by render_html."""
    m = _EMBED_RE.search(html_text)
    if not m:
        raise SideeyeError("not a sideeye report: no embedded snapshot found")
    try:
        doc = json.loads(m.group(1))
    except ValueError as e:
        raise SideeyeError(f"the report's embedded snapshot is not valid JSON: {e}") from None
    return Snapshot.from_json(expand_embedded(doc))


def load_snapshot(path: str) -> Snapshot:
    """A snapshot from a sideeye.snapshot/v1 JSON file or from a report's embedded copy."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise SideeyeError(f"cannot read {path}: {e.strerror or e}") from None
    if text.lstrip().startswith("<"):
        return snapshot_from_report(text)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SideeyeError(f"{path} is not JSON: {e}") from None
    try:
        return Snapshot.from_json(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SideeyeError(f"{path} is not a {FORMAT} snapshot: {e}") from None
