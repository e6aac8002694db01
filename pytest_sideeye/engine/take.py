"""The snapshot engine: binary analysis -> BPF program -> pause and collect -> decode ->
snapshot model, for one or more target processes. The Python API behind
`sideeye snapshot` and the pytest plugin.

    snap = take_snapshot([Target(pid)], capture={"main.settle": ["o", "o.ID"]})

Per-process problems (process gone, not a Go program, no DWARF, stop refused) land in
that process's `error`; problems that concern every target (no root, no BPF, a bad
capture spec) raise SideeyeError before anything is paused.
"""
from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_sideeye import capture as capture_mod
from pytest_sideeye import settings
from pytest_sideeye.binary import analyze
from pytest_sideeye.capture import compile_plan
from pytest_sideeye.engine import labels as labels_mod
from pytest_sideeye.engine import links as links_mod
from pytest_sideeye.engine import pins
from pytest_sideeye.engine.bpf import Program, layout_macros
from pytest_sideeye.engine.collect import (
    PRE_MAX,
    VERIFY_CHECK,
    VERIFY_NOSEQ,
    Collector,
    HookLink,
    PackedCapture,
    PreSlots,
    Records,
    pack_capture,
)
from pytest_sideeye.engine.cstructs import check_capture_formats
from pytest_sideeye.engine.decode import RecordDecoder
from pytest_sideeye.engine.links import after_resume as after_resume_mod
from pytest_sideeye.engine.links import preread_slots
from pytest_sideeye.engine.pause import PauseTimes, paused, proc_state, stopped_together
from pytest_sideeye.engine.privileges import missing_privileges
from pytest_sideeye.engine.process import (
    check_runtime_globals,
    exe_for_pid,
    load_bias,
    pick_layout,
)
from pytest_sideeye.engine.sigframe import signal_code
from pytest_sideeye.engine.vmread import read_dict
from pytest_sideeye.errors import CaptureSpecError, NoPermission, SideeyeError, TargetGone
from pytest_sideeye.memo import MEMO
from pytest_sideeye.snapshot import Container, Process, Snapshot, Variable, now_rfc3339

RUNTIME_ADDRS = ("runtime.allgs", "runtime.allglen", "runtime.allm")


@dataclass
class Target:
    pid: int
    container: Container | None = None
    service: str | None = None


_programs: dict[tuple, Program] = {}
# One snapshot at a time per collector process: the programs' maps are shared state, and
# the plugin may snapshot from a timer thread while another snapshot runs.
_lock = threading.Lock()


def program_for(layout) -> Program:
    """One compiled program per runtime layout, kept for the life of the collector."""
    macros = layout_macros(layout)
    key = tuple(sorted(macros.items()))
    prog = _programs.get(key)
    if prog is None:
        check_capture_formats()
        prog = _programs[key] = Program(macros)
    return prog


def loaded_layouts() -> int:
    """How many runtime layouts have their programs loaded in this process (kept warm)."""
    return len(_programs)


def warm(targets: list[Target] | list[int], capture=None, links=None,
         cfg: settings.EngineSettings | None = None) -> int:
    """Do now, while the targets run, what a snapshot does before its first pause
    (_prepare: the binary's analysis, its runtime layout's program loaded, the link probes',
    capture spec's and user links' plans and BPF tables), so that a snapshot later pays
    none of it: the kernel verifier takes seconds, and the first plan of a spec reads the
    DWARF it needs (~10 s for the link probes of a big program, on a loaded machine). The
    plugin does it when a test's services are up, the agent when asked. Targets that
    cannot be read are skipped (their snapshot will say why), and so is a capture spec
    that does not parse. Returns how many layouts are loaded in this process."""
    cfg = cfg or settings.current()
    try:
        spec = capture_mod.with_links(_parse_capture(capture), capture_mod.parse_links(links))
    except SideeyeError:
        spec = None
    for t in targets:
        proc = Process(pid=t.pid if isinstance(t, Target) else int(t))
        with _lock:   # one target at a time: a snapshot may come in between
            _or_error(proc, lambda proc=proc: _prepare(proc, spec, None, cfg))
    return len(_programs)


