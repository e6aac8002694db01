"""capture.py: specs, plan validation before any pause, and variables captured from the
parked frames of varzoo by the real engine (BPF reads in rounds) on Go 1.21/1.24/1.27."""
from __future__ import annotations

import json

import pytest
from support import GO_VERSIONS
from varzoo import start_varzoo

from pytest_sideeye import capture
from pytest_sideeye.binary import DebugInfo, Piece, analyze
from pytest_sideeye.binary.dwarf import INDEX_CACHE
from pytest_sideeye.errors import CaptureSpecError

# --- specs --------------------------------------------------------------------------------

def test_cli_and_dict_forms_agree():
    cli = capture.parse_specs(["main.settle:o,o.ID,attempt", "main.lookup:m[\"a,b\"], keys[0]"])
    d = capture.parse_specs({"main.settle": ["o", "o.ID", "attempt"],
                             "main.lookup": ['m["a,b"]', "keys[0]"]})
    assert cli == d
    assert [e.text for e in cli.functions["main.lookup"]] == ['m["a,b"]', "keys[0]"]


def test_repeated_specs_merge_without_duplicates():
    s = capture.parse_specs(["main.settle:o", "main.settle:o,attempt"])
    assert [e.text for e in s.functions["main.settle"]] == ["o", "attempt"]


def test_expression_steps():
    e = capture.parse_expr('*o.Customer.Tags[1]')
    assert e.root == "o"
    assert [(s.op, s.arg) for s in e.steps] == [("field", "Customer"), ("field", "Tags"),
                                                ("index", 1), ("deref", None)]
    assert capture.parse_expr('m["k\\"ey"]').steps[0].arg == 'k"ey'
    assert capture.parse_expr("m[-3]").steps[0].arg == -3
    e = capture.parse_expr("c.rwc.(*net.TCPConn).conn.(func(int) error)")
    assert [(s.op, s.arg) for s in e.steps] == [("field", "rwc"), ("assert", "*net.TCPConn"),
                                                ("field", "conn"), ("assert", "func(int) error")]


@pytest.mark.parametrize("bad", ["main.settle", "main.settle:", ":o", "main.settle:o..ID",
                                 "main.settle:o[", "main.settle:1abc", "main.settle:m[x]",
                                 "main.settle:o.ID)", "main.settle:o.()", "main.settle:o.(*T"])
def test_bad_specs_are_one_line_errors(bad):
    with pytest.raises(CaptureSpecError) as e:
        capture.parse_specs([bad])
    assert "\n" not in str(e.value) and str(e.value)


# --- plan validation (before any pause) -------------------------------------------------

@pytest.fixture(scope="module")
def varzoo_124(go_build):
    return str(go_build("varzoo", "1.24.11"))


@pytest.mark.parametrize("spec, words", [
    ({"main.nosuch": ["x"]}, ["unknown function", "main.nosuch"]),
    ({"main.settle": ["nosuch"]}, ["unknown variable", "nosuch", "attempt"]),
    ({"main.settle": ["o.Bogus"]}, ["main.Order has no field", "Bogus"]),
    ({"main.settle": ["attempt[0]"]}, ["cannot index"]),
    ({"main.settle": ["*attempt"]}, ["cannot dereference"]),
    ({"main.lookup": ["m[1]"]}, ["bad map key"]),
    ({"main.settle": ["items[\"x\"]"]}, ["needs an integer"]),
])
def test_plan_rejects_bad_specs(varzoo_124, spec, words):
    with pytest.raises(CaptureSpecError) as e:
        capture.make_plan(varzoo_124, spec)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_plan_accepts_paths_through_interfaces_and_inlined_functions(varzoo_124):
    plan = capture.make_plan(varzoo_124, {"main.lookup": ["e.Anything", "err.Msg", 'm["k"]'],
                                          "main.parkInlined": ["tag", "n"],
                                          "main.settle": ["o.Items[0].SKU", "*o"]})
    assert plan.functions == {"main.lookup", "main.parkInlined", "main.settle"}
    assert plan.wants("main.settle") and not plan.wants("main.main")


