"""decode.py on real binaries, without a process: symbolization edge cases."""
from __future__ import annotations

from pytest_sideeye.binary import analyze
from pytest_sideeye.engine.bpf import source_constants
from pytest_sideeye.engine.collect import H_GOID, H_GP, H_HI, H_LO, H_SP
from pytest_sideeye.engine.decode import RecordDecoder


def decoder_for(binary) -> RecordDecoder:
    return RecordDecoder(analyze(binary), 0, source_constants())


def test_goroutine_at_a_wrapper_entry_still_shows_a_frame(go_build):
    """A goroutine that has not started yet sits at its go-statement wrapper's entry,
    which tracebacks elide: the snapshot must not come out with an empty stack."""
    d = decoder_for(go_build("parkzoo", "1.24.11"))
    wrappers = [f for f in d.symtab.funcs() if ".gowrap" in f.name]
    assert wrappers, "parkzoo has go statements with arguments: gowrap functions expected"
    w = wrappers[0]
    assert d.symtab.frames_for_pc(w.entry, is_call_site=True) == []   # what tracebacks do
    frames, cut = d.symbolize([w.entry])
    assert cut is None
    assert [f.function for f in frames] == [w.print_name]
    assert frames[0].line > 0 and frames[0].file.endswith(".go")


def test_stack_stops_at_goexit_and_unknown_pcs_are_marked(go_build):
    d = decoder_for(go_build("parkzoo", "1.24.11"))
    main = d.symtab.func_by_name("main.main")
    goexit = d.symtab.func_by_name("runtime.goexit")
    frames, cut = d.symbolize([main.entry + 8, goexit.entry + 1, main.entry + 8])
    assert [f.function for f in frames] == ["main.main"] and cut is None
    frames, cut = d.symbolize([main.entry + 8, 0x10])
    assert [f.function for f in frames] == ["main.main"]
    assert cut and "0x10" in cut


def test_a_goroutine_without_frames_always_says_why(go_build):
    """A running goroutine on the system stack whose saved registers led to no frame (a
    churn snapshot under load once had one): its stack is marked, never silently empty."""
    d = decoder_for(go_build("parkzoo", "1.24.11"))
    h = [0] * source_constants()["HDR_WORDS"]
    h[H_GOID], h[H_GP], h[H_SP] = 58551, 0xc000100000, 0xc000200f00
    g = d._goroutine(h, "running", [], 0, {}, {}, {})
    assert g.frames == [] and g.truncated == "no frame could be read at this instant"


def test_a_goroutine_whose_function_returned_shows_goexit(go_build):
    """A thread stopped right after the goroutine's function returned, at goexit+1 (the
    CALL goexit1 there; caught live in 1 of ~9,000 churn snapshots, thread sp inside the
    goroutine's stack): its one frame is runtime.goexit, not an empty stack."""
    d = decoder_for(go_build("parkzoo", "1.24.11"))
    goexit = d.symtab.func_by_name("runtime.goexit")
    h = [0] * source_constants()["HDR_WORDS"]
    h[H_GOID], h[H_GP], h[H_LO], h[H_HI] = 434385, 0xc000100000, 0xc000128800, 0xc000129000
    thread = (goexit.entry + 1, 0xc000128fe0, 0, [goexit.entry + 1], 0, (0,))
    g = d._goroutine(h, "running", [], 0, {21080: thread}, {}, {0xc000100000: 21080})
    assert [f.function for f in g.frames] == ["runtime.goexit"], g.frames
    assert g.truncated is None and g.thread == 21080


def test_a_goroutine_in_a_vdso_call_shows_its_own_frames(go_build):
    """time.Now's vDSO call runs on the g0 stack without saving g.sched: the thread's pc is
    the vDSO's, its sp outside the goroutine's stack, and its frame-pointer chain goes on
    into the goroutine's frames (caught live: goroutine 1 of churn, in main.spawnFor's
    time.Now). Those frames are shown, not "running in a signal handler" and none."""
    d = decoder_for(go_build("parkzoo", "1.24.11"))
    ret = [d.symtab.func_by_name(n).entry + 5 for n in ("time.now", "time.Now", "main.main")]
    goexit = d.symtab.func_by_name("runtime.goexit")
    h = [0] * source_constants()["HDR_WORDS"]
    h[H_GOID], h[H_GP], h[H_LO], h[H_HI] = 1, 0xc000100000, 0xc00008a000, 0xc00008b000
    vdso = 0x7f570fa30b9c
    fps = (0xc00005ff90, 0xc00008a7a0, 0xc00008a7d0, 0xc00008a7f0, 0)  # g0, then its own
    thread = (vdso, 0xc00005ff70, 0, [vdso, *ret, goexit.entry + 1], 0, fps)
    g = d._goroutine(h, "running", [], 0, {20969: thread}, {}, {0xc000100000: 20969})
    assert [f.function for f in g.frames] == ["time.now", "time.Now", "main.main"], g.frames
    assert g.truncated is None
    # A chain that never reaches the goroutine's stack is not taken for its frames.
    thread = (vdso, 0xc00005ff70, 0, [vdso, ret[0]], 2, (0xc00005ff90, 0xc00005e000))
    g = d._goroutine(h, "running", [], 0, {20969: thread}, {}, {0xc000100000: 20969})
    assert g.truncated and "signal handler" in g.truncated