def take_snapshot(targets: list[Target] | list[int], capture=None, limits=None, *,
                  strict_capture: bool = True, links=None,
                  cfg: settings.EngineSettings | None = None) -> Snapshot:
    """Snapshot every target as close together in time as it can: every process is
    analysed first (binary, plan, capture tables, link probes), then they are paused one
    after the other with nothing but collection between two pauses, and decoded after
    the last resume; then the goroutines waiting on each other across them are linked
    (engine/links). The snapshot's skew_ns is how far apart the pauses were.

    A capture spec applies to each process with the functions its program has. A function
    no target has is a CaptureSpecError before anything is paused (a typo, most likely);
    with strict_capture=False (the pytest plugin: one spec for all of a test's services)
    it is a note on every process instead. `links` are user links
    ("FUNC:EXPR == FUNC:EXPR"): their expressions are captured like the spec's. `cfg`:
    the settings to take it with (the agent's, bounding its caller's), else this
    process's environment's; the snapshot records them."""
    problem = missing_privileges()
    if problem:
        raise NoPermission(problem)
    cfg = cfg or settings.current()
    targets = [t if isinstance(t, Target) else Target(int(t)) for t in targets]
    user_links = capture_mod.parse_links(links)
    spec = capture_mod.with_links(_parse_capture(capture), user_links)
    absent = _functions_in_no_target(targets, spec) if spec else []
    if absent and strict_capture:
        raise CaptureSpecError(f"unknown function {absent[0]!r}: not in the program of any "
                               "target (capture specs name functions as main.settle or "
                               "pkg/path.(*T).Method)")
    unknown = _types_in_no_target(targets, spec) if spec and spec.types else []
    if unknown and strict_capture:
        raise CaptureSpecError(f"unknown type {unknown[0]!r}: not in the program of any target "
                               "(type rules name types as main.Order or pkg/path.T)")
    no_keys = _context_keys_in_no_target(targets, spec) if spec and spec.contexts else []
    if no_keys and strict_capture:
        raise CaptureSpecError(f"unknown context key type {no_keys[0]!r}: not in the program "
                               "of any target (context rules name key types as main.userKey "
                               "or pkg/path.T)")
    snap = Snapshot(taken_at=now_rfc3339(), settings=cfg.recorded(), together=cfg.together)
    facts: dict[int, links_mod.ProcessFacts] = {}
    with _lock:
        procs = _snapshot_together(targets, spec, limits, cfg, facts_out=facts)
    for proc in procs:
        proc.notes += [f"capture: no function {fn} in any target" for fn in absent]
        proc.notes += [f"capture: no type {t} in any target" for t in unknown]
        proc.notes += [f"capture: no context key type {k} in any target" for k in no_keys]
    snap.processes.extend(procs)
    snap.skew_ns = skew_ns(procs)
    if cfg.links or user_links:
        snap.links = links_mod.find_links(snap, facts, user_links)
    return snap


def skew_ns(procs: list[Process]) -> int | None:
    """How far apart the processes were stopped: max - min of their pause instants (None
    with fewer than one process collected)."""
    stops = [p.monotonic_ns for p in procs if p.monotonic_ns is not None]
    return max(stops) - min(stops) if stops else None


def _functions_in_no_target(targets: list[Target], spec) -> list[str]:
    """Captured functions found in none of the targets' programs. Targets whose program
    cannot be read count as having every function: their own error says what is wrong."""
    left = list(spec.functions)
    for t in targets:
        try:
            symtab = analyze(exe_for_pid(t.pid), need_layout=False).symtab
        except SideeyeError:
            return []
        left = [fn for fn in left if not has_function(symtab, fn)]
        if not left:
            break
    return left


def _types_in_no_target(targets: list[Target], spec) -> list[str]:
    """Type rules' types found in none of the targets' DWARF (a target that cannot be read
    counts as having them all: its own error says what is wrong)."""
    left = list(spec.types)
    for t in targets:
        try:
            debug = analyze(exe_for_pid(t.pid), need_layout=False).debug
        except SideeyeError:
            return []
        left = [name for name in left if not capture_mod.knows_type(debug, name)]
        if not left:
            break
    return left


def _context_keys_in_no_target(targets: list[Target], spec) -> list[str]:
    """Context rules' key types found in none of the targets' programs, as DWARF or
    runtime types (a target that cannot be read counts as having them all)."""
    left = list(spec.contexts)
    for t in targets:
        try:
            info = analyze(exe_for_pid(t.pid), need_layout=False)
            left = [k for k in left if not capture_mod.knows_key_type(info, k)]
        except SideeyeError:
            return []
        if not left:
            break
    return left


def has_function(symtab, name: str) -> bool:
    """The program has the function: a body of its own, or only inlined copies."""
    return symtab.func_by_name(name) is not None or bool(symtab.inlined_ranges(name))


def _parse_capture(capture):
    if not capture:
        return None
    return capture_mod.parse_specs(capture)


def snapshot_process(target: Target, spec=None, limits=None,
                     cfg: settings.EngineSettings | None = None, *,
                     records_out: list[Records] | None = None,
                     facts_out: dict | None = None) -> Process:
    """One process's snapshot. `records_out` receives the raw records it was decoded from
    (frozen: a plain value), for recording (tests/record_records.py); `facts_out[pid]`
    what the built-in link probes read (links.ProcessFacts)."""
    [proc] = _snapshot_together([target], spec, limits, cfg or settings.current(),
                                records_out=records_out, facts_out=facts_out)
    return proc


# --- the three phases: prepare every process, collect them back to back, then decode ----

@dataclass
class _Prepared:
    """One process's analysis, done before any process is paused."""
    proc: Process
    info: object
    bias: int
    addrs: dict[str, int]
    program: Program
    probes: capture_mod.CaptureSpec
    plan: object
    decoder: RecordDecoder
    tables: object
    packed: PackedCapture | None   # the tables as the maps hold them
    labels: labels_mod.LabelReader | None = None   # pprof labels, when it can have any
    # Functions only the link probes read, BPF reading their frames' slots alone: what
    # those point to is read after the resume (links/after_resume.py).
    after_resume: frozenset = frozenset()


