"""A snapshot as SQLite tables, for queries a report does not answer (`sideeye snapshot
--sqlite FILE`, `sideeye export SNAP.json --sqlite FILE`, the plugin's `--sideeye-sqlite`).

Tables (documented in docs/snapshot-format.md):
    snapshot   (key, value)                      format, taken_at, test (JSON)
    processes  (pid, service, container_id, container_name, image, exe, go_version,
                goroutines, pause_ns, collector, error, notes)
    goroutines (pid, id, state, wait_reason, wait_since_ns, created_by_function,
                created_by_file, created_by_line, created_by_goroutine, thread, truncated,
                top_function)
    frames     (pid, goroutine, depth, function, file, line, pc, inlined, wrapper)  depth 0: leaf
    variables  (pid, goroutine, depth, function, name, type, value, available, truncated,
                error, rule, of)                 value: JSON text; rule, of: a type rule's
                                                 value (its TYPE, the value's name), else NULL
    labels     (pid, goroutine, key, value)      pprof labels, one row each
    links      (kind, client_pid, client_goroutine, server_pid, server_goroutine,
                client_addr, server_addr, method, path, stream_id, value, tls,
                transport)                       tls: 1, 0 or NULL (not known)
    and one table per captured function, named as the function ("main.settle"), one row per
    frame, one column per expression (JSON text): what Side-Eye's users query;
    and one table per type rule, named "type:" and the type ("type:main.Order"), one row
    per value found: (pid, goroutine, depth, function, of), then a column per expression
    of the rule ("value" for a rule on the whole value).

JSON columns work with SQLite's JSON functions (`json_extract(value, '$.ID')`). Every
identifier is quoted, so hostile function or expression names stay names.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from pytest_sideeye.files import replacing

SCHEMA = """
CREATE TABLE snapshot (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE processes (
  pid INTEGER PRIMARY KEY, service TEXT, container_id TEXT, container_name TEXT, image TEXT,
  exe TEXT, go_version TEXT, goroutines INTEGER, pause_ns INTEGER, collector TEXT,
  error TEXT, notes TEXT);
CREATE TABLE goroutines (
  pid INTEGER, id INTEGER, state TEXT, wait_reason TEXT, wait_since_ns INTEGER,
  created_by_function TEXT, created_by_file TEXT, created_by_line INTEGER,
  created_by_goroutine INTEGER, thread INTEGER, truncated TEXT, top_function TEXT,
  PRIMARY KEY (pid, id));
CREATE TABLE frames (
  pid INTEGER, goroutine INTEGER, depth INTEGER, function TEXT, file TEXT, line INTEGER,
  pc INTEGER, inlined INTEGER, wrapper INTEGER, PRIMARY KEY (pid, goroutine, depth));
CREATE TABLE variables (
  pid INTEGER, goroutine INTEGER, depth INTEGER, function TEXT, name TEXT, type TEXT,
  value TEXT, available INTEGER, truncated INTEGER, error TEXT, rule TEXT, "of" TEXT);
CREATE TABLE labels (
  pid INTEGER, goroutine INTEGER, key TEXT, value TEXT, PRIMARY KEY (pid, goroutine, key));
CREATE TABLE links (
  kind TEXT, client_pid INTEGER, client_goroutine INTEGER, server_pid INTEGER,
  server_goroutine INTEGER, client_addr TEXT, server_addr TEXT, method TEXT, path TEXT,
  stream_id INTEGER, value TEXT, tls INTEGER, transport TEXT);
CREATE INDEX frames_by_function ON frames (function);
CREATE INDEX variables_by_function ON variables (function, name);
"""
# Columns every per-function table starts with; the expressions follow.
FRAME_COLUMNS = ("pid", "goroutine", "depth")
# Columns every per-type table starts with; the rule's expressions follow.
RULE_COLUMNS = ("pid", "goroutine", "depth", "function", "of")


def quote(name: str) -> str:
    """An SQL identifier for any text (a captured name may hold quotes or worse)."""
    return '"' + name.replace('"', '""') + '"'


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(s: str | None) -> str | None:
    """SQLite stores UTF-8: keep what Python carries as lone surrogates, replaced."""
    return s.encode("utf-8", "replace").decode("utf-8") if isinstance(s, str) else s


def write_sqlite(snapshot, path: str | os.PathLike) -> Path:
    """Write the snapshot's tables to a new SQLite file at `path` (replaced atomically)."""
    target = Path(path)
    with replacing(target, 0o644) as tmp:
        db = sqlite3.connect(tmp)
        try:
            db.executescript(SCHEMA)
            _fill(db, snapshot)
            db.commit()
        finally:
            db.close()
    return target


def _fill(db: sqlite3.Connection, snap) -> None:
    meta = {"format": "sideeye.snapshot/v1", "taken_at": snap.taken_at,
            "test": _json(snap.test) if snap.test is not None else None}
    db.executemany("INSERT INTO snapshot VALUES (?, ?)", [(k, _text(v)) for k, v in meta.items()])
    captured: dict[str, list[str]] = {}   # function -> expressions, in capture order
    rules: dict[str, list[str]] = {}      # type rule -> its expressions, in capture order
    for p in snap.processes:
        _process(db, p)
        for g in p.goroutines:
            _goroutine(db, p.pid, g, captured, rules)
    for function, names in captured.items():
        _function_table(db, snap, function, names)
    for rule, exprs in rules.items():
        _rule_table(db, snap, rule, exprs)
    db.executemany("INSERT INTO links VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   [(ln.kind, ln.client.pid if ln.client else None,
                     ln.client.goroutine if ln.client else None,
                     ln.server.pid if ln.server else None,
                     ln.server.goroutine if ln.server else None,
                     _text(ln.client_addr), _text(ln.server_addr), _text(ln.method),
                     _text(ln.path), ln.stream_id, _text(ln.value),
                     None if ln.tls is None else int(ln.tls), _text(ln.transport))
                    for ln in getattr(snap, "links", [])])


