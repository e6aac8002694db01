"""godump: parsing Go's own goroutine dumps (recorded from parkzoo and hand-written
variants), and the oracle comparison built on it."""
from __future__ import annotations

import copy
import random
import re

import pytest
from oracle import (
    DUMPS_DIR,
    compare,
    oracle_shows_runtime_frames,
    stable_goroutines,
    visible_frames,
)
from oracle import PARKZOO_PARKED as PARKED
from oracle import parkzoo_reason as expected_reason
from support import GO_VERSIONS, GOAPPS

from pytest_sideeye.snapshot.godump import dump_info, parse_dump, parse_dump_process, parse_header
from pytest_sideeye.snapshot.model import CreatedBy, Frame, Goroutine

PARKZOO_SRC = GOAPPS / "parkzoo" / "main.go"
KINDS = ("debug2", "sigquit")

def recorded(version: str, kind: str) -> str:
    return (DUMPS_DIR / f"parkzoo-go{version}.{kind}.txt").read_text()


def source_line(pattern: str) -> int:
    """1-based line of the first parkzoo source line matching `pattern`."""
    for n, line in enumerate(PARKZOO_SRC.read_text().splitlines(), 1):
        if re.search(pattern, line):
            return n
    raise AssertionError(f"{pattern!r} not in {PARKZOO_SRC}")


def goroutine_in(gs: list[Goroutine], function: str) -> Goroutine:
    found = [g for g in gs if any(f.function == function for f in g.frames)]
    assert len(found) == 1, f"{len(found)} goroutines in {function}"
    return found[0]


@pytest.fixture(params=[(v, k) for v in GO_VERSIONS for k in KINDS], ids=lambda p: f"go{p[0]}-{p[1]}")
def dump(request):
    version, kind = request.param
    return version, kind, parse_dump(recorded(version, kind))


# --- recorded parkzoo dumps ------------------------------------------------------------

def test_every_park_kind_has_its_wait_reason(dump):
    version, _, gs = dump
    for function in PARKED:
        g = goroutine_in(gs, function)
        assert (g.status, g.wait_reason) == ("waiting", expected_reason(function, version)), function


def test_wait_reason_counts(dump):
    version, _, gs = dump
    mains = [g for g in gs if any(f.function.startswith("main.") for f in g.frames)]
    counts: dict[str, int] = {}
    for g in mains:
        counts[g.wait_reason or g.status] = counts.get(g.wait_reason or g.status, 0) + 1
    # main.main and the pprof server's accept loop (main.serveHTTP) are parked too.
    assert counts["chan receive"] == 10 + 1
    assert counts["IO wait"] == 3 + 1
    assert counts["syscall"] == 1
    assert counts.get("running", 0) + counts.get("runnable", 0) == 2  # the spinners


def test_syscall_goroutine_is_in_syscall_read(dump):
    _, _, gs = dump
    g = goroutine_in(gs, "main.parkSyscall")
    assert g.status == "syscall" and g.wait_reason == ""
    assert any(f.function == "syscall.Read" for f in g.frames)


def test_spinners(dump):
    _, _, gs = dump
    spinners = [g for g in gs if any(f.function == "main.spinBusy" for f in g.frames)]
    assert len(spinners) == 2
    assert all(g.status in ("running", "runnable") for g in spinners)


def test_locked_to_thread(dump):
    _, _, gs = dump
    locked = [g for g in gs if dump_info(g).locked_to_thread]
    assert [f.function for g in locked for f in g.frames if f.function.startswith("main.")] == \
        ["main.parkLockedThread"]


def test_recursion_depth_200_with_elided_frames(dump):
    _, _, gs = dump
    g = goroutine_in(gs, "main.parkDeep")
    info = dump_info(g)
    # The runtime prints the innermost 50 and outermost 50 frames around the elision.
    assert info.elided_at == 50 and len(g.frames) == 100
    assert g.truncated == f"{info.elided} frames elided"
    printed = sum(f.function == "main.recurseDown" for f in g.frames)
    assert printed + info.elided == 200
    assert g.frames[-1].function in ("main.parkDeep", "runtime.goexit")


def test_inlined_frames(dump):
    _, _, gs = dump
    g = goroutine_in(gs, "main.parkInlined")
    frames = {f.function: f for f in g.frames}
    assert frames["main.inlinedInner"].inlined and frames["main.inlinedOuter"].inlined
    assert not frames["main.parkInlined"].inlined
    assert frames["main.inlinedInner"].line == source_line(r"^\treturn <-ch$")
    names = [f.function for f in g.frames]
    assert names.index("main.inlinedInner") + 1 == names.index("main.inlinedOuter")