@dataclass
class _Collected:
    """What one pause read, kept until every process is resumed."""
    raw: Records
    times: PauseTimes
    collect_ns: int
    capture_ns: int
    pause_jobs: dict      # the frames the Python rounds read in the pause
    capture_out: object   # what the BPF capture read (CaptureOutput), or None
    wanted: bool
    hooked: bool
    labels: labels_mod.Taken | None = None
    labels_ns: int = 0


def _snapshot_together(targets: list[Target], spec, limits, cfg: settings.EngineSettings, *,
                       records_out: list[Records] | None = None,
                       facts_out: dict | None = None) -> list[Process]:
    """The processes' snapshots, their pauses as close together as can be: nothing but
    collection between two pauses. A process's error (in any phase) is its own."""
    procs = [Process(pid=t.pid, container=t.container, service=t.service) for t in targets]
    prepared = {p.pid: prep for p in procs
                if (prep := _or_error(p, lambda p=p: _prepare(p, spec, limits, cfg)))}
    collected: dict[int, _Collected] = {}
    with _pins_held(prepared.values()), _hooks_attached(prepared.values(), cfg) as hooks, \
            _collectors_made(prepared.values(), cfg, hooks) as collectors:
        order = [prep for prep in prepared.values() if prep.proc.pid in collectors]
        with _pauses(order, cfg, collectors) as (pause, ready):
            for i, prep in enumerate(order):
                collector = collectors[prep.proc.pid]
                got = _or_error(prep.proc, lambda prep=prep, collector=collector:
                                _collect(prep, cfg, collector, pause, ready[prep.proc.pid]))
                if got is not None:
                    collected[prep.proc.pid] = got
                    if prep.program.pins_folder is not None or \
                            any(later.program is prep.program for later in order[i + 1:]):
                        # Its last records are still a view of the program's map, which
                        # the next process of this program is about to overwrite, or,
                        # pinned, another process's snapshot once the pins' lock is let go
                        # (before this one is decoded).
                        got.raw.freeze()
    for pid, got in collected.items():
        prep = prepared[pid]
        facts = _or_error(prep.proc, lambda prep=prep, got=got:
                          _finish(prep, got, spec, cfg, records_out))
        if facts is not None and facts_out is not None:
            facts_out[pid] = facts
    return procs


def _or_error(proc: Process, phase):
    """phase(), or None with the error on the process."""
    try:
        return phase()
    except SideeyeError as e:
        proc.error = str(e)
        return None


@contextlib.contextmanager
def _pins_held(prepared):
    """Hold every program's pinned maps (pins.py) for the whole collect phase: taken once
    per folder (an flock conflicts with itself on another fd), in one order (no deadlock)."""
    folders = {pins.folder_id(p.program.pins_folder): p.program.pins_folder
               for p in prepared if p.program.pins_folder is not None}
    with contextlib.ExitStack() as stack:
        for _, fd in sorted(folders.items()):
            stack.enter_context(pins.lock(fd))
        yield


@contextlib.contextmanager
def _pauses(order: list[_Prepared], cfg: settings.EngineSettings, collectors: dict):
    """How each process is paused, as paused() is called, and what was done before
    every pause ({pid: _Ready}): one after the other (paused itself), or, in together
    mode, every one stopped here before the first is collected, each resumed as soon as
    it is collected, and all on the way out. Either way every target is first done while
    it runs (_before_pause: its pages brought into the caches, its goroutines pre-read),
    the processes of one program each pre-read into slots of their own in its `pre` map
    (PreSlots): one after the other, nothing but the pauses' own work comes between two
    pauses (each process's pre-read there had spread 8 processes over 5.7 ms, the issue's
    goal being 5), and together, one short stop verifies them all."""
    ready = _all_before_pause(order, cfg, collectors)
    if not cfg.together:
        yield paused, ready
        return
    with stopped_together([prep.proc.pid for prep in order]) as group:
        yield group.held, ready


def _all_before_pause(order: list[_Prepared], cfg: settings.EngineSettings,
                      collectors: dict) -> dict[int, _Ready]:
    """_before_pause for every process, in the order they will be paused, each pre-read
    into the slots of its program's `pre` map that the ones before it left."""
    ready: dict[int, _Ready] = {}
    kept: dict[int, int] = {}   # id(program): slots of its `pre` map taken so far
    for prep in order:
        collector, raw = collectors[prep.proc.pid], Records(prep.proc.pid)
        base = kept.get(id(prep.program), 0)
        preread = _or_error(prep.proc, lambda prep=prep, collector=collector, raw=raw, base=base:
                            _before_pause(prep, cfg, collector, raw,
                                          PreSlots(base, PRE_MAX - base)))
        kept[id(prep.program)] = base + collector.pre_kept
        ready[prep.proc.pid] = _Ready(raw, bool(preread),
                                      _prewalk(prep, collector, cfg, raw) if preread else None,
                                      alone=len(order) == 1)
    return ready


