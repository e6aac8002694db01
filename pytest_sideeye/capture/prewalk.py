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
from dataclasses import dataclass, field

from pytest_sideeye.capture.chainwalk import WALK_ROUNDS, ChainWalk


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


class PreWalk:
    """The context chains of the pre-read's frames, read while the target runs."""

    def __init__(self, plan, frames, read_batch, deadline: float):
        self.plan = plan
        self.walk = ChainWalk(plan, plan.process_budget(), structure_only=True)
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
        for n in self.walk._nodes.values():
            n.early = True
        # By goroutine record: its trusted frames' jobs {key: job} and their answers.
        self._by_record: dict[tuple, tuple[dict, set]] = {}
        for key, job in jobs.items():
            rec = owner[key]
            roots = list(job.context_roots.values())
            if rec is not None and self._trusted(roots):
                got = self._by_record.setdefault(rec, ({}, set()))
                got[0][key] = job
                for r in roots:
                    got[1].update(r.answers)

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
        out = Kept(self.plan, budget, key_sets=self.walk._key_sets)
        jobs, answers = out.jobs, out.answers
        for rec, (rec_jobs, rec_answers) in self._by_record.items():
            if rec not in superseded:
                jobs.update(rec_jobs)
                answers.update(rec_answers)
        return out
