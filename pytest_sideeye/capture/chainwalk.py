"""Every frame's context chain read together, level by level (context rules: contexts.py).

A context chain is made of nodes whose links never change once built (valueCtx's key, val
and parent; cancelCtx's parent; timerCtx's deadline): only a cancelCtx's err (and done)
change, and they are read in the same instant as the rest. So the frames of a snapshot are
not walked one by one: the walk reads, in each round, the nodes of one more level for all
frames at once (one batched read), only the bytes of each node's own struct, and a node
shared by several chains (a server's base context, Background) once. Which layer answers
what is decided on the nodes read (no decoding); the generic decoder runs only on the
values found, deadlines and errors, once per node that answers, reading in later rounds
what they point to. What is read is read in the pause; the values' last decoding (string
literals read from the file) happens after the resume (finish).

    walk = ChainWalk.attach(jobs)       # None when no job has a context expression
    walk.requests() / walk.feed(results) each round, with the jobs' own (plan.run_rounds)
    walk.variable(root, expr)           # after finish(): the snapshot.Variable

The answers are those of contexts.py's per-frame walk (the fallback for frames read after
the resume): a value is the nearest valueCtx's whose key has the type; the deadline the
nearest standard layer's with one, the error likewise; withoutCancelCtx hides both.
"""
from __future__ import annotations

from pytest_sideeye.capture import contexts as ctx
from pytest_sideeye.capture.interfaces import is_direct_iface
from pytest_sideeye.capture.memory import PENDING, Memory, u
from pytest_sideeye.capture.values import ValueDecoder
from pytest_sideeye.snapshot import Variable

WALK_ROUNDS = ctx.MAX_LAYERS + 8   # a level a round, then the values' own reads


class _Layer:
    """What a dynamic context type holds, where (one per type, shared by its nodes)."""
    __slots__ = ("why", "st", "size", "key", "val", "deadline", "err", "hides", "parent")

    def __init__(self, dyn=None, why: str | None = None):
        self.why = why
        self.st = self.key = self.val = self.deadline = self.err = self.parent = None
        self.size, self.hides = 0, False
        if dyn is None:
            return
        if dyn.kind == "ptr" and dyn.elem is not None:
            st = dyn.elem                    # *valueCtx, *cancelCtx, ...
        elif dyn.kind == "struct" and not is_direct_iface(dyn):
            st = dyn                         # a struct stored by value: data points to it
        else:
            return                           # backgroundCtx, todoCtx: the end
        if not st.size:
            return
        self.st, self.size = st, st.size
        if st.name == "context.valueCtx":
            kf, vf = st.field("key"), st.field("val")
            if kf is not None and vf is not None:
                self.key, self.val = (kf.type, kf.offset), (vf.type, vf.offset)
        if st.name.startswith("context."):
            self.deadline = ctx._field(st, "deadline")
            self.err = ctx._field(st, "err")
        self.hides = st.name == "context.withoutCancelCtx"
        self.parent = ctx._parent(st)


class _Node:
    """One context value (itab, data) met in some chain."""
    __slots__ = ("itab", "data", "layer", "sb", "why", "parent", "key", "level", "early")

    def __init__(self, itab: int, data: int, level: int):
        self.itab, self.data, self.level = itab, data, level
        self.layer = self.sb = self.why = self.parent = self.key = None
        # Read before the pause (prewalk.py): its links hold, its err must be read again.
        self.early = False


class Root:
    """A frame's context variable: where its interface value is, the node it holds, the
    key types asked of it, and (once its chain is read) the nodes that answer."""
    __slots__ = ("pieces", "node", "why", "read", "keys", "answers")

    def __init__(self, pieces: list[tuple[int, int]], keys=()):
        self.pieces, self.node, self.why, self.read = pieces, None, None, False
        self.keys = keys
        self.answers: list | None = None