@contextlib.contextmanager
def _hooks_attached(prepared, cfg: settings.EngineSettings):
    """Each program's stop hook attached once, before the first pause, for the whole
    collect phase: attaching costs milliseconds, which would lie between two pauses. Not
    in together mode: the hook walks a process as it stops, and is armed for one process
    of its program at a time, while together mode stops them all before collecting any
    (the iterator collects each)."""
    hooks: dict[int, HookLink] = {}
    try:
        if cfg.stop_hook and not cfg.together:
            for prep in prepared:
                if prep.program.hook_fd is not None and id(prep.program) not in hooks:
                    hooks[id(prep.program)] = HookLink(prep.program)
                    hooks[id(prep.program)].attach()
        yield hooks
    finally:
        for hook in hooks.values():
            hook.detach()


@contextlib.contextmanager
def _collectors_made(prepared, cfg: settings.EngineSettings, hooks: dict):
    """A Collector per process, made before the first pause (its iterator link, helper
    threads and target's goroutine count cost up to milliseconds), {pid: collector};
    closed on the way out if its collection did not."""
    collectors: dict[int, Collector] = {}
    try:
        for prep in prepared:
            made = _or_error(prep.proc, lambda prep=prep: Collector(
                prep.program, prep.proc.pid, prep.addrs, prep.bias,
                hook_budget_ns=cfg.hook_budget_ns, threads=cfg.collect_threads,
                signal_code=signal_code(prep.info.symtab), hook=hooks.get(id(prep.program))))
            if made is not None:
                collectors[prep.proc.pid] = made
        yield collectors
    finally:
        for collector in collectors.values():
            collector.close()


def _prepare(proc: Process, spec, limits, cfg: settings.EngineSettings) -> _Prepared:
    """Everything about one process that needs no pause: its binary, layout, program,
    link probes, capture plan and tables."""
    pid = proc.pid
    exe = exe_for_pid(pid)
    proc.exe = _display_exe(pid, exe)
    info = analyze(exe)
    proc.go_version = info.go_version
    bias = load_bias(pid, info)
    addrs = {k: info.symbols[k] for k in RUNTIME_ADDRS if k in info.symbols}
    missing = [k for k in RUNTIME_ADDRS if k not in addrs]
    if missing:
        raise SideeyeError(f"{exe}: runtime symbols {missing} not found (stripped binary?)")
    live = {k: v + bias for k, v in addrs.items()}
    if info.layout_candidates:
        # A patch release the table was not made from, whose minor had several layouts.
        info = info.with_layout(pick_layout(pid, live, info.layout_candidates,
                                            info.go_version))
    proc.layouts = _layouts_source(info)
    if info.globals_from == "code" or info.layout.source != "dwarf":
        # Guessed addresses or layouts not the binary's own: they must hold in the live
        # process before it is paused.
        check_runtime_globals(pid, live, info.layout, proc.layouts)
    program = program_for(info.layout)
    probes = links_mod.probe_spec(info) if cfg.links and info.has_dwarf \
        else capture_mod.CaptureSpec()
    plan = _make_plan(info, links_mod.merged(spec, probes), limits, bias) \
        if info.has_dwarf else None
    decoder = RecordDecoder(info, bias, program.const)
    after_resume = after_resume_mod.functions(spec, probes)
    tables = _capture_tables(plan, info, bias, program, after_resume) \
        if plan is not None and cfg.bpf_capture else None
    packed = pack_capture(tables, program.const) if tables is not None else None
    return _Prepared(proc, info, bias, addrs, program, probes, plan, decoder, tables, packed,
                     labels_mod.label_reader(info, bias),
                     after_resume if tables is not None else frozenset())


@dataclass
class _Ready:
    """What _before_pause did for a process before the first pause: its records so
    far (the pre-read's walk field), whether its pause may check headers only, and its
    context chains read before the stop (_prewalk)."""
    raw: Records
    preread: bool
    prewalk: object = None
    alone: bool = False   # the snapshot's only process


def _before_pause(prep: _Prepared, cfg: settings.EngineSettings, collector: Collector,
                  raw: Records, slots: PreSlots | None = None) -> bool:
    """What a process's collection does while it still runs: the program's config made
    this process's, its pages brought into the caches (Collector.prewarm; not when the
    stop hook will walk: it runs as the target stops), its capture tables, and its
    goroutines pre-read (_preread, into `slots`). True if its pause may check headers
    only."""
    collector.claim()   # the program's shared config: other collectors were made since
    if not (_hook_wanted(cfg) and prep.program.hook_fd is not None):
        collector.prewarm()
    _set_capture(prep, cfg, collector)
    return _preread(prep, cfg, collector, raw, slots)


def _hook_wanted(cfg: settings.EngineSettings) -> bool:
    return cfg.stop_hook and not cfg.together   # together: see _hooks_attached