def test_frame_without_the_function_gives_unavailable_not_an_exception(varzoo_124):
    plan = capture.make_plan(varzoo_124, {"main.parkInlined": ["tag"]})
    entry = plan.debug.function_entry("main.settle")
    job = plan.start_frame("main.parkInlined", entry + 4, 0xc000100000, is_call_site=False)
    assert job.requests() == []
    [v] = job.variables()
    assert v.available is False and v.value is None and "not at pc" in v.error


def test_unreadable_frame_gives_errors_not_exceptions(varzoo_124):
    plan = capture.make_plan(varzoo_124, {"main.settle": ["o", "o.Customer.Name", "attempt"]})
    scope = plan.debug.concrete_scope("main.settle")
    lo, hi = scope.ranges[0]
    # A call-site PC deep in the body and a CFA in unmapped memory.
    job = plan.start_frame("main.settle", hi - 8, 0x10000, is_call_site=True)
    rounds = capture.run_rounds([job], lambda reqs: {r: None for r in reqs})
    assert rounds >= 1
    for v in job.variables():
        assert v.value is None or "$cut" in json.dumps(v.value) or v.error
        assert v.error is None or "\n" not in v.error


# --- end to end through the engine ------------------------------------------------------

SPEC = {
    "main.settle": ["o", "o.ID", "o.Customer.Name", "*o", "o.Items[0]", "o.Items[0].SKU",
                    "attempt", "label", "items", "o.Customer.Tags[1]"],
    "main.lookup": ["m", 'm["two"]', "keys", "e", "err", "err.Msg", "e.SKU", 'm["absent"]'],
    "main.waitTimes": ["t", "d", "ch", "fn"],
    "main.spin": ["n", "depth"],
    "main.parkInlined": ["tag", "n"],
    "varzoo/parts.Hold": ["ch", "n"],
}


BUDGETS = ("raised", "default")
BUDGET_NOTE = "capture stopped at its pause budget"


@pytest.fixture(scope="module", params=[(v, b) for v in GO_VERSIONS for b in BUDGETS],
                ids=lambda p: f"{p[0]}-{p[1]}-budget")
def captured(request, go_build, needs_root):
    """varzoo's parked frames captured, at the suite's raised pause budget and at the
    product's default (10 ms; measured here: 1.5-6.7 ms of capture for this spec). At the
    default a loaded machine may still hit the budget: what it cuts is marked, never wrong
    (test_capture_stops_at_its_pause_budget), but these tests check complete values, so a
    snapshot that hit it is taken again, at most twice more."""
    from pytest_sideeye.engine import take as engine
    version, budget = request.param
    exe = str(go_build("varzoo", version))
    mp = pytest.MonkeyPatch()
    if budget == "default":
        mp.delenv("SIDEEYE_CAPTURE_PAUSE_MS", raising=False)
    try:
        for _attempt in range(3):
            snap, expected, rounds, proc = _capture_varzoo(engine, exe, mp)
            if budget == "raised" or not any(BUDGET_NOTE in n for n in proc.notes):
                break
        else:
            pytest.fail(f"three snapshots hit the default capture budget: {proc.notes}")
    finally:
        mp.undo()
    return snap, expected, rounds, proc


def _capture_varzoo(engine, exe: str, mp: pytest.MonkeyPatch):
    p, expected = start_varzoo(exe)
    rounds: list[int] = []
    real = capture.run_rounds

    def counting(jobs, read_batch, max_rounds=8, deadline=None, **kw):  # a spy: the real runs
        n = real(jobs, read_batch, max_rounds, deadline, **kw)
        rounds.append(n)
        return n

    mp.setattr(capture, "run_rounds", counting)
    try:
        snap = engine.take_snapshot([engine.Target(p.pid)], capture=SPEC)
    finally:
        mp.setattr(capture, "run_rounds", real)
        p.kill()
        p.wait()
    proc = snap.processes[0]
    assert proc.error is None, proc.error
    return snap, expected, rounds, proc


def variables(snap, function):
    frames = [f for _g, f in snap.frames(function) if f.variables]
    assert frames, f"no captured frame of {function}"
    return frames


def by_name(frame):
    return {v.name: v for v in frame.variables}