def _process(db, p) -> None:
    c = p.container
    db.execute("INSERT INTO processes VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (p.pid, _text(p.service), _text(c.id) if c else None, _text(c.name) if c else None,
                _text(c.image) if c else None, _text(p.exe), _text(p.go_version),
                len(p.goroutines), p.pause_ns, _text(p.collector), _text(p.error),
                _text(_json(p.notes)) if p.notes else None))


def _goroutine(db, pid: int, g, captured: dict[str, list[str]],
               rules: dict[str, list[str]]) -> None:
    cb = g.created_by
    top = next((f.function for f in g.frames if not f.function.startswith("runtime.")),
               g.frames[0].function if g.frames else None)
    db.execute("INSERT OR REPLACE INTO goroutines VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (pid, g.id, g.status, _text(g.wait_reason), g.wait_since_ns,
                _text(cb.function) if cb else None, _text(cb.file) if cb else None,
                cb.line if cb else None, cb.goroutine if cb else None, g.thread,
                _text(g.truncated), _text(top)))
    db.executemany("INSERT OR REPLACE INTO frames VALUES (?,?,?,?,?,?,?,?,?)",
                   [(pid, g.id, depth, _text(f.function), _text(f.file), f.line, f.pc,
                     int(f.inlined), int(f.wrapper)) for depth, f in enumerate(g.frames)])
    db.executemany("INSERT OR REPLACE INTO labels VALUES (?,?,?,?)",
                   [(pid, g.id, _text(k), _text(v)) for k, v in g.labels.items()])
    for depth, f in enumerate(g.frames):
        if not f.variables:
            continue
        own = [v.name for v in f.variables if v.rule is None]
        if own:
            names = captured.setdefault(f.function, [])
            names += [n for n in own if n not in names]
        for v in f.variables:
            if v.rule is not None:
                exprs = rules.setdefault(v.rule, [])
                if _rule_expression(v) not in exprs:
                    exprs.append(_rule_expression(v))
        db.executemany("INSERT INTO variables VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       [(pid, g.id, depth, _text(f.function), _text(v.name), _text(v.type),
                         _text(_json(v.value)), int(v.available), int(v.truncated),
                         _text(v.error), _text(v.rule), _text(v.of)) for v in f.variables])


def _function_table(db, snap, function: str, names: list[str]) -> None:
    """One table per captured function: a row per frame, a column per expression."""
    table = _table_name(db, function)
    columns = [*FRAME_COLUMNS, *_column_names(names)]
    db.execute(f"CREATE TABLE {quote(table)} ("
               + ", ".join(f"{quote(c)} {'INTEGER' if i < len(FRAME_COLUMNS) else 'TEXT'}"
                           for i, c in enumerate(columns)) + ")")
    rows = []
    for p in snap.processes:
        for g in p.goroutines:
            for depth, f in enumerate(g.frames):
                if f.function != function or not any(v.rule is None for v in f.variables):
                    continue
                values = {v.name: v for v in f.variables if v.rule is None}
                rows.append((p.pid, g.id, depth,
                             *(_text(_json(values[n].value)) if n in values and
                               values[n].available else None for n in names)))
    marks = ",".join("?" * len(columns))
    db.executemany(f"INSERT INTO {quote(table)} VALUES ({marks})", rows)


def _rule_expression(v) -> str:
    """A rule's variable's expression relative to its value ("ID" of "o.ID"); "value" for
    the whole value."""
    of = v.of or ""
    rel = v.name[len(of):].lstrip(".") if v.name.startswith(of) else v.name
    return rel or "value"


def _rule_table(db, snap, rule: str, exprs: list[str]) -> None:
    """One table per type rule: a row per value found, a column per expression."""
    table = _table_name(db, "type:" + rule)
    columns = [*RULE_COLUMNS, *_column_names(exprs, RULE_COLUMNS)]
    db.execute(f"CREATE TABLE {quote(table)} ("
               + ", ".join(f"{quote(c)} {'INTEGER' if i < 3 else 'TEXT'}"
                           for i, c in enumerate(columns)) + ")")
    rows = []
    for p in snap.processes:
        for g in p.goroutines:
            for depth, f in enumerate(g.frames):
                found: dict[str, dict] = {}
                for v in f.variables:
                    if v.rule == rule:
                        found.setdefault(v.of or "", {})[_rule_expression(v)] = v
                for of, values in found.items():
                    rows.append((p.pid, g.id, depth, _text(f.function), _text(of),
                                 *(_text(_json(values[e].value)) if e in values and
                                   values[e].available and not values[e].error else None
                                   for e in exprs)))
    marks = ",".join("?" * len(columns))
    db.executemany(f"INSERT INTO {quote(table)} VALUES ({marks})", rows)


def _column_names(names: list[str], first: tuple[str, ...] = FRAME_COLUMNS) -> list[str]:
    """Expression names as column names: SQLite's are case-insensitive and the frame
    columns come first, so a clash gets a `#2` suffix rather than breaking the table."""
    taken = {c.lower() for c in first}
    out = []
    for n in names:
        name, k = _text(n), 2
        while name.lower() in taken:
            name, k = f"{_text(n)}#{k}", k + 1
        taken.add(name.lower())
        out.append(name)
    return out


def _table_name(db, function: str) -> str:
    """The function's own name, unless it collides with a fixed table."""
    name = _text(function)
    taken = {r[0].lower() for r in db.execute("SELECT name FROM sqlite_master")}
    while name.lower() in taken:
        name = "fn:" + name
    return name