def _set_capture(prep: _Prepared, cfg: settings.EngineSettings, collector: Collector) -> None:
    plan = prep.plan
    collector.set_capture(prep.tables, int(cfg.capture_pause_s * 1e9),
                          plan.limits.total_bytes if plan is not None else 0, prep.packed)


def _collect(prep: _Prepared, cfg: settings.EngineSettings, collector: Collector,
             pause, ready: _Ready) -> _Collected:
    """Pause one process and read it; with its pins held (_pins_held). What is read from
    the program's maps after the resume is read here too, before the next process of the
    same program overwrites them. `pause`: paused, or the together mode's (_pauses);
    `ready`: what was done before the first pause (_all_before_pause)."""
    plan, decoder, tables = prep.plan, prep.decoder, prep.tables
    raw = ready.raw
    times = PauseTimes()
    pause_jobs: dict = {}
    try:
        wanted = _hook_wanted(cfg)
        # This process's part of the program's shared maps again (other processes of its
        # program were pre-read, and maybe collected, since its own pre-read).
        preread, prewalk = ready.preread, ready.prewalk
        collector.claim()
        _set_capture(prep, cfg, collector)
        collector.requeue()
        if preread and ready.alone:
            # Its allgs and g structs in the caches for the pause's check: 0.05-0.1 ms of
            # a 1,000-goroutine pause. Not with other processes: one after the other, the
            # extra pass lies between two pauses (8 processes spread 3.5-3.9 ms with it,
            # 2.9-3.4 without); together, they are stopped already.
            collector.prewarm_verify()
        # After a pre-read the pause checks headers: the iterator does it, not the hook.
        hooked = wanted and not preread and collector.arm_hook()
        # No collection of Python's garbage in the pause: a full one over the binaries'
        # analyses held in memory costs milliseconds to tens of them (seen: 2-3 ms of a
        # 10,000-goroutine "resume", 60-200 ms of a context rule's capture).
        with _gc_held(), pause(prep.proc.pid, times,
                               collector.hook_saw_stop if hooked else None):
            prep.proc.monotonic_ns = times.stopped_at_ns
            t0 = time.perf_counter_ns()
            collector.collect(raw)
            starts = decoder.syscall_starts(raw)
            if starts:
                collector.start_syscall_walks(raw, starts)
            t1 = time.perf_counter_ns()
            if plan is not None:
                pause_jobs = _capture_in_pause(plan, decoder, collector, raw, tables,
                                               cfg.capture_pause_s, prewalk)
            t2 = time.perf_counter_ns()
            taken = prep.labels.read(raw, prep.proc.pid, time.monotonic() + cfg.capture_pause_s) \
                if prep.labels is not None else None
            t3 = time.perf_counter_ns()
        # Only copied out of the maps here; decoded after the last resume (_finish).
        out = collector.capture_output(tables) if tables is not None else None
        raw.pre_probe_frames = preread_slots.adopt(out, raw.pre_probes, raw)
    finally:
        collector.close()
    return _Collected(raw, times, t1 - t0, t2 - t1, pause_jobs, out, wanted, hooked, taken,
                      t3 - t2)


def _preread(prep: _Prepared, cfg: settings.EngineSettings, collector: Collector,
              raw: Records, slots: PreSlots | None) -> bool:
    """Walk the goroutines before the pause (Collector.preread, into `slots` of the
    program's `pre` map), when the settings ask for it and the layout has trackingSeq;
    True if the pause may check headers only. The snapshot says which way it went
    (raw.walk)."""
    if not cfg.preread:
        return False
    missing = preread_missing(prep.info)
    if missing:
        raw.walk = f"in the pause ({missing})"
        return False
    layout = prep.info.layout
    sched = layout.variables.get("runtime.sched") or prep.info.symbols.get("runtime.sched")
    ttr, size = layout.sched_offsets["timeToRun"], layout.sched_sizes["timeToRun"]
    check = VERIFY_NOSEQ if cfg.preread_check == "no-seq" else VERIFY_CHECK
    pre = collector.preread(cfg.preread_max_ns, (sched + prep.bias + ttr, size), check,
                            slots)
    raw.walk, raw.preread_ns = pre.walk, pre.preread_ns
    if collector.pre is None:
        return False
    if prep.labels is not None:
        prep.labels.prescan(collector.pre)
    _preread_probes(prep, collector, raw)
    return True


def preread_missing(info) -> str:
    """Why the pre-read cannot run on this binary, named ("" when it can): layouts without
    g.trackingSeq or sched.timeToRun (Go releases without them, or left out of the table),
    or a runtime.sched whose address is unknown (a stripped binary whose code did not
    show it: binary/codescan.py)."""
    layout = info.layout
    lacks = [name for name, ok in (
        ("g.trackingSeq", "trackingSeq" in layout.g_offsets),
        ("sched.timeToRun", layout.sched_offsets.get("timeToRun") is not None
         and bool(layout.sched_sizes.get("timeToRun"))))
        if not ok]
    if lacks:
        return f"this binary's layouts ({layout.source}) lack {' and '.join(lacks)}"
    if not (layout.variables.get("runtime.sched") or info.symbols.get("runtime.sched")):
        return ("the address of runtime.sched is unknown: no symbol table, and the code did "
                "not show it")
    return ""