def test_struct_pointer_fields_and_indexes(captured):
    snap, exp, _rounds, _proc = captured
    [f] = variables(snap, "main.settle")
    v = by_name(f)
    order = exp["zoo"]["Ord"]
    assert v["o"].value == order and v["o"].type == "*main.Order"
    assert v["*o"].value == order and v["*o"].type == "main.Order"
    assert v["o.ID"].value == 1001 and v["o.ID"].type == "int64"
    assert v["o.Customer.Name"].value == "Ada <Lovelace>"
    assert v["o.Customer.Tags[1]"].value == '"quoted"'
    assert v["o.Items[0]"].value == order["Items"][0]
    assert v["o.Items[0].SKU"].value == "X"
    assert v["attempt"].value == exp["settle"]["attempt"]
    assert v["label"].value == exp["settle"]["label"]
    assert v["items"].value == order["Items"]
    assert all(x.available and not x.truncated and x.error is None for x in f.variables)


def test_maps_slices_and_interfaces(captured):
    snap, exp, _rounds, _proc = captured
    [f] = variables(snap, "main.lookup")
    v = by_name(f)
    assert v["m"].value == exp["zoo"]["MS"]
    assert v['m["two"]'].value == 2
    assert v['m["absent"]'].value is None and "not in map" in v['m["absent"]'].error
    assert v["keys"].value == ["one", "two"]
    assert v["e"].type == "interface {} = main.Item"
    assert v["e"].value == exp["zoo"]["EStruct"]
    assert v["e.SKU"].value == "IFACE"
    assert v["err"].type == "error = *main.myErr"
    assert v["err"].value == exp["zoo"]["EErr"]
    assert v["err.Msg"].value == "not found"


def test_time_duration_chan_func(captured):
    snap, exp, _rounds, _proc = captured
    [f] = variables(snap, "main.waitTimes")
    v = by_name(f)
    assert v["t"].value == exp["zoo"]["T"]
    assert v["d"].value == exp["zoo"]["D"] == "1.5s"
    assert v["ch"].value == exp["channels"]["Ch"]
    assert v["fn"].value == "main.double"


def test_cycles_and_dead_variables(captured):
    snap, exp, _rounds, _proc = captured
    frames = variables(snap, "main.spin")
    live = [f for f in frames if by_name(f)["depth"].available]
    [leaf] = live
    n = by_name(leaf)["n"]
    assert n.value["Val"] == 2 and n.value["Next"]["Val"] == 1
    assert n.value["Next"]["Next"]["$cut"] == "cycle"
    # The recursive callers made a tail call: n and depth are dead at their call sites.
    dead = [f for f in frames if f is not leaf]
    assert dead
    for f in dead:
        for x in f.variables:
            assert x.available is False and x.value is None


def test_variables_of_an_inlined_frame(captured):
    snap, exp, _rounds, _proc = captured
    [f] = variables(snap, "main.parkInlined")
    v = by_name(f)
    assert v["tag"].value == exp["parkInlined"]["tag"]
    assert v["n"].value == exp["parkInlined"]["n"]


def test_capture_fits_in_few_rounds(captured):
    """The Python path's rounds ended before their limit (8), so no value was cut by it."""
    snap, _exp, rounds, proc = captured
    assert rounds and rounds[0] < 8
    cut = [(f.function, v.name) for g in snap.goroutines() for f in g.frames
           for v in f.variables if '"$cut": "rounds"' in json.dumps(v.value)]
    assert cut == []
    assert "capture" in proc.pause_parts_ns


def test_plan_is_quick_on_a_warm_cache(go_build):
    """Not a timing assertion: checks that the index cache is written and reused (the
    numbers are in the report)."""
    exe = str(go_build("varzoo", "1.27.3"))
    capture.make_plan(exe, SPEC)
    info = analyze(exe)
    assert INDEX_CACHE.path(info.build_id).is_file()
    fresh = DebugInfo(exe, build_id=info.build_id, symtab=info.symtab, types_base=0)
    assert fresh._load_index_cache() is not None


# --- location expressions and composite (DW_OP_piece) variables ------------------------