class ChainWalk:
    """The context chains of one process's captured frames (one Memory, one budget)."""

    def __init__(self, plan, budget, structure_only: bool = False):
        self.debug, self.bias, self.limits = plan.debug, plan.bias, plan.limits
        self.constant = plan.constant
        self.budget = budget
        # The generic decoder's reads (values found, deadlines' zones, errors' texts).
        self.mem = Memory(budget, plan.limits.merge_gap, plan.constant)
        self.roots: list[Root] = []
        self._open_roots: list[Root] = []
        self._open: list[_Node] = []
        self._nodes: dict[tuple[int, int], _Node] = {}
        self._layers: dict[int, _Layer] = {}        # itab -> layer
        self._keys: dict[int, object] = {}           # key's type word -> type name
        self._got: dict[tuple[int, int], bytes | None] = {}
        self._want: set[tuple[int, int]] = set()
        self._issued: list[tuple[int, int]] = []
        self._mem_issued: list[tuple[int, int]] = []
        self._keys_wanted: set[str] = set()
        self._key_sets: set[tuple[str, ...]] = set()
        self._decodes: dict[tuple[str, _Node], object] | None = None
        self._undecoded: list | None = None   # those of _decodes still PENDING
        self._adopted: set = set()   # the answers of the roots read before the pause
        # Their decodes made before the pause (prewalk.Early), checked in the first round.
        self._early = None
        self._verifying = False
        self._verified: dict = {}
        self.stale = 0                # early answers whose bytes changed: decoded again
        self._values: dict = {}
        self._times: dict = {}
        self.finished = False     # nothing left to read in the pause
        self._fed = False         # bytes came in since the walk was set up
        self._final = False       # finish() ran: every answer decoded
        # Only the chains' links, no answer decoded (prewalk.py: read before the pause).
        self.structure_only = structure_only

    # --- setting up ---------------------------------------------------------------------
    @classmethod
    def attach(cls, jobs, kept=None) -> "ChainWalk | None":
        """A walk of the context variables of every job (FrameJob) that has context
        expressions, each job told of it (job.contexts, job.context_roots); and of the
        `kept` frames' chains, read before the pause (prewalk.Kept)."""
        walk = None
        for job in jobs:
            if not job.has_contexts:
                continue
            if walk is None:
                walk = cls(job.plan, job.budget)
            job.attach_contexts(walk)
        if kept is not None and kept.jobs:
            if walk is None:
                walk = cls(kept.plan, kept.budget)
            walk.adopt(kept)
        return walk

    def add_root(self, pieces: list[tuple[int, int]], keys) -> Root:
        """A context variable whose interface value is in memory at `pieces`
        ((address, size) each, in order): its chain is walked."""
        root = Root(pieces, keys)
        self.roots.append(root)
        self._open_roots.append(root)
        for addr, size in pieces:     # asked for now: the first round reads every root
            self._read(addr, size)
        self._want_keys(keys)
        return root

    def _want_keys(self, keys) -> None:
        if keys and keys not in self._key_sets:
            self._key_sets.add(keys)
            self._keys_wanted.update(keys)

    def adopt(self, kept) -> None:
        """Frames whose chains were read before the pause (prewalk.Kept), their roots'
        answers known: only what changes (errors) and what the values point to are read
        now, by this walk."""
        self._adopted.update(kept.answers)
        for keys in kept.key_sets:
            self._want_keys(keys)
        for job in kept.jobs.values():
            job.contexts = self
        early = kept.early
        if early is not None and early.results and self.budget.take(early.nbytes):
            # The answers decoded before the pause stand if every byte they read is the
            # same now: read those again first (one round), then decode only the others.
            self._early = early
            self._verifying = True
            self._want.update(early.bytes)

    def _verify(self) -> None:
        """The early answers none of whose bytes changed, taken as decoded now."""
        got, early = self._got, self._early
        stale: set = set()
        for r, b in early.bytes.items():
            if got.get(r) != b:
                stale.update(early.users[r])
        self._verified = {a: res for a, res in early.results.items() if a not in stale}
        self.stale = len(stale)
        self._verifying = False

    @property
    def structure_done(self) -> bool:
        """Every chain's links read (or cut)."""
        return not self._open_roots and not self._open

    def trusted(self, root: Root) -> bool:
        """The root's chain was read whole, every layer one of the standard library's
        context types, whose links never change once built (a program's own type might)."""
        if root.why or not root.read:
            return False
        n = root.node
        while n is not None:
            if n.why or n.layer is None or (n.layer.st is not None and
                                            not n.layer.st.name.startswith("context.")):
                return False
            n = n.parent
        return True

    # --- the round protocol ----------------------------------------------------------------
    def requests(self) -> list[tuple[int, int]]:
        if self.finished:
            return []
        self._advance()
        self._issued = list(self._want)
        self._want.clear()
        self._mem_issued = self.mem.take_requests()
        if not self._issued and not self._mem_issued:
            self.finished = True
        return self._issued + self._mem_issued

    def feed(self, results: dict) -> None:
        self._fed = True
        got = self._got
        for r in self._issued:
            data = results.get(r)
            got[r] = data if data is not None and len(data) >= r[1] else None
        if self._mem_issued:
            self.mem.feed({r: results.get(r) for r in self._mem_issued})
        self._issued, self._mem_issued = [], []
        if self._verifying:
            self._verify()

    def _read(self, addr: int, size: int):
        """Bytes read in an earlier round, None if unreadable, PENDING (asked for)."""
        key = (addr, size)
        if key in self._got:
            return self._got[key]
        if key not in self._want:
            if not self.budget.take(size):
                self._got[key] = None
                return None
            self._want.add(key)
        return PENDING

    def _advance(self) -> None:
        """Everything that the bytes read so far allow: roots' nodes, nodes' layers and
        parents (a parent met again is not read again); when every chain is read, the
        answers' decoding, a pass per round."""
        if self._open_roots and self._fed:     # else still waiting for their first read
            self._open_roots = [r for r in self._open_roots if not self._root(r)]
        if self._open:
            # Parents found on the way join the list (_node) and are settled at once.
            nodes, i = self._open, 0
            while i < len(nodes):
                if self._settle(nodes[i]):
                    nodes[i] = None
                i += 1
            self._open = [n for n in nodes if n is not None]
        if not self._open_roots and not self._open and not self.structure_only and \
                not self._verifying:
            self._decode_pass()

    def _root(self, root: Root) -> bool:
        pieces = root.pieces
        if len(pieces) == 1:
            raw = self._got.get(pieces[0], PENDING)
            if raw is PENDING:
                raw = self._read(*pieces[0])
        else:
            parts = [self._read(addr, size) for addr, size in pieces]   # all asked at once
            raw = PENDING if PENDING in parts else None if None in parts else b"".join(parts)
        if raw is PENDING:
            return False
        if raw is None:
            root.why = f"cannot read the context at {pieces[0][0]:#x} (unreadable)"
            return True
        root.read = True
        itab = u(raw, 0, 8)
        if itab:                                   # else a nil Context: nothing below
            root.node = self._node(itab, u(raw, 8, 8), 0)
        return True

    def _node(self, itab: int, data: int, level: int) -> _Node:
        key = (itab, data)
        n = self._nodes.get(key)
        if n is None:
            n = self._nodes[key] = _Node(itab, data, level)
            if level >= ctx.MAX_LAYERS:
                n.why = f"more than {ctx.MAX_LAYERS} layers"
            else:
                self._open.append(n)
        return n

    def _settle(self, n: _Node) -> bool:
        """Read one node as far as possible; True when nothing more is needed."""
        layer = n.layer or self._layer(n.itab)
        if layer is PENDING:
            return False
        n.layer = layer
        if layer.why:
            n.why = layer.why
            return True
        if layer.st is None or not n.data:
            return True                            # the chain's end
        sb = n.sb or self._read(n.data, layer.size)
        if sb is PENDING:
            return False
        if sb is None:
            n.why = f"cannot read a {layer.st.name} at {n.data:#x} (unreadable)"
            return True
        n.sb = sb
        if layer.key is not None and n.key is None:
            name = self._key_name(sb, layer.key[1])
            if name is PENDING:
                return False
            n.key = name or ""
        if layer.parent is not None:
            off = layer.parent[1]
            itab = u(sb, off, 8)
            if itab:
                n.parent = self._node(itab, u(sb, off + 8, 8), n.level + 1)
        return True

    def _layer(self, itab: int):
        layer = self._layers.get(itab)
        if layer is not None:
            return layer
        at = itab + 8                              # itab.Type / itab._type: second word
        raw = self.constant.read(at, 8) if self.constant is not None and \
            self.constant.covers(at, 8) else None
        if raw is None:
            raw = self._read(at, 8)
            if raw is PENDING:
                return PENDING
        if raw is None:
            layer = _Layer(why=f"unknown context type at {at:#x}")
        else:
            rtype = u(raw, 0, 8)
            dyn = self.debug.type_by_runtime_addr(rtype - self.bias)
            layer = _Layer(dyn) if dyn is not None else \
                _Layer(why=f"unknown context type at {rtype:#x}")
        self._layers[itab] = layer
        return layer

    def _key_name(self, sb: bytes, off: int):
        """The dynamic type's name of a valueCtx's key (an `any`), once per type."""
        word = u(sb, off, 8)
        if not word:
            return None
        name = self._keys.get(word)
        if name is None:
            dyn = self.debug.type_by_runtime_addr(word - self.bias)
            if dyn is not None:
                name = dyn.name
            else:
                dec = ValueDecoder(self.debug, self.mem, self.limits, self.bias)
                name = ctx._rtype_name(dec, word)
                if name is PENDING:
                    return PENDING
            self._keys[word] = name
        return name

    # --- answers ----------------------------------------------------------------------------
    def _value(self, n: _Node | None, key: str):
        """(the nearest node holding a value under a key of type `key`, why cut)."""
        if n is None:
            return None, None
        memo = self._values.get((n, key))
        if memo is not None:
            return memo
        if n.why:
            got = (None, n.why)
        elif n.key is not None and n.key in (key, "*" + key):
            got = (n, None)
        else:
            got = self._value(n.parent, key)
        self._values[(n, key)] = got
        return got

    def _deadline_err(self, n: _Node | None):
        """(the node answering Deadline(), the one answering Err(), why cut)."""
        if n is None:
            return None, None, None
        memo = self._times.get(n)
        if memo is not None:
            return memo
        layer = n.layer
        if n.why:
            got = (None, None, n.why)
        else:
            d = n if layer.deadline is not None and n.sb is not None else None
            e = n if layer.err is not None and n.sb is not None else None
            if (d or layer.hides) and (e or layer.hides) or n.parent is None:
                got = (d, e, None)
            else:
                pd, pe, why = self._deadline_err(n.parent)
                got = (d or (None if layer.hides else pd), e or (None if layer.hides else pe),
                       why)
        self._times[n] = got
        return got

    def answers(self, root: Root) -> list:
        """The decodes a root's answers need, [(kind, node)], once per root (structure
        only: a pre-walked root comes with them)."""
        if root.answers is None:
            out = []
            n = root.node
            if n is not None:
                for key in root.keys or self._keys_wanted:
                    found, _why = self._value(n, key)
                    if found is not None:
                        out.append(("value", found))
                d, e, _why = self._deadline_err(n)
                if d is not None:
                    out.append(("deadline", d))
                if e is not None:
                    out.append(("err", e))
            root.answers = out
        return root.answers

    def _answering(self) -> dict:
        """The decodes the roots' answers need: (kind, node) -> PENDING until decoded."""
        # The pre-walked answers that stand (a few of goroutines walked again among them:
        # never asked for), the others to decode.
        verified = self._verified
        out: dict = dict(verified)
        out.update(dict.fromkeys(self._adopted.difference(verified), PENDING))
        for root in self.roots:
            for job in self.answers(root):
                if job not in verified:
                    out[job] = PENDING
        return out

    def _decode_pass(self) -> None:
        if self._decodes is None:
            self._decodes = self._answering()
        left = self._undecoded
        if left is None:
            left = self._undecoded = [job for job, got in self._decodes.items() if got is PENDING]
        for job in left:
            self._decodes[job] = self._decode(*job)
        self._undecoded = [job for job in left if self._decodes[job] is PENDING]

    def _decode(self, kind: str, n: _Node, mem=None):
        """(type name, value, truncated, errors) of one answer, or PENDING; `mem`: what
        to read through instead of the walk's own (prewalk.Recorder)."""
        dec = ValueDecoder(self.debug, mem or self.mem, self.limits, self.bias)
        layer, sb = n.layer, n.sb
        if kind == "value":
            t, off = layer.val
            name, value = dec.interface(t, sb, off, n.data + off, 0)
            got = (name or "", value, dec.truncated, dec.errors[:1])
        elif kind == "deadline":
            t, off = layer.deadline
            value = dec.value(t, sb, off, n.data + off)
            got = ("time.Time", value, False, [])
        else:
            t, off = layer.err
            if n.early:
                # A cancel may have come since the chain was read: its err is read now.
                fresh = self._read(n.data + off, t.size)
                if fresh is PENDING or fresh is None:
                    return PENDING if fresh is PENDING else \
                        ("error", None, True, ["cannot read the context's err (unreadable)"])
                sb = sb[:off] + fresh + sb[off + t.size:]
            elif mem is not None:
                mem.saw(n.data + off, sb[off:off + t.size])   # the err words: they change
            value = ctx._error_text(dec, t, sb, off)
            got = ("error", value, False, [])
        return PENDING if dec.pending or value is PENDING else got

    def finish(self) -> None:
        """After the pause: what was not read is cut, every answer decoded (constant data
        from the file)."""
        if self._final:
            return
        self._final = self.finished = True
        for r in self._open_roots:
            if not self._root(r):
                r.why = f"cannot read the context at {r.pieces[0][0]:#x} (rounds)"
        for n in self._open:
            n.why = f"cannot read the context at {n.data:#x} (rounds)"
        self._open_roots, self._open = [], []
        self.mem.final = True
        self.mem.wanted.clear()
        self._decode_pass()

    def variable(self, root: Root, e) -> Variable:
        """The Variable of a context expression on a root, after finish()."""
        self.finish()
        step = e.steps[0]
        if root.why:
            found, d, err, why = None, None, None, root.why
        elif step.op == ctx.OP_VALUE:
            found, why = self._value(root.node, step.arg)
            d = err = None
        else:
            found = None
            d, err, why = self._deadline_err(root.node)
        if step.op in (ctx.OP_DEADLINE, ctx.OP_ERR):
            deadline = step.op == ctx.OP_DEADLINE
            _name, value, truncated, errors = self._decoded(*(("deadline", d) if deadline
                                                              else ("err", err)))
            return Variable(e.text, "time.Time" if deadline else "error", value,
                            truncated=truncated or bool(why),
                            error=why or (errors[0] if errors else None))
        if found is None:
            return Variable(e.text, "", None, truncated=bool(why),
                            error=why or ctx.NOT_FOUND)
        name, value, truncated, errors = self._decoded("value", found)
        return Variable(e.text, name, value, truncated=truncated or bool(why),
                        error=why or (errors[0] if errors else None))

    def _decoded(self, kind: str, n: _Node | None):
        if n is None:
            return "", None, False, []
        got = (self._decodes or {}).get((kind, n), PENDING)
        if got is PENDING:                # not planned (a root read late): decode now
            got = self._decode(kind, n)
            if got is PENDING:
                return "", None, True, ["cut: not read in the pause"]
        return got
