"""Snapshots the report tests share (tests/report and tests/browser): one recorded from a
real Go 1.24 program (data/snapshots/, converted from its GOTRACEBACK=all dump), the
synthetic ones of benchmarks/report_bench.py, and a hostile one whose every captured
string tries to break out of the page."""
from __future__ import annotations

import importlib.util
import json

from support import DATA, ROOT

from pytest_sideeye.snapshot import (
    Container,
    CreatedBy,
    Endpoint,
    Frame,
    Goroutine,
    Link,
    Process,
    Snapshot,
    Variable,
)

RECORDED = DATA / "snapshots" / "go1.24-worker-hang.json"
RECORDED_LINKS = DATA / "snapshots" / "go1.24-peers-links.json"


def load_bench():
    """benchmarks/report_bench.py as a module (its synthetic_snapshot builds test data)."""
    spec = importlib.util.spec_from_file_location("report_bench",
                                                  ROOT / "benchmarks" / "report_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recorded() -> Snapshot:
    return Snapshot.load(RECORDED)


def recorded_links() -> Snapshot:
    """Two processes linked by HTTP and TCP (tests/data/snapshots/README.md)."""
    return Snapshot.load(RECORDED_LINKS)


# --------------------------------------------------------------------------- hostile data

XSS_SCRIPT = '<script>window.__pwned = 1; document.title = "pwned"</script>'
XSS_ATTR = '"><img src=x onerror="window.__pwned=2;alert(2)">'
XSS_SQUOTE = "'><svg onload=alert(3)>"
END_SCRIPT = "</script><script>window.__pwned=4;alert(4)</script><!--"
COMMENT = "<!-- <script>alert(5)</script> -->"
LINE_SEPS = "line\u2028sep\u2029para"
NUL = "nul\x00byte"
BAD_UTF8 = "bad\udcffbytes\udc80"        # how Python carries undecodable bytes
REPLACED = "repl\ufffdchar"
HOSTILE_FUNC = 'main.(*T[<script>alert(6)</script>]).Run"x'
HOSTILE_TITLE = "tests/test_x.py::test_hostile[<script>window.__pwned=7</script>]"


def hostile_snapshot() -> Snapshot:
    values = {"A": XSS_SCRIPT, "B": [XSS_ATTR, XSS_SQUOTE], "C": {"D": END_SCRIPT},
              "E": LINE_SEPS, "F": NUL, "G": BAD_UTF8, "H": REPLACED}
    frames = [
        Frame("runtime.gopark", "/usr/local/go/src/runtime/proc.go", 435),
        Frame("runtime.chanrecv1", "/usr/local/go/src/runtime/chan.go", 506),
        Frame(HOSTILE_FUNC, "/src/" + XSS_ATTR + ".go", 12, inlined=True),
        Frame("main.handle", "/src/main.go", 40, variables=[
            Variable("req", "main.Req", values),
            Variable("m", "map[string]string", {XSS_ATTR: END_SCRIPT, "k": COMMENT}),
            Variable("s", "string", END_SCRIPT),
            Variable("nul", "string", NUL),
            Variable("bad", "[]uint8", BAD_UTF8, truncated=True),
            Variable("gone", "int", None, available=False),
            Variable("oops", "*main.T", None, error=XSS_SCRIPT),
        ]),
    ]
    g = Goroutine(7, "waiting", "chan receive" + XSS_SQUOTE, None,
                  CreatedBy("main." + XSS_SCRIPT, "/src/" + COMMENT, 3, 1), frames)
    p = Process(31337, "/app/" + XSS_ATTR, "go1.24.11" + XSS_SQUOTE,
                Container("c0ffee" + XSS_ATTR, "name" + XSS_SCRIPT, "img" + END_SCRIPT),
                "svc" + XSS_ATTR, 900_000, {}, "error: " + XSS_SCRIPT, [COMMENT, NUL],
                [g], "log line " + END_SCRIPT + "\n" + COMMENT + "\n" + NUL + " " + BAD_UTF8 + "\n")
    links = [Link("http", None, Endpoint(31337, 7), client_addr=XSS_ATTR,
                  server_addr="10.0.0.1:80", method=XSS_SQUOTE, path="/x?" + END_SCRIPT),
             Link("user", Endpoint(31337, 7), Endpoint(31337, 7), value=json.dumps(XSS_SCRIPT))]
    return Snapshot([p], "2026-11-26T10:40:00Z" + XSS_SQUOTE,
                    {"nodeid": HOSTILE_TITLE, "phase": "call", "outcome": "failed" + XSS_ATTR,
                     "message": "AssertionError: " + XSS_SCRIPT + "\n" + END_SCRIPT}, links)