def test_created_by_lines(dump):
    _, _, gs = dump
    g = goroutine_in(gs, "main.parkChanSend")
    assert g.created_by.function == "main.startAll.func1"
    assert g.created_by.goroutine == 1
    assert g.created_by.file.endswith("fixtures/goapps/parkzoo/main.go")
    assert g.created_by.line == source_line(r"^\t\tgo f\(\)$")
    closure = goroutine_in(gs, "main.startClosures.func2.1")
    assert (closure.created_by.function, closure.created_by.line) == \
        ("main.startClosures", source_line(r"closureHook = func") - 1)
    assert goroutine_in(gs, "main.(*Parker).WaitPointer").created_by.function == "main.startMethods"
    main = next(g for g in gs if g.id == 1)
    assert main.created_by is None  # the runtime never prints it for goroutine 1


def test_frames_have_function_file_line(dump):
    _, _, gs = dump
    g = goroutine_in(gs, "main.parkChanSend")
    top_main = next(f for f in g.frames if f.function.startswith("main."))
    assert top_main.file.endswith("parkzoo/main.go")
    assert top_main.line == source_line(r"^\tchanSendCh <- 1$")
    assert not any("(" in f.function and f.function.endswith(")") for f in g.frames)


def test_sigquit_specifics():
    for version in GO_VERSIONS:
        gs = parse_dump(recorded(version, "sigquit"))
        # Level 2: runtime frames and goroutines are shown, headers carry gp=/m=.
        assert oracle_shows_runtime_frames(gs)
        assert any(g.wait_reason == "GC sweep wait" for g in gs)
        # gp=/m= headers at level 2 arrived after Go 1.21.
        with_gp = [dump_info(g).header.split()[2].startswith("gp=") for g in gs]
        assert all(with_gp) if version != "1.21.13" else not any(with_gp)
        g0 = [g for g in gs if g.id == 0]
        assert len(g0) <= 1 and all(dump_info(g).m is not None for g in g0)
        assert all(f.function != "rax" for g in gs for f in g.frames)  # register dump skipped


def test_debug2_hides_runtime():
    for version in GO_VERSIONS:
        gs = parse_dump(recorded(version, "debug2"))
        assert not oracle_shows_runtime_frames(gs)
        assert not any(g.wait_reason == "GC sweep wait" for g in gs)
        writer = [g for g in gs if g.status == "running"]
        assert any(f.function == "runtime/pprof.writeGoroutineStacks" for g in writer for f in g.frames)


def test_parse_dump_process():
    p = parse_dump_process(recorded("1.24.11", "debug2"), pid=4242, go_version="go1.24.11")
    assert p.pid == 4242 and p.go_version == "go1.24.11" and len(p.goroutines) == 29


# --- header and body variants --------------------------------------------------------

@pytest.mark.parametrize("line, status, reason, extra", [
    ("goroutine 19 [chan receive, 3 minutes]:", "waiting", "chan receive", {"wait_minutes": 3}),
    ("goroutine 7 [select, locked to thread]:", "waiting", "select", {"locked_to_thread": True}),
    ("goroutine 8 [select, 12 minutes, locked to thread]:", "waiting", "select",
     {"wait_minutes": 12, "locked_to_thread": True}),
    ("goroutine 1 [running]:", "running", "", {}),
    ("goroutine 2 [runnable]:", "runnable", "", {}),
    ("goroutine 3 [syscall, 5 minutes]:", "syscall", "", {"wait_minutes": 5}),
    ("goroutine 4 [sync.Mutex.Lock]:", "waiting", "sync.Mutex.Lock", {}),
    ("goroutine 5 [IO wait]:", "waiting", "IO wait", {}),
    ("goroutine 6 [sleep]:", "waiting", "sleep", {}),
    ("goroutine 9 [semacquire]:", "waiting", "semacquire", {}),
    ("goroutine 10 [waiting]:", "waiting", "", {}),
    ("goroutine 11 [chan receive (nil chan)]:", "waiting", "chan receive (nil chan)", {}),
    ("goroutine 12 [GC worker (idle)]:", "waiting", "GC worker (idle)", {}),
    ("goroutine 13 [idle]:", "idle", "", {}),
    ("goroutine 14 [copystack]:", "copystack", "", {}),
    ("goroutine 15 [preempted]:", "preempted", "", {}),
    ("goroutine 16 [chan send (scan)]:", "waiting", "chan send", {"scan": True}),
    ("goroutine 17 [chan receive (leaked)]:", "leaked", "chan receive", {}),
    ("goroutine 18 [select (durable), synctest bubble 3]:", "waiting", "select (durable)", {}),
    ("goroutine 20 [sleep (durable)]:", "waiting", "sleep", {}),
    ("goroutine 21 gp=0xc000007c00 m=nil [chan receive]:", "waiting", "chan receive", {"m": None}),
    ("goroutine 22 gp=0x28ce6907f4a0 m=3 mp=0xa4bd60 [running]:", "running", "", {"m": 3}),
    ("goroutine 23 [chan receive] {user: alice, \"req id\": \"a b\"}:", "waiting", "chan receive",
     {"labels": "{user: alice, \"req id\": \"a b\"}"}),
])
def test_header_variants(line, status, reason, extra):
    g = parse_header(line)
    assert (g.status, g.wait_reason) == (status, reason)
    info = dump_info(g)
    for key, value in extra.items():
        assert getattr(info, key) == value, key