def _preread_probes(prep: _Prepared, collector: Collector, raw: Records) -> None:
    """The stack slots of the probe-only functions' frames the pre-read found, read now,
    not in the pause (links/preread_slots.py), into raw.pre_probes: the pause keeps those
    of the goroutines it does not walk again."""
    if prep.after_resume and prep.plan is not None:
        raw.pre_probes = preread_slots.take(prep.proc.pid, collector, prep.tables,
                                            prep.decoder, prep.plan.wants, prep.after_resume)


def _prewalk(prep: _Prepared, collector: Collector, cfg: settings.EngineSettings,
             raw: Records):
    """After a pre-read, the context chains of its captured frames, read while the target
    still runs (capture/prewalk.py): the pause reads only what may have changed in those of
    the goroutines it does not walk again. None when no context rule asks, or when it
    failed (a note says so; the pause then reads every chain)."""
    plan, pre = prep.plan, collector.pre
    if plan is None or pre is None or not plan.spec.contexts:
        return None
    frames = [(rec, pc, cfa, fn) for rec, _key, pc, cfa, fn in
              prep.decoder.frames_by_record(pre, plan.wants)]
    deadline = time.monotonic() + cfg.preread_max_ns / 1e9
    try:
        return capture_mod.PreWalk(plan, frames, lambda reqs: read_dict(prep.proc.pid, reqs),
                                   deadline)
    except Exception as e:  # noqa: BLE001 - a bug here must not lose the snapshot
        raw.notes.append(f"capture: the context pre-walk failed ({type(e).__name__}: {e}): "
                         "every chain was read in the pause")
        return None


def _walk_fields(proc: Process, raw: Records) -> None:
    """How the goroutines were walked (Collector.preread), in the snapshot."""
    if not raw.walk:
        return
    proc.walk = raw.walk
    proc.preread_ns = raw.preread_ns or None
    if raw.pre_chunks:
        proc.rewalked = raw.rewalked
        proc.preread_probe_frames = raw.pre_probe_frames
        proc.pause_parts_ns["verify"] = raw.verify_ns
        proc.pause_parts_ns["rewalk"] = raw.rewalk_ns


def _finish(prep: _Prepared, got: _Collected, spec, cfg: settings.EngineSettings,
            records_out: list[Records] | None) -> links_mod.ProcessFacts:
    """After every process is resumed: decode one, attach its variables, and read what
    its link probes found."""
    proc, raw, times = prep.proc, got.raw, got.times
    _check_survived(proc.pid)
    captures = _captures_after(prep.plan, prep.decoder, got.capture_out, raw, got.pause_jobs,
                               cfg.capture_pause_s, prep.after_resume,
                               lambda: _capture_tables(prep.plan, prep.info, prep.bias,
                                                       prep.program)) \
        if prep.plan is not None else []
    proc.pause_ns = times.pause_ns
    proc.pause_parts_ns = {"stop": times.stop_ns, "collect": got.collect_ns,
                           "capture": got.capture_ns, "resume": times.resume_ns}
    if cfg.together:
        proc.pause_parts_ns["waited"] = times.waited_ns
    if raw.hook_ns:
        proc.pause_parts_ns["hook_walk"] = raw.hook_ns
    _walk_fields(proc, raw)
    if got.labels is not None:
        proc.pause_parts_ns["labels"] = got.labels_ns
    proc.collector = _who_collected(raw, prep.program, got.wanted, got.hooked, cfg.together)
    proc.goroutines = prep.decoder.goroutines(raw)
    if got.labels is not None:
        labels_mod.attach(proc, prep.labels, got.labels)
    if records_out is not None:
        records_out.append(raw.freeze())
    if captures:
        _attach_variables(proc, captures)
        proc.notes += [capture_mod.no_context_value_note(k) for k in
                       capture_mod.prune_contexts(proc.goroutines, prep.plan.spec)]
    if spec and not prep.info.has_dwarf:
        _no_dwarf_variables(proc, spec)
    facts = links_mod.take_facts(proc, prep.probes, spec)
    proc.notes += raw.notes
    if raw.allglen and not proc.goroutines:
        proc.notes.append("no live goroutine could be read")
    return facts


def _layouts_source(info) -> str:
    source = "DWARF" if info.layout.source == "dwarf" else info.layout.source
    if info.globals_from == "code":
        source += "; goroutine list found in the code (no symbol table)"
    return source


NO_DWARF = "needs DWARF (binary built with -w)"


