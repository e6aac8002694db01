"""textdump: rendering snapshots as debug=2-style text, and reading that text back."""
from __future__ import annotations

import pytest
from oracle import DUMPS_DIR, compare

from pytest_sideeye.snapshot.godump import dump_info, parse_dump
from pytest_sideeye.snapshot.model import (
    Container,
    CreatedBy,
    Frame,
    Goroutine,
    Process,
    Snapshot,
    Variable,
)
from pytest_sideeye.snapshot.textdump import render, render_goroutine, render_process

MINUTE = 60_000_000_000


def comparable(gs: list[Goroutine]) -> list[tuple]:
    """Everything the model and DumpInfo say about each goroutine."""
    out = []
    for g in gs:
        i = dump_info(g)
        out.append((g.to_json(), i.wait_minutes, i.locked_to_thread, i.labels, i.elided,
                    i.elided_at))
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in DUMPS_DIR.glob("parkzoo-*.txt")))
def test_round_trip_recorded_dump(name):
    """Real dump -> model -> text -> model gives the same goroutines."""
    first = parse_dump((DUMPS_DIR / name).read_text())
    text = render(Process(pid=1, goroutines=first))
    second = parse_dump(text)
    assert len(second) == len(first) > 20
    assert comparable(second) == comparable(first)
    assert compare(second, first, ignore_running=False) == []


def test_recorded_dump_renders_like_the_runtime():
    text = render(Process(pid=1, goroutines=parse_dump(
        (DUMPS_DIR / "parkzoo-go1.24.11.debug2.txt").read_text())))
    assert "goroutine 22 [chan receive, locked to thread]:\n" in text
    assert "\n...101 frames elided...\n" in text
    assert "main.inlinedInner(...)\n\t" in text
    assert "created by main.startAll.func1 in goroutine 1\n\t/" in text


def sample_snapshot() -> Snapshot:
    parked = Goroutine(
        19, "waiting", "chan receive", wait_since_ns=1_000 * MINUTE,
        created_by=CreatedBy("main.main", "/src/main.go", 132, 1),
        frames=[
            Frame("runtime.gopark", "/go/src/runtime/proc.go", 435, pc=0x43d2ee),
            Frame("main.settleInner", "/src/main.go", 40, pc=0x4a1100, inlined=True),
            Frame("main.settle", "/src/main.go", 51, pc=0x4a1122, variables=[
                Variable("n", "int", 42),
                Variable("name", "string", "a \"quoted\"\nline"),
                Variable("items", "[]int", [1, 2, 3], truncated=True),
                Variable("cfg", "*main.Config", {"Port": 8080, "Tags": {"a": "b"}}),
                Variable("gone", "int", None, available=False),
                Variable("bad", "*main.T", None, error="bad pointer 0x10"),
                Variable("fn", "func(int) error", None),
            ]),
        ])
    running = Goroutine(5, "running", thread=4711, frames=[
        Frame("main.spin", "/src/main.go", 70, pc=0x4a2000)])
    cut = Goroutine(6, "waiting", "select", truncated="depth limit",
                    frames=[Frame("main.deep", "/src/main.go", 80, pc=0x4a3000)])
    p1 = Process(1234, exe="/app/server", go_version="go1.24.11",
                 container=Container("0123456789abcdef0123", "svc-api", "sideeye/api:test"),
                 pause_ns=840_000, goroutines=[parked, running, cut])
    p2 = Process(99, exe="/app/worker", error="process exited during the snapshot",
                 notes=["2 goroutines changed while reading"],
                 goroutines=[Goroutine(1, "syscall", wait_since_ns=1_003 * MINUTE)])
    return Snapshot([p1, p2], taken_at="2026-11-26T10:00:00.000Z")


def test_render_snapshot_layout():
    text = render(sample_snapshot(), now_monotonic_ns=1_003 * MINUTE + 5)
    lines = text.splitlines()
    assert lines[0] == ("# pid 1234 exe=/app/server go=go1.24.11 container=svc-api (0123456789ab) "
                        "image=sideeye/api:test pause=0.840ms goroutines=3")
    assert "goroutine 19 [chan receive, 3 minutes]:" in lines
    i = lines.index("main.settle(...)")
    assert lines[i + 1] == "\t/src/main.go:51 pc=0x4a1122"
    assert lines[i + 2] == "\t\tn (int) = 42"
    assert lines[i + 3] == '\t\tname (string) = "a \\"quoted\\"\\nline"'
    assert lines[i + 4] == "\t\titems ([]int) = [1,2,3] ...(truncated)"
    assert lines[i + 5] == '\t\tcfg (*main.Config) = {"Port":8080,"Tags":{"a":"b"}}'
    assert lines[i + 6] == "\t\tgone (int) = <unavailable>"
    assert lines[i + 7] == "\t\tbad (*main.T) = <error: bad pointer 0x10>"
    # inlined frames print like the runtime's: "(...)" and no offset or pc
    assert lines[lines.index("main.settleInner(...)") + 1] == "\t/src/main.go:40"
    assert lines[i + 9:i + 11] == ["created by main.main in goroutine 1", "\t/src/main.go:132"]
    assert "goroutine 5 [running, thread 4711]:" in lines
    assert lines[lines.index("main.spin(...)") + 1] == "\t/src/main.go:70 pc=0x4a2000"
    assert "...truncated: depth limit..." in lines
    # the second process: its header, error and notes, and a syscall with minutes
    j = lines.index("# pid 99 exe=/app/worker goroutines=1")
    assert lines[j + 1:j + 3] == ["# error: process exited during the snapshot",
                                  "# note: 2 goroutines changed while reading"]
    assert "goroutine 1 [syscall]:" in lines  # blocked for 0 whole minutes: not shown