def test_old_created_by_form_and_additional_frames_elided():
    text = (
        "goroutine 5 [chan receive]:\n"
        "main.worker(0xc000010000)\n"
        "\t/src/main.go:20 +0x2a\n"
        "...additional frames elided...\n"
        "created by main.main\n"
        "\t/src/main.go:10 +0x44\n")
    (g,) = parse_dump(text)
    assert g.created_by == CreatedBy("main.main", "/src/main.go", 10, None)
    assert g.truncated == "additional frames elided"
    assert g.frames == [Frame("main.worker", "/src/main.go", 20)]


def test_running_on_other_thread():
    text = ("goroutine 9 [running]:\n"
            "\tgoroutine running on other thread; stack unavailable\n"
            "created by main.main in goroutine 1\n"
            "\t/src/main.go:30 +0x1d\n")
    (g,) = parse_dump(text)
    assert g.status == "running" and g.frames == []
    assert g.truncated.startswith("stack unavailable")
    assert g.created_by == CreatedBy("main.main", "/src/main.go", 30, 1)


def test_ancestors_are_kept_apart():
    text = ("goroutine 12 [chan receive]:\n"
            "main.leaf()\n"
            "\t/src/main.go:5 +0x10\n"
            "created by main.spawner in goroutine 7\n"
            "\t/src/main.go:16 +0x44\n"
            "[originating from goroutine 7]:\n"
            "main.spawner(...)\n"
            "\t/src/main.go:15 +0x3c\n"
            "...additional frames elided...\n"
            "created by main.main\n"
            "\t/src/main.go:25 +0x20\n")
    (g,) = parse_dump(text)
    assert [f.function for f in g.frames] == ["main.leaf"]
    (anc,) = dump_info(g).ancestors
    assert anc.goroutine == 7 and [f.function for f in anc.frames] == ["main.spawner"]
    assert not anc.frames[0].inlined  # "(...)" with an offset is an ancestor frame, not inlining
    assert anc.truncated and anc.created_by.function == "main.main"
    assert g.created_by == CreatedBy("main.spawner", "/src/main.go", 16, 7)


def test_panic_frame_and_fatal_runtime_stack():
    text = ("panic: boom\n\n"
            "goroutine 1 [running]:\n"
            "panic({0x4a5b60?, 0xc000012345?})\n"
            "\t/go/src/runtime/panic.go:770 +0x132\n"
            "main.main()\n"
            "\t/src/main.go:8 +0x25\n"
            "exit status 2\n\n"
            "runtime stack:\n"
            "runtime.throw({0x4a, 0x1})\n"
            "\t/go/src/runtime/panic.go:1023 +0x5c\n")
    (g,) = parse_dump(text)
    assert [f.function for f in g.frames] == ["runtime.gopanic", "main.main"]


def test_method_generic_and_receiver_names():
    text = ("goroutine 3 [chan receive]:\n"
            "main.(*Box[...]).Wait(0xc000010018)\n"
            "\t/src/main.go:9 +0x25\n"
            "main.parkGeneric[...](0xc0000a2000?)\n"
            "\t/src/main.go:12 +0x25\n"
            "main.Parker.WaitValue({{0x4d5e3f, 0x5}, 0xc0000a2060})\n"
            "\t/src/main.go:14 +0x30\n"
            "main.startAll.func2()\n"
            "\t/src/main.go:15 +0x30\n")
    (g,) = parse_dump(text)
    assert [f.function for f in g.frames] == [
        "main.(*Box[...]).Wait", "main.parkGeneric[...]", "main.Parker.WaitValue", "main.startAll.func2"]