def _no_dwarf_variables(proc: Process, spec) -> None:
    """A binary without DWARF: where a variable is nobody can say. Each captured frame
    says so per variable rather than the whole snapshot failing."""
    for g in proc.goroutines:
        for f in g.frames:
            exprs = spec.functions.get(f.function)
            if exprs:
                f.variables = [Variable(e.text, "", None, available=False, error=NO_DWARF)
                               for e in exprs]
    # Type and context rules find their variables through DWARF: none is found, and no
    # frame would say why.
    rules = [f"type:{t}" for t in spec.types] + [f"context:{k}" for k in spec.contexts]
    if rules:
        proc.notes.append(f"capture: {', '.join(rules)} not applied: "
                          f"{'it needs' if len(rules) == 1 else 'they need'} DWARF "
                          "(binary built with -w)")


def _who_collected(raw: Records, program: Program, wanted: bool, hooked: bool,
                   together: bool = False) -> str:
    """The snapshot's `collector` field: which program walked the goroutines, and why not
    the stop hook when it did not; how many the collector's helper threads walked."""
    helped = f"{raw.helper_gs} by helper threads" if raw.helper_gs else ""
    if raw.pre_chunks:
        return f"iterator (headers checked after a pre-read{'; ' + helped if helped else ''})"
    if hooked and raw.hook == "walked":
        if raw.hook_gs >= raw.allglen:
            return "stop hook"
        return (f"stop hook and iterator ({raw.hook_gs} of {raw.allglen} goroutines by the "
                f"hook{', ' + helped if helped else ''})")
    helped = f"; {helped}" if helped else ""
    if hooked:
        return f"iterator (the stop hook {raw.hook}{helped})"
    if together:
        return f"iterator (no stop hook in together mode{helped})"
    if not wanted:
        return f"iterator (stop hook disabled by SIDEEYE_STOP_HOOK=0{helped})"
    return f"iterator (no stop hook: {program.hook_error}{helped})"


def _check_survived(pid: int) -> None:
    """A target that died while stopped leaves records of memory being torn down: drop
    them and say so rather than return an empty, healthy-looking process."""
    try:
        state = proc_state(pid)
    except OSError:
        state = "X"
    if state in "ZXx" or _kill_pending(pid):
        raise TargetGone(f"process {pid} exited during the snapshot")


def _kill_pending(pid: int) -> bool:
    """A SIGKILL sent while the target was stopped may not have taken effect yet when the
    resume returns: the process is dying all the same (SIGKILL is bit 8 of the masks)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) >> 8 & 1:
            return True
    return False


def _display_exe(pid: int, exe: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return exe


# --- variable capture (plan made before the pause, reads in it, decoding after) ----------

def _make_plan(info, spec, limits, bias: int):
    """The plan for this program: the spec's functions it has (others are someone
    else's: take_snapshot already checked that every function is somewhere)."""
    if spec is None:
        return None
    mine = capture_mod.CaptureSpec({fn: exprs for fn, exprs in spec.functions.items()
                                    if has_function(info.symtab, fn)},
                                   {name: rule for name, rule in spec.types.items()
                                    if capture_mod.knows_type(info.debug, name)})
    mine.contexts = spec.contexts   # context rules: any program may hold a context
    if not mine:
        return None
    kw = {"limits": limits} if limits is not None else {}
    # The first plan of a spec reads the DWARF it needs into the binary's DebugInfo, which
    # keeps it: that growth is weighed once, in the binary's memo group (memo.py).
    key = (info.build_id, repr(mine), repr(limits))
    if MEMO.get("planned", key):
        return capture_mod.make_plan(info, mine, load_bias=bias, **kw)
    with MEMO.weighed("planned", key) as size:
        plan = capture_mod.make_plan(info, mine, load_bias=bias, **kw)
    MEMO.put(info.build_id, "planned", key, value=True, nbytes=size.nbytes)
    return plan


def _capture_tables(plan, info, bias: int, program, slots_only: frozenset = frozenset()):
    """The plan compiled for the BPF capture (capture/templates.py), once per binary, spec,
    limits and load address (in the binary's memo group: a PIE's few latest load addresses,
    memo.PER_KIND); None when nothing of it can be read by BPF."""
    key = (info.build_id, repr(plan.spec), repr(plan.limits), bias, tuple(sorted(slots_only)))
    return MEMO.remember(info.build_id, "tables", key,
                         lambda: compile_plan(plan, bias, program.const, info.symtab,
                                              slots_only))