def test_location_expressions(varzoo_124):
    bi = analyze(varzoo_124).debug
    cfa = 0xc000100000
    [p] = bi.eval_location([0x91, 0x70], cfa)                 # DW_OP_fbreg -16
    assert (p.kind, p.addr) == ("mem", cfa - 16)
    [p] = bi.eval_location([0x9c], cfa)                       # DW_OP_call_frame_cfa
    assert (p.kind, p.addr) == ("mem", cfa)
    [p] = bi.eval_location([0x03] + list((0x644b60).to_bytes(8, "little")), cfa)  # DW_OP_addr
    assert (p.kind, p.addr) == ("mem", 0x644b60)
    [p] = bi.eval_location([0x50], cfa)                       # DW_OP_reg0
    assert p.kind == "unavailable"
    # ptr in RAX, len at CFA+8, cap optimised away
    ps = bi.eval_location([0x50, 0x93, 8, 0x91, 8, 0x93, 8, 0x93, 8], cfa)
    assert [(x.kind, x.addr, x.size) for x in ps] == [("unavailable", 0, 8), ("mem", cfa + 8, 8),
                                                      ("unavailable", 0, 8)]


def _job_with_pieces(zoo, function, var, pieces):
    plan = capture.make_plan(zoo.exe, {function: [var]})
    job = plan.start_frame(function, plan.debug.function_entry(function) + 1, 0x1000, is_call_site=False)
    job._locations[var] = pieces  # the composite location under test, on real memory
    capture.run_rounds([job], zoo.read_batch)
    [v] = job.variables()
    return v


def test_slice_without_its_capacity_is_still_shown(zoo):
    t, addr = zoo.field_addr("Items")
    v = _job_with_pieces(zoo, "main.settle", "items",
                         [Piece("mem", addr, 8), Piece("mem", addr + 8, 8),
                          Piece("unavailable", size=8, why="in a register")])
    assert v.available and v.value == zoo.expected["zoo"]["Items"]


def test_struct_partly_in_registers_shows_the_rest(zoo):
    t, addr = zoo.field_addr("T")   # time.Time{wall, ext, loc}
    v = _job_with_pieces(zoo, "main.waitTimes", "t",
                         [Piece("mem", addr, 8),
                          Piece("unavailable", size=8, why="in a register"),
                          Piece("mem", addr + 16, 8)])
    assert v.available and v.truncated
    assert v.value["ext"] == {"$cut": "in a register"}
    assert isinstance(v.value["wall"], int) and v.value["loc"] is None


def test_string_partly_in_registers_is_unavailable(zoo):
    t, addr = zoo.field_addr("S")
    v = _job_with_pieces(zoo, "main.settle", "label",
                         [Piece("unavailable", size=8, why="in a register"),
                          Piece("mem", addr + 8, 8)])
    assert v.available is False and v.value is None and "register" in v.error


def test_binary_without_dwarf_is_a_one_line_error(go_build):
    from pytest_sideeye.errors import MissingDebugInfo
    exe = go_build("varzoo", "1.24.11", ldflags="-w")
    with pytest.raises(MissingDebugInfo) as e:
        capture.make_plan(str(exe), {"main.settle": ["o"]})
    assert "\n" not in str(e.value) and "DWARF" in str(e.value)


def _frame_over(zoo, function, var, target_addr):
    """A (pc, cfa) at which `var` of `function` lives in a stack slot placed exactly over
    `target_addr` of the real process, so a FrameJob reads real memory there."""
    plan = capture.make_plan(zoo.exe, {function: [var]})
    info = plan.debug.function(function)
    [v] = [x for x in info.concrete.variables if x.name == var]
    for lo, hi, expr in plan.debug.location_ranges(v, info.concrete.cu_offset):
        [piece] = plan.debug.eval_location(expr, 0)
        if piece.kind == "mem" and piece.size is None:
            return plan, lo, target_addr - piece.addr
    # varzoo keeps its values live across the park precisely so that they have one: a
    # build without it means the fixture no longer tests what it should.
    pytest.fail(f"{var} never has a plain stack slot in this build of varzoo")