def test_garbage_never_crashes():
    text = recorded("1.27.3", "sigquit")
    rng = random.Random(1)
    lines = text.splitlines()
    for _ in range(200):
        mutated = list(lines)
        for _ in range(20):
            i = rng.randrange(len(mutated))
            choice = rng.randrange(4)
            if choice == 0:
                mutated[i] = mutated[i][: rng.randrange(len(mutated[i]) + 1)]
            elif choice == 1:
                del mutated[i]
            elif choice == 2:
                mutated.insert(i, "".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randrange(40))))
            else:
                mutated[i], mutated[-1 - i] = mutated[-1 - i], mutated[i]
        for g in parse_dump("\n".join(mutated)):
            assert isinstance(g.id, int) and isinstance(g.frames, list)
    assert parse_dump("") == [] and parse_dump("\x00\n\tfoo:12\ncreated by x\ngoroutine x [y]:") == []


# --- the oracle comparison -------------------------------------------------------------

def test_compare_dump_with_itself(dump):
    _, _, gs = dump
    assert compare(gs, gs) == []
    assert compare(gs, gs, ignore_running=False) == []


def with_full_recursion(gs: list[Goroutine]) -> list[Goroutine]:
    """A level-2 dump with the elided recursion filled in: what the engine reports."""
    gs = copy.deepcopy(gs)
    for g in gs:
        info = dump_info(g)
        if info.elided:
            filler = [copy.deepcopy(g.frames[info.elided_at])] * info.elided
            g.frames[info.elided_at:info.elided_at] = filler
            g.truncated = None
            del g.dump_info
    return gs


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_compare_full_stacks_with_debug2(version):
    """SIGQUIT (every frame) against debug=2 of the same process: the level-1 visibility
    rules (runtime frames, go-statement wrappers) and the elision window line up."""
    ours = with_full_recursion(parse_dump(recorded(version, "sigquit")))
    oracle = parse_dump(recorded(version, "debug2"))
    assert compare(ours, oracle) == []
    deep = goroutine_in(ours, "main.parkDeep")
    assert sum(f.function == "main.recurseDown" for f in deep.frames) == 200
    assert len(visible_frames(deep.frames, deep.created_by)) == 201


def altered(version: str = "1.24.11"):
    gs = parse_dump(recorded(version, "debug2"))
    return gs, copy.deepcopy(gs)


def test_compare_detects_missing_goroutine():
    oracle, ours = altered()
    victim = goroutine_in(ours, "main.parkCond")
    ours.remove(victim)
    (d,) = compare(ours, oracle)
    assert f"goroutine {victim.id} [sync.Cond.Wait]" in d and "missing" in d


def test_compare_detects_status_and_wait_reason():
    oracle, ours = altered()
    goroutine_in(ours, "main.parkSleep").wait_reason = "chan receive"
    goroutine_in(ours, "main.parkSyscall").status = "waiting"
    diffs = compare(ours, oracle)
    assert len(diffs) == 2
    assert any("wait reason 'chan receive', oracle 'sleep'" in d for d in diffs)
    assert any("status 'waiting', oracle 'syscall'" in d for d in diffs)


@pytest.mark.parametrize("change, expect", [
    (lambda g: setattr(g.frames[0], "function", "main.elsewhere"), "frame 0: main.elsewhere"),
    (lambda g: setattr(g.frames[0], "line", 1), "frame 0: main.inlinedInner main.go:1"),
    (lambda g: setattr(g.frames[0], "file", "/x/other.go"), "other.go"),
    (lambda g: setattr(g.frames[0], "inlined", False), "oracle main.inlinedInner main.go"),
    (lambda g: g.frames.pop(1), "2 frames, oracle 3"),
    (lambda g: g.frames.reverse(), "frame 0: main.parkInlined"),
    (lambda g: g.frames.append(Frame("main.extra", "/x.go", 1)), "4 frames, oracle 3"),
])
def test_compare_detects_frame_changes(change, expect):
    oracle, ours = altered()
    change(goroutine_in(ours, "main.parkInlined"))
    diffs = compare(ours, oracle)
    assert diffs and all("in main.inlinedInner" in d for d in diffs)
    assert any(expect in d for d in diffs), diffs


@pytest.mark.parametrize("change, expect", [
    (lambda c: setattr(c, "function", "main.other"), "created by main.other"),
    (lambda c: setattr(c, "line", 3), "main.go:3, oracle"),
    (lambda c: setattr(c, "goroutine", 9), "created in goroutine 9, oracle 1"),
])
def test_compare_detects_created_by_changes(change, expect):
    oracle, ours = altered()
    change(goroutine_in(ours, "main.parkSelect").created_by)
    (d,) = compare(ours, oracle)
    assert expect in d


