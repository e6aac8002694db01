"""decode.py's unwinding of a running goroutine's innermost frames by their sizes (pcsp), on
a real binary's code with the stack words a thread has in that state: the frame-pointer
chain skips a frameless function's caller, and after the runtime's preemption signal
handler injected a call to runtime.asyncPreempt, the interrupted (frameless) function's
caller as well."""
from __future__ import annotations

from elftools.elf.elffile import ELFFile

from pytest_sideeye.binary import analyze
from pytest_sideeye.binary.elf import StaticImage
from pytest_sideeye.engine.bpf import source_constants
from pytest_sideeye.engine.decode import RecordDecoder

STK_WORDS = source_constants()["STK_WORDS"]


def call_return(binary, caller, callee) -> int:
    """The return address of caller's direct call (E8 rel32) to callee."""
    with open(binary, "rb") as f:
        image = StaticImage(ELFFile(f))
    code = image.read(caller.entry, caller.end - caller.entry)
    for i in range(len(code) - 4):
        after = caller.entry + i + 5
        if code[i] == 0xE8 and after + int.from_bytes(code[i + 1:i + 5], "little",
                                                      signed=True) == callee.entry:
            return after
    raise AssertionError(f"{caller.name} does not call {callee.name}")


def test_frameless_function_interrupted_by_async_preemption_keeps_its_caller(go_build):
    """The handler of SIGURG made the goroutine call asyncPreempt (it pushed the pc it
    interrupted, in frameless main.spinLeaf) and the snapshot caught the thread at
    asyncPreempt's entry (or read these registers from the signal frame): rbp is still
    main.spinA's frame pointer, so the chain gives spinA's return address and skips spinA."""
    binary = go_build("profspin", "1.24.11")
    d = RecordDecoder(analyze(binary), 0, source_constants())
    fn = d.symtab.func_by_name
    preempt, leaf, spin_a = fn("runtime.asyncPreempt"), fn("main.spinLeaf"), fn("main.spinA")
    in_leaf = next(pc for pc in range(leaf.entry + 1, leaf.end)
                   if d.symtab.func_for_pc(pc) == leaf and d.symtab.sp_delta(pc) == 0)
    ret_a = call_return(binary, spin_a, leaf)
    ret_goexit = fn("runtime.goexit").entry + 1
    frame_a = d.symtab.sp_delta(ret_a)
    # From sp: the injected call's "return address" (the interrupted pc), spinLeaf's return
    # address into spinA, spinA's frame, spinA's own return address.
    top = [in_leaf, ret_a] + [0] * (frame_a // 8) + [ret_goexit]
    top += [0] * (STK_WORDS - len(top))
    pcs = d._with_leaf_caller(preempt.entry, [preempt.entry, ret_goexit], tuple(top))
    frames, cut = d.symbolize(pcs, first_is_call_site=False)
    assert cut is None
    assert [f.function for f in frames] == ["runtime.asyncPreempt", "main.spinLeaf",
                                            "main.spinA"]


def test_framed_and_frameless_leaves_unwind_as_before(go_build):
    """A framed leaf: the chain is whole, nothing added. A frameless leaf: its caller is
    added once, where the chain goes on."""
    binary = go_build("profspin", "1.24.11")
    d = RecordDecoder(analyze(binary), 0, source_constants())
    fn = d.symtab.func_by_name
    leaf, spin_a = fn("main.spinLeaf"), fn("main.spinA")
    in_leaf = next(pc for pc in range(leaf.entry + 1, leaf.end) if d.symtab.sp_delta(pc) == 0)
    ret_a = call_return(binary, spin_a, leaf)
    ret_goexit = fn("runtime.goexit").entry + 1
    top = [ret_a] + [0] * (d.symtab.sp_delta(ret_a) // 8) + [ret_goexit]
    top += [0] * (STK_WORDS - len(top))
    assert d._with_leaf_caller(in_leaf, [in_leaf, ret_goexit], tuple(top)) == \
        [in_leaf, ret_a, ret_goexit]
    assert d._with_leaf_caller(in_leaf, [in_leaf, ret_a, ret_goexit], tuple(top)) == \
        [in_leaf, ret_a, ret_goexit]