@contextlib.contextmanager
def _gc_held():
    """Python's collector held off for a pause: the objects made in it (records, a job a
    frame, a node a context) could start a full collection over the binaries' analyses."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _capture_in_pause(plan, decoder, collector, raw, tables, budget_s: float,
                      prewalk=None) -> dict:
    """The reads BPF does not do: the frames whose ranges need Python (interfaces, maps,
    inlined copies, ...) and those of deep stacks past a record's frames, read in batched
    rounds within the capture's pause budget. Everything else was read by pass_capture.
    The frames whose context chains were read before the pause (`prewalk`), of goroutines
    not walked again, come with their jobs. Returns {(pc, cfa, function): job}."""
    deadline = time.monotonic() + budget_s
    budget = plan.process_budget()   # the byte limit is per process, shared by its frames
    # Only after a pre-read that stood: otherwise every record is the pause's own.
    kept = prewalk.kept(raw.superseded(), budget) if prewalk is not None and raw.pre_chunks \
        else None
    known = kept.jobs if kept is not None else {}
    if tables is None:
        frames = [(pc, cfa, fn) for _k, pc, cfa, fn in
                  decoder.frames_for_capture(raw, plan.wants)]
    else:
        collector.capture_pass(raw)
        budget.take(collector.capture_used())
        frames = [(pc, cfa, fn) for pc, cfa in collector.python_frames(raw)
                  for fn in decoder._wanted_at(pc, plan.wants)]
        frames += [(pc, cfa, fn) for _k, pc, cfa, fn in
                   decoder.frames_for_capture(raw, plan.wants, continued_only=True)]
        # A value the target could read is never cut for residency: frames with a read
        # BPF could not make are read again by the Python rounds, through the iterator,
        # which faults pages in (the stop hook cannot).
        frames += [(pc, cfa, fn) for pc, cfa in collector.failed_capture_frames(tables)
                   for fn in decoder._wanted_at(pc, plan.wants)]
    jobs, skipped = {}, 0
    for pc, cfa, function in frames:
        if (pc, cfa, function) in known:
            continue
        if time.monotonic() > deadline:
            skipped += 1
            continue
        jobs[(pc, cfa, function)] = plan.start_frame(function, pc - decoder.bias, cfa, is_call_site=True,
                                                     budget=budget)
    if jobs or known:
        # process_vm_readv, not the iterator's read passes: a round of 1,000 small reads
        # costs ~0.5 ms instead of 2-12 ms on a loaded machine (context chains take one a
        # level); it faults pages in as the iterator does.
        capture_mod.run_rounds(list(jobs.values()), lambda reqs: read_dict(raw.pid, reqs),
                               deadline=deadline, kept=kept)
    unfinished = sum(1 for j in jobs.values() if not j.done)
    if known and not next(iter(known.values())).done:   # they share one walk
        unfinished += len(known)
    jobs.update(known)
    if unfinished or skipped:
        raw.notes.append(
            f"capture stopped at its pause budget ({budget_s * 1000:g} ms): of "
            f"{len(jobs) + skipped} frames read by Python, {unfinished} have values cut short "
            f"and {skipped} were not captured (raise SIDEEYE_CAPTURE_PAUSE_MS to wait longer)")
    return jobs


def _captures_after(plan, decoder, out, raw, pause_jobs: dict, budget_s: float,
                    after_resume: frozenset = frozenset(), full_tables=None) -> list:
    """After the resume: a job per captured frame, [(key, job)], decoding what was read
    in the pause (by BPF into `out`, or by the Python rounds) and nothing more; but for
    the frames of `after_resume` functions BPF read, what their slots point to is read
    now (links/after_resume.py), as `full_tables()`'s templates would have in the pause."""
    shared = out.memory() if out is not None else None
    captures, missed, later = [], 0, []
    for key, pc, cfa, function in decoder.frames_for_capture(raw, plan.wants):
        job = pause_jobs.get((pc, cfa, function))
        if job is None:
            job = plan.start_frame(function, pc - decoder.bias, cfa, is_call_site=True)
            entry = out.frames.get((pc, cfa)) if out is not None else None
            if entry is None:
                missed += 1
            job.mem.shared = shared
            job.mem.final = entry is None or function not in after_resume
            if not job.mem.final:
                later.append((pc, cfa, job))
            if out is not None and out.dropped:
                job.mem.final_why = "budget"   # reads refused: the byte budget ran out
        captures.append((key, job))
    if later:
        after_resume_mod.read(raw.pid, later, full_tables() if full_tables else None)
    if out is not None and out.unreached:
        raw.notes.append(
            f"capture stopped at its pause budget ({budget_s * 1000:g} ms): "
            f"{out.unreached} frames read in BPF were not reached "
            "(raise SIDEEYE_CAPTURE_PAUSE_MS to wait longer)")
    if out is not None and (missed > out.unreached or out.dropped or out.queued_over):
        raw.notes.append(
            f"capture: {missed - out.unreached} frames were not read in the pause"
            + (f" ({out.queued_over} over the queue's capacity)" if out.queued_over else "")
            + (f"; {out.dropped} reads refused, the process's capture byte budget "
               f"({plan.limits.total_bytes:,} bytes) being used up" if out.dropped else ""))
    return captures


def _attach_variables(proc: Process, captures) -> None:
    """Put each job's values on its frame. Keys are (goroutine, pc, function, n): the
    frames inlined at one PC share it, and recursive frames repeat it, so n counts the
    occurrences of (pc, function) from the leaf, as decode.frames_for_capture does."""
    jobs = {key: job for key, job in captures}
    for g in proc.goroutines:
        seen: dict[tuple[int, str], int] = {}
        for f in g.frames:
            n = seen[(f.pc, f.function)] = seen.get((f.pc, f.function), -1) + 1
            job = jobs.get((g.id, f.pc, f.function, n))
            if job is not None:
                f.variables = job.variables()