def test_run_rounds_follows_pointers_and_stops_at_the_round_limit(zoo):
    ord_t, ord_field = zoo.field_addr("Ord")  # the *Order stored in zoo.Ord
    plan, pc, cfa = _frame_over(zoo, "main.settle", "o", ord_field)
    plan = capture.make_plan(zoo.exe, {"main.settle": ["o", "o.Customer.Name", "*o"]})
    job = plan.start_frame("main.settle", pc, cfa, is_call_site=False)
    # slot -> Order -> Customer -> Tags array; the tag strings are literals, read from
    # the binary's file after the rounds (binary.ReadOnlyData), not from the process.
    assert capture.run_rounds([job], zoo.read_batch) == 4
    o, name, star = job.variables()
    assert o.value == zoo.expected["zoo"]["Ord"] == star.value
    assert name.value == "Ada <Lovelace>"
    # Two rounds: the slot, then the Order; the Customer would need a third.
    short = plan.start_frame("main.settle", pc, cfa, is_call_site=False)
    assert capture.run_rounds([short], zoo.read_batch, max_rounds=2) == 2
    o, name, _star = short.variables()
    assert o.truncated and o.value["ID"] == 1001 and o.value["Customer"]["$cut"] == "rounds"
    assert name.truncated and name.value["$cut"] == "rounds"


def test_jobs_of_one_process_share_a_byte_budget(zoo):
    ord_t, ord_field = zoo.field_addr("Ord")
    plan, pc, cfa = _frame_over(zoo, "main.settle", "o", ord_field)
    plan = capture.make_plan(zoo.exe, {"main.settle": ["o"]},
                             limits=capture.Limits(total_bytes=200))
    budget = plan.process_budget()
    jobs = [plan.start_frame("main.settle", pc, cfa, is_call_site=False, budget=budget) for _ in range(3)]
    capture.run_rounds(jobs, zoo.read_batch)
    got = [j.variables()[0] for j in jobs]
    assert budget.left >= 0
    assert any(v.truncated for v in got)


def _values_by_frame(snap, functions):
    out = {}
    for fn in functions:
        for g, f in snap.frames(fn):
            out[(g.id, f.pc, fn)] = [(v.name, v.type, json.dumps(v.value, sort_keys=True),
                                      v.available, v.truncated, v.error) for v in f.variables]
    return out


def varzoo_values(exp) -> dict[tuple[str, str], object]:
    """What varzoo holds (from what it prints, `exp`) for the SPEC expressions that have
    one value: what both read paths must give, not merely the same as each other."""
    order, zoo = exp["zoo"]["Ord"], exp["zoo"]
    return {
        ("main.settle", "o"): order, ("main.settle", "*o"): order,
        ("main.settle", "o.ID"): 1001, ("main.settle", "o.Customer.Name"): "Ada <Lovelace>",
        ("main.settle", "o.Customer.Tags[1]"): '"quoted"',
        ("main.settle", "o.Items[0]"): order["Items"][0], ("main.settle", "o.Items[0].SKU"): "X",
        ("main.settle", "attempt"): exp["settle"]["attempt"],
        ("main.settle", "label"): exp["settle"]["label"], ("main.settle", "items"): order["Items"],
        ("main.lookup", "m"): zoo["MS"], ("main.lookup", 'm["two"]'): 2,
        ("main.lookup", "keys"): ["one", "two"], ("main.lookup", "e"): zoo["EStruct"],
        ("main.lookup", "e.SKU"): "IFACE", ("main.lookup", "err"): zoo["EErr"],
        ("main.lookup", "err.Msg"): "not found",
        ("main.waitTimes", "t"): zoo["T"], ("main.waitTimes", "d"): "1.5s",
        ("main.waitTimes", "ch"): exp["channels"]["Ch"], ("main.waitTimes", "fn"): "main.double",
        ("main.parkInlined", "tag"): exp["parkInlined"]["tag"],
        ("main.parkInlined", "n"): exp["parkInlined"]["n"],
    }


