"""Context chains read before the pause, for the goroutines the pause will not walk again.

The pre-read (engine/collect.py, issue 27) walks every goroutine while the target runs; in
the pause only those whose header changed are walked again. A goroutine that did not run
has the stack it had: its context variables hold the same interface values, and the chains
they point to, reachable from that stack, are alive and, for the standard library's context
types, unchanged (a valueCtx's key, val and parent, a cancelCtx's parent, a timerCtx's
deadline are set when it is made and never after). So which layer answers a key, the
deadline and the error, and where each is, can be read before the pause; the pause reads
only what can change: the answering cancel layers' err, and what the values point to (a
value's pointee may be mutable: a snapshot's values come from the instant of its stacks).

Those are decoded before the pause too, each decode recording every byte it read from the
target (err words included; constant data from the file excepted): the pause reads those
bytes again in one round, and an answer stands only if none of its bytes changed (a
decode is a function of the bytes it read: the same bytes, the same value, as if decoded
in the pause); the others are decoded in the pause as before.

    pre = PreWalk(plan, frames, read_batch, deadline)    # before the pause
    kept = pre.kept(superseded, budget)                  # in it: Kept
    run_rounds(other_jobs, read, kept=kept)              # their answers read with the rest

`frames` are the pre-read's captured frames with the key of their goroutine's record;
`superseded` the keys of the records the pause walked again, whose frames never get
pre-read chain data. Only frames whose every expression is a context expression are
pre-walked (others read their own variables in the pause), and only chains read whole
through standard layers (a program's own Context type may change its fields).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pytest_sideeye.capture.chainwalk import WALK_ROUNDS, ChainWalk
from pytest_sideeye.capture.interfaces import is_direct_iface
from pytest_sideeye.capture.memory import PENDING, Cut, u

PREWALK_CUT = "not read before the pause"


class Recorder:
    """A Memory as one decode sees it, noting every byte it got from the target."""

    def __init__(self, mem):
        self.mem = mem
        self.reads: dict[tuple[int, int], bytes] = {}
        self.cut = False   # a read failed or was not made: the decode cannot stand

    def read(self, addr: int, size: int, leaf: bool = False):
        got = self.mem.read(addr, size, leaf)
        if isinstance(got, Cut):
            self.cut = self.cut or addr >= 4096    # a nil pointer is a value, not a cut
        elif got is not PENDING and size > 0:
            constant = self.mem.constant
            if constant is None or not constant.covers(addr, size):
                self.reads[(addr, size)] = got
        return got

    def saw(self, addr: int, data: bytes) -> None:
        """Bytes the decode took from a node read earlier (a cancelCtx's err words)."""
        self.reads[(addr, len(data))] = data


@dataclass
class Early:
    """Answers decoded before the pause: {(kind, node): result}, the bytes each read
    {(addr, size): bytes}, and which answers read each range {(addr, size): [answer]}."""
    results: dict = field(default_factory=dict)
    bytes: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(size for _addr, size in self.bytes)


@dataclass
class Kept:
    """The pre-walked frames of goroutines the pause did not walk again: their jobs
    {(pc, cfa, function): job}, the decodes their answers need {(kind, node)} and the key
    types asked; `budget` the process's, which reading those answers draws on."""
    plan: object
    budget: object
    jobs: dict = field(default_factory=dict)
    answers: set = field(default_factory=set)
    key_sets: set = field(default_factory=set)
    early: Early | None = None


class PreWalk:
    """The context chains of the pre-read's frames, read while the target runs."""

    def __init__(self, plan, frames, read_batch, deadline: float):
        self.plan = plan
        self.walk = ChainWalk(plan, plan.process_budget(), structure_only=True)
        self._immutables: dict[str, bool] = {}
        # (pc, cfa, function) -> the record key of the goroutine whose frame it is; None
        # where two records claim it (a stack freed and reused during the pre-read).
        owner: dict[tuple[int, int, str], tuple | None] = {}
        jobs = {}
        bias = plan.bias
        for rec, pc, cfa, function in frames:
            key = (pc, cfa, function)
            if key in owner:
                owner[key] = None
                continue
            owner[key] = rec
            job = plan.start_frame(function, pc - bias, cfa, is_call_site=True)
            if plan.walk_only(job.function) and plan.has_contexts(job.function):
                job.attach_contexts(self.walk)
                jobs[key] = job
        self.rounds = self._read(read_batch, deadline)
        # By goroutine record: its trusted frames' jobs {key: job} and their answers.
        self._by_record: dict[tuple, tuple[dict, set]] = {}
        answers: set = set()
        for key, job in jobs.items():
            rec = owner[key]
            roots = list(job.context_roots.values())
            if rec is not None and self._trusted(roots):
                got = self._by_record.setdefault(rec, ({}, set()))
                got[0][key] = job
                for r in roots:
                    got[1].update(r.answers)
                    answers.update(r.answers)
        # All of them, and how many records each answer serves: the pause takes out the
        # few goroutines walked again rather than put together the many kept.
        self._all_jobs = {k: j for jobs_, _a in self._by_record.values() for k, j in jobs_.items()}
        self._all_answers = answers
        self._served = Counter(a for _jobs, rec_answers in self._by_record.values()
                               for a in rec_answers)
        self.early = self._decode_early(answers, read_batch, deadline)
        for n in self.walk._nodes.values():
            n.early = True

    def _read(self, read_batch, deadline: float) -> int:
        rounds = 0
        walk = self.walk
        while rounds < WALK_ROUNDS and not walk.structure_done and time.monotonic() < deadline:
            reqs = walk.requests()
            if not reqs:
                break
            walk.feed(read_batch(reqs))
            rounds += 1
        walk.requests()   # settles what the last round's bytes allow
        return rounds

    def _decode_early(self, answers: set, read_batch, deadline: float) -> Early:
        """Every answer decoded now, in rounds, with the bytes it read; one that needed a
        read not made (rounds, time) or that failed is left to the pause."""
        walk, out = self.walk, Early()
        mem = walk.mem
        left = set(answers)
        self._prefetch(left, read_batch)
        rounds, final = 0, False
        while True:
            if final:
                # Only constant data left (read from the file): decode what waits for it.
                mem.final, mem.final_why = True, PREWALK_CUT
            for a in list(left):
                rec = Recorder(mem)
                got = walk._decode(*a, mem=rec)
                if got is PENDING:
                    continue
                left.discard(a)
                if a[0] == "value" and self._immutable(got[0]):
                    rec.reads.clear()   # nothing it read can change
                if not rec.cut:
                    out.results[a] = got
                    for r, b in rec.reads.items():
                        out.bytes[r] = b
                        out.users.setdefault(r, []).append(a)
            if final or not left:
                break
            reqs = mem.take_requests()
            rounds += 1
            if not reqs or rounds > WALK_ROUNDS or time.monotonic() > deadline:
                final = True
                continue
            mem.feed(read_batch(reqs))
        return out

    def _prefetch(self, answers: set, read_batch) -> None:
        """The boxes the values are in, read in one round before the first decode (which
        would otherwise ask for them, then decode every value a second time)."""
        walk, debug, bias = self.walk, self.plan.debug, self.plan.bias
        for kind, n in answers:
            if kind != "value":
                continue
            t, off = n.layer.val
            word, data = u(n.sb, off, 8), u(n.sb, off + 8, 8)
            dyn = debug.type_by_runtime_addr(word - bias) if word and t.kind != "iface" \
                else None
            if dyn is not None and dyn.size and data and not is_direct_iface(dyn):
                walk.mem.read(data, dyn.size)
        reqs = walk.mem.take_requests()
        if reqs:
            walk.mem.feed(read_batch(reqs))

    def _immutable(self, type_name: str) -> bool:
        """A value of this dynamic type, held by an interface, can never change: Go boxes
        a copy nobody can get a pointer to, and it holds no pointer (strings' bytes never
        change either). So its bytes read before the pause are its bytes in it."""
        got = self._immutables.get(type_name)
        if got is None:
            t = self.plan.debug.type_by_name(type_name) if type_name else None
            got = self._immutables[type_name] = t is not None and not is_direct_iface(t) \
                and pointer_free(t)
        return got

    def _trusted(self, roots: list) -> bool:
        """Every chain read whole through standard layers; their answers are worked out
        now (which layer answers is a matter of links only)."""
        walk = self.walk
        if not all(walk.trusted(r) for r in roots):
            return False
        for r in roots:
            walk.answers(r)
        return True

    def __len__(self) -> int:
        return sum(len(jobs) for jobs, _answers in self._by_record.values())

    def kept(self, superseded: set, budget) -> Kept:
        """The frames of goroutines the pause did not walk again (their records' keys
        not in `superseded`). Their jobs read nothing of their own (every expression is
        the walk's): the budget is the walk's alone."""
        out = Kept(self.plan, budget, dict(self._all_jobs), set(self._all_answers),
                   self.walk._key_sets, self.early)
        gone = [self._by_record[rec] for rec in superseded if rec in self._by_record]
        left: Counter = Counter()
        for rec_jobs, rec_answers in gone:
            for key in rec_jobs:
                del out.jobs[key]
            left.update(rec_answers)
        out.answers.difference_update(a for a, n in left.items() if n >= self._served[a])
        return out


SCALARS = ("bool", "int", "uint", "uintptr", "float", "complex", "string")


def pointer_free(t, depth: int = 0) -> bool:
    """No pointer inside a value of t (a string's bytes count as its own: immutable)."""
    if t.kind in SCALARS:
        return True
    if depth > 8:
        return False
    if t.kind == "array":
        return t.elem is not None and pointer_free(t.elem, depth + 1)
    if t.kind == "struct":
        return all(pointer_free(f.type, depth + 1) for f in t.fields)
    return False