def test_compare_detects_missing_created_by_and_recursion_cut():
    oracle, ours = altered()
    goroutine_in(ours, "main.parkMutex").created_by = None
    deep = goroutine_in(ours, "main.parkDeep")
    del deep.dump_info           # as the engine would report it: no elision
    del deep.frames[60:]         # ... but a stack cut short
    goroutine_in(oracle, "main.parkSleep").created_by = None
    diffs = compare(ours, oracle)
    assert any("created by missing, oracle main.startAll.func1" in d for d in diffs)
    assert any("[sleep] in time.Sleep: created by main.startAll.func1, oracle none" in d for d in diffs)
    assert any("60 frames, oracle 201 (with 101 elided)" in d for d in diffs)


def test_compare_ignores_running_unless_asked():
    oracle, ours = altered()
    for g in ours:
        if g.status in ("running", "runnable"):
            g.frames = []
    assert compare(ours, oracle) == []
    assert compare(ours, oracle, ignore_running=False)


def test_stable_goroutines():
    before = parse_dump(recorded("1.24.11", "debug2"))
    after = copy.deepcopy(before)
    goroutine_in(after, "main.parkSleep").frames[0].line += 1
    after = [g for g in after if not any(f.function == "main.parkCond" for f in g.frames)]
    stable = stable_goroutines(before, after)
    assert len(stable) == len(before) - 2
    assert not any(f.function in ("main.parkSleep", "main.parkCond") for g in stable for f in g.frames)


def test_compare_level2_counts_wrappers_but_not_goexit():
    """Against a level-2 dump every frame counts: the snapshot keeps go-statement and
    <autogenerated> wrappers (marked), so leaving one out is a difference; runtime.goexit,
    which ours does not list, is not."""
    oracle = parse_dump(recorded("1.27.3", "sigquit"))
    ours = copy.deepcopy(oracle)
    for g in ours:
        g.frames = [f for f in g.frames if f.function != "runtime.goexit"]
    assert compare(ours, oracle) == []
    without_wrappers = copy.deepcopy(ours)
    for g in without_wrappers:
        g.frames = [f for f in g.frames if ".gowrap" not in f.function]
    assert any("gowrap" in d for d in compare(without_wrappers, oracle))
    goroutine_in(ours, "main.parkSelect").frames.pop(0)  # nor is runtime.gopark plumbing
    assert len(compare(ours, oracle)) >= 1


def test_complete_compare_fails_extra_and_duplicate_goroutines():
    oracle = parse_dump(recorded("1.27.3", "sigquit"))
    ours = copy.deepcopy(oracle)
    for g in ours:
        g.frames = [f for f in g.frames if f.function != "runtime.goexit"]
    assert compare(ours, oracle, complete=True) == []
    extra = copy.deepcopy(ours[-1])
    extra.id = 99999
    assert compare(ours + [extra], oracle, complete=True) == \
        [f"goroutine 99999 [{extra.wait_reason or extra.status}] in "
         f"{next(f.function for f in extra.frames if not f.function.startswith('runtime.'))}"
         ": only in the snapshot", f"{len(ours)} goroutines in the snapshot, oracle {len(ours) - 1}"]
    assert compare(ours + [copy.deepcopy(ours[-1])], oracle) == \
        [f"goroutine {ours[-1].id} twice in the snapshot"]


def test_complete_compare_requires_unsettled_goroutines_and_the_count():
    """Running, runnable and preempted goroutines move between the two moments: their
    status and frames are not compared, but a whole dump still lists them, so a snapshot
    that drops one differs."""
    oracle = parse_dump(recorded("1.27.3", "sigquit"))
    ours = [g for g in copy.deepcopy(oracle) if g.id != 0]
    unsettled = [g for g in ours if g.status in ("running", "runnable")]
    assert len(unsettled) >= 2
    for g in unsettled:
        g.status, g.frames = "waiting", []   # moved on: not a difference
    assert compare(ours, oracle, complete=True) == []
    dropped = [g for g in ours if g.id != unsettled[0].id]
    assert compare(dropped, oracle, complete=True) == \
        [f"{len(dropped)} goroutines in the snapshot, oracle {len(ours)}",
         f"goroutine {unsettled[0].id} [runnable] in main.spinBusy: missing from the snapshot"]
    assert compare(dropped, oracle) == []   # a partial oracle (debug=2) never requires them