def varzoo_differences(snap, exp) -> list[str]:
    """Each expression of varzoo_values against the one frame that captured it, whole."""
    diffs = []
    for (fn, name), want in varzoo_values(exp).items():
        frames = [f for _g, f in snap.frames(fn) if f.variables]
        if len(frames) != 1:
            diffs.append(f"{fn}: {len(frames)} frames with variables, expected 1")
            continue
        got = by_name(frames[0]).get(name)
        if got is None or (got.value, got.available, got.truncated) != (want, True, False):
            diffs.append(f"{fn} {name}: {got}, expected {want!r}")
    return diffs


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_bpf_and_python_reads_agree_at_the_default_budget(version, go_build, needs_root,
                                                          monkeypatch):
    """The same comparison at the product's 10 ms capture budget (the suite raises it):
    both paths must give varzoo's values (varzoo_values), identical. A pair in which either snapshot hit
    the budget (a loaded machine) is retaken, at most three times."""
    from pytest_sideeye.engine import take as engine
    monkeypatch.delenv("SIDEEYE_CAPTURE_PAUSE_MS", raising=False)
    exe = str(go_build("varzoo", version))
    for _attempt in range(3):
        p, expected = start_varzoo(exe)
        try:
            monkeypatch.delenv("SIDEEYE_BPF_CAPTURE", raising=False)
            bpf = engine.take_snapshot([p.pid], capture=SPEC)
            monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
            py = engine.take_snapshot([p.pid], capture=SPEC)
        finally:
            p.kill()
            p.wait()
        notes = [n for s in (bpf, py) for n in s.processes[0].notes if BUDGET_NOTE in n]
        if not notes:
            break
    else:
        pytest.fail(f"three pairs hit the default capture budget: {notes}")
    a, b = _values_by_frame(bpf, SPEC), _values_by_frame(py, SPEC)
    assert a == b
    assert varzoo_differences(bpf, expected) == [] and varzoo_differences(py, expected) == []


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_bpf_capture_reads_what_the_python_rounds_read(version, go_build, needs_root,
                                                       monkeypatch):
    """The capture templates run in BPF must give exactly the values of the round-based
    Python path, on every kind of value varzoo holds (frames only Python can read take
    that path in both runs) and on manyparked's benchmark variables, which BPF reads
    alone: no Python round at all."""
    from pytest_sideeye.engine import take as engine
    exe = str(go_build("varzoo", version))
    p, expected = start_varzoo(exe)
    try:
        bpf = engine.take_snapshot([p.pid], capture=SPEC)
        monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
        py = engine.take_snapshot([p.pid], capture=SPEC)
        monkeypatch.delenv("SIDEEYE_BPF_CAPTURE")
    finally:
        p.kill()
        p.wait()
    a, b = _values_by_frame(bpf, SPEC), _values_by_frame(py, SPEC)
    assert a == b
    # Equal is not enough (both could capture nothing): both hold varzoo's values.
    assert varzoo_differences(bpf, expected) == [] and varzoo_differences(py, expected) == []

    bench = {"main.parkedLeaf": ["i", "name", "j", "started", "j.Tags", "*j"]}
    from oracle import start_app
    calls = []
    real = capture.run_rounds
    with start_app(go_build("manyparked", version), "-n", "50") as app:
        import time
        time.sleep(0.3)
        monkeypatch.setattr(capture, "run_rounds", lambda *a, **k: calls.append(1) or real(*a, **k))
        bpf = engine.take_snapshot([app.pid], capture=bench)
        assert calls == [], "BPF should have read every parkedLeaf frame"
        monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", "0")
        py = engine.take_snapshot([app.pid], capture=bench)
    a, b = _values_by_frame(bpf, bench), _values_by_frame(py, bench)
    assert len(a) == 50 and a == b
    # Every frame holds every expression, read (not empty frames that agree), and leaf i
    # holds i: each of 0..49 once.
    for vs in a.values():
        assert [n for n, *_ in vs] == bench["main.parkedLeaf"], vs
        assert all(avail and not cut for _n, _t, _v, avail, cut, _e in vs), vs
    assert sorted(json.loads(vs[0][2]) for vs in a.values()) == list(range(50))


def test_function_inlined_into_another_package_is_captured(captured):
    """parts.Hold runs only inlined into package main: its abstract DWARF entry sits in
    main's compile unit, its frame is found through main.holdParts' inline tree, and the
    Python path reads it in the pause. The compiler describes only `ch` there (`n` is left
    out of that inlined instance's DWARF): `n` is reported unavailable, not an error."""
    snap, _exp, _rounds, _proc = captured
    [f] = variables(snap, "varzoo/parts.Hold")
    ch, n = f.variables
    assert ch.available and ch.type == "chan int"
    assert ch.value == {"len": 0, "cap": 0, "closed": False, "items": []}, ch.value
    assert (n.name, n.available, n.error) == ("n", False, None)