def test_render_round_trip_with_variables():
    for p in sample_snapshot().processes:
        back = parse_dump(render_process(p))
        # wait_since_ns is a clock reading: the text keeps only the whole minutes.
        # An inlined frame's pc is its physical frame's; the text shows it there only.
        for g in p.goroutines:
            g.wait_since_ns = None
            for f in g.frames:
                f.pc = 0 if f.inlined else f.pc
        assert [g.to_json() for g in back] == [g.to_json() for g in p.goroutines]


@pytest.mark.parametrize("blocked_ns, shown", [
    (59_999_999_999, None), (MINUTE, "1 minutes"), (125 * MINUTE + 7, "125 minutes")])
def test_minutes_from_monotonic_clock(blocked_ns, shown):
    now = 10_000 * MINUTE
    g = Goroutine(7, "waiting", "sleep", wait_since_ns=now - blocked_ns)
    header = render_goroutine(g, now_monotonic_ns=now).splitlines()[0]
    assert header == (f"goroutine 7 [sleep, {shown}]:" if shown else "goroutine 7 [sleep]:")


def test_minutes_need_a_clock_or_a_parsed_dump():
    g = Goroutine(7, "waiting", "sleep", wait_since_ns=5)
    assert render_goroutine(g).startswith("goroutine 7 [sleep]:")  # no clock: unknown
    g.wait_since_ns = 0  # the runtime's "not known yet"
    assert render_goroutine(g, now_monotonic_ns=100 * MINUTE).startswith("goroutine 7 [sleep]:")
    (parsed,) = parse_dump("goroutine 7 [sleep, 4 minutes]:\ntime.Sleep(0x1)\n\t/t.go:1 +0x1\n")
    assert render_goroutine(parsed).startswith("goroutine 7 [sleep, 4 minutes]:")
    running = Goroutine(8, "running", wait_since_ns=1)
    assert render_goroutine(running, now_monotonic_ns=100 * MINUTE).startswith("goroutine 8 [running]:")


def test_statuses_and_unavailable_stack():
    g = Goroutine(3, "leaked", "chan send")
    assert render_goroutine(g).startswith("goroutine 3 [chan send (leaked)]:")
    g = Goroutine(4, "running", truncated="stack unavailable (running on another thread)")
    text = render_goroutine(g)
    assert "\tgoroutine running on other thread; stack unavailable\n" in text
    (back,) = parse_dump(text)
    assert back.truncated == g.truncated and back.status == "running"


def test_render_accepts_process_and_lists():
    snap = sample_snapshot()
    assert render(snap.processes[0]) == render_process(snap.processes[0])
    assert render(snap.processes) == render(snap)
    assert render(Snapshot()) == ""


def test_minutes_from_the_process_clock():
    g = Goroutine(7, "waiting", "select", wait_since_ns=1_000 * MINUTE)
    p = Process(1, goroutines=[g])
    p.monotonic_ns = 1_007 * MINUTE + 1  # the engine's clock reading at the pause
    assert "goroutine 7 [select, 7 minutes]:" in render(p)
    assert "goroutine 7 [select, 2 minutes]:" in render(p, now_monotonic_ns=1_002 * MINUTE)


# What a target's string may hold to act on the reader's terminal or reorder the line:
# an escape sequence, C1's one-byte CSI, DEL, a bidi override and isolate, a separator.
HOSTILE = "ok\x1b[31mred\x9b2J\x7f\u202eevil\u2066x\u2069\u2028end\ufeff"


def test_text_form_escapes_what_a_terminal_would_act_on():
    """`sideeye snapshot --text` printed a captured string's bidi override and C1/DEL
    controls raw (JSON escapes only C0): each is now a \\uXXXX escape, so the line shows
    every character and its JSON still reads back exactly."""
    from pytest_sideeye.snapshot.links import Endpoint, Link
    g = Goroutine(7, "waiting", "chan receive", frames=[
        Frame("main.handle", "/src/main.go", 9, pc=0x4a1000, variables=[
            Variable("who", "string", HOSTILE), Variable("m", "map[string]string",
                                                         {HOSTILE: HOSTILE})])])
    snap = Snapshot([Process(1, goroutines=[g])], links=[
        Link("http", Endpoint(1, 7), None, "10.0.0.1:1", "10.0.0.2:80", method="GET",
             path="/x\u202e?y")])
    text = render(snap)
    for line in text.splitlines():
        assert line.replace("\t", "").isprintable(), repr(line)
    who = next(line for line in text.splitlines() if line.startswith("\t\twho "))
    assert who == ('\t\twho (string) = "ok\\u001b[31mred\\u009b2J\\u007f\\u202eevil'
                   '\\u2066x\\u2069\\u2028end\\ufeff"')
    [back] = parse_dump(text)
    assert back.frames[0].variables[0].value == HOSTILE
    assert back.frames[0].variables[1].value == {HOSTILE: HOSTILE}
    assert "GET /x\\u202e?y" in text