def test_fields_behind_an_interface_in_a_bpf_read_frame(varzoo_124, needs_root):
    """Only field steps, so the function's frames are read by BPF templates: a field behind
    an interface needs the itab read first, which only the Python rounds can follow. (The
    template once stopped at the interface silently, and the decoder found no itab.)"""
    from pytest_sideeye.engine import take as engine
    p, expected = start_varzoo(varzoo_124)
    try:
        snap = engine.take_snapshot([engine.Target(p.pid)],
                                    capture={"main.lookup": ["err.Msg", "e.SKU"]})
    finally:
        p.kill()
        p.wait()
    [f] = variables(snap, "main.lookup")
    v = by_name(f)
    assert v["err.Msg"].value == "not found", v["err.Msg"]
    assert v["e.SKU"].value == "IFACE", v["e.SKU"]



# --- type assertions: .(T) ------------------------------------------------------------------

@pytest.mark.parametrize("spec, words", [
    ({"main.lookup": ["err.(*main.NoSuchType).Msg"]}, ["no type", "*main.NoSuchType"]),
    ({"main.settle": ["o.(*main.Order)"]}, ["not an interface", "*main.Order"]),
    ({"main.lookup": ["err.(*main.myErr).Nope"]}, ["has no field", "Nope"]),
])
def test_plan_checks_type_assertions(varzoo_124, spec, words):
    with pytest.raises(CaptureSpecError) as e:
        capture.make_plan(varzoo_124, spec)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("bpf", ["1", "0"], ids=["bpf-reads", "python-reads"])
def test_type_assertions_read_through_interfaces(varzoo_124, needs_root, monkeypatch, bpf):
    """An assertion that holds gives the value behind the interface (the BPF reads follow
    it: the function's frames need no Python round); one that does not is an error naming
    the dynamic type, never a value read as the wrong type."""
    from pytest_sideeye.engine import take as engine
    monkeypatch.setenv("SIDEEYE_BPF_CAPTURE", bpf)
    exprs = ["err.(*main.myErr).Msg", "e.(main.Item).SKU", "e.(*main.myErr)", "err.(*main.myErr)"]
    p, expected = start_varzoo(varzoo_124)
    try:
        snap = engine.take_snapshot([engine.Target(p.pid)], capture={"main.lookup": exprs})
    finally:
        p.kill()
        p.wait()
    [f] = variables(snap, "main.lookup")
    v = by_name(f)
    assert v["err.(*main.myErr).Msg"].value == "not found", v["err.(*main.myErr).Msg"]
    assert v["e.(main.Item).SKU"].value == "IFACE", v["e.(main.Item).SKU"]
    assert v["err.(*main.myErr)"].value == expected["zoo"]["EErr"]
    wrong = v["e.(*main.myErr)"]
    assert wrong.value is None and "holds a main.Item, not a *main.myErr" in wrong.error
    assert not any("capture stopped" in n for n in snap.processes[0].notes)


def test_type_assertions_compile_to_bpf_reads(varzoo_124):
    """A field through an interface goes to the Python rounds; through an assertion it
    stays a BPF template (what makes the built-in link probes cheap)."""
    from pytest_sideeye.binary import analyze
    from pytest_sideeye.capture.templates import TPL_PYTHON
    info = analyze(varzoo_124)
    const = {"CAP_OPS": 16, "CAP_READ_MAX": 2048, "CAP_TEMPLATES": 64, "CAPTAB_MAX": 1024}
    asserted = capture.compile_plan(capture.make_plan(info, {
        "main.lookup": ["err.(*main.myErr).Msg"]}), 0, const, info.symtab)
    implicit = capture.compile_plan(capture.make_plan(info, {
        "main.lookup": ["err.Msg"]}), 0, const, info.symtab)
    assert asserted is not None and all(t != TPL_PYTHON for _lo, _hi, t in asserted.ranges)
    assert any(len(ops) > 1 for ops in asserted.templates)
    assert implicit is not None and any(t == TPL_PYTHON for _lo, _hi, t in implicit.ranges)
