"""Reading Go maps: the classic hmap of buckets and overflow chains (Go <= 1.23) and the
swiss tables of 8-slot groups (Go >= 1.24). `MapReader` is part of values.ValueDecoder, kept
here because each layout is its own walk; it relies on the decoder's read/_cut/value and
its limits."""
from __future__ import annotations

from pytest_sideeye.binary import GoType
from pytest_sideeye.capture.mapkeys import string_keyed
from pytest_sideeye.capture.memory import PENDING, Cut, i_, u


class MapReader:
    """values.ValueDecoder's map methods."""

    def map(self, t: GoType, ptr: int, depth: int):
        if ptr == 0:
            return None
        entries = self.map_entries(t, ptr)
        if entries is PENDING:
            return PENDING
        if isinstance(entries, dict):
            return entries
        pairs = [(self.value(kt, kb, koff, kaddr, depth), self.value(vt, vb, voff, vaddr, depth))
                 for kt, kb, koff, kaddr, vt, vb, voff, vaddr in entries]
        if any(k is PENDING or v is PENDING for k, v in pairs):
            return PENDING
        if t.key is not None and t.key.kind == "string":
            return string_keyed(pairs)
        return [[k, v] for k, v in pairs]

    def map_entries(self, t: GoType, ptr: int, limit: int | None = None):
        """Entries as (ktype, kbytes, koff, kaddr, vtype, vbytes, voff, vaddr); PENDING;
        or a cut dict. At most `limit` entries (default: the map limit)."""
        h = t.impl
        if h is None:
            return {"$ptr": f"{ptr:#x}", "$cut": "unknown map layout"}
        raw = self.read(ptr, h.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            return self._cut(raw)
        if h.field("buckets") is not None:
            return self._classic_entries(h, raw, limit)
        if h.field("dirPtr") is not None:
            return self._swiss_entries(h, raw, limit)
        return {"$ptr": f"{ptr:#x}", "$cut": "unknown map layout"}

    def _entry_limit(self, kt: GoType, vt: GoType) -> int:
        return max(1, self.limits.map_bytes // max(kt.size + vt.size, 1))

    def _blocks(self, addr: int, size: int):
        """A map's buckets or groups read at once: bytes, PENDING, or None when cut (the
        cut is recorded)."""
        blob = self.read(addr, size)
        if isinstance(blob, Cut):
            self._cut(blob)
            return None
        return blob

    def _classic_entries(self, h: GoType, raw: bytes, limit: int | None):
        """Go <= 1.23: hmap with 2^B buckets of 8 slots, overflow chains, maybe growing."""
        count = u(raw, h.field("count").offset, 8)
        B = u(raw, h.field("B").offset, 1)
        flags = u(raw, h.field("flags").offset, 1)
        bucket_t = h.field("buckets").type.elem
        buckets = u(raw, h.field("buckets").offset, 8)
        old = u(raw, h.field("oldbuckets").offset, 8)
        keys_f, vals_f = bucket_t.field("keys"), bucket_t.field("values") or bucket_t.field("elems")
        kt, vt = keys_f.type.elem, vals_f.type.elem
        limit = limit or self._entry_limit(kt, vt)
        out: list = []
        groups = [(buckets, 1 << B)]
        if old:
            same_size = flags & 8
            groups.append((old, (1 << B) if same_size else max(1, 1 << max(B - 1, 0))))
        pending = False
        for base, n in groups:
            # Enough buckets for the entry limit at average load, in one read.
            n_read = min(n, max(1, (limit * 2 + 7) // 8))
            if n_read < n:
                self.truncated = True
            blob = self._blocks(base, n_read * bucket_t.size)
            if blob is None or blob is PENDING:
                pending = pending or blob is PENDING
                continue
            for i in range(n_read):
                r = self._bucket_chain(bucket_t, blob, i * bucket_t.size, base + i * bucket_t.size,
                                       kt, vt, keys_f, vals_f, out, limit)
                pending = pending or r
                if len(out) >= limit:
                    break
        if pending:
            return PENDING
        if len(out) < count:
            self.truncated = True
        return out[:limit]

    def _bucket_chain(self, bt, blob, off, addr, kt, vt, keys_f, vals_f, out, limit) -> bool:
        """Collect a bucket's live entries and follow its overflow chain; True if pending."""
        for _hop in range(64):
            for j in range(8):
                top = blob[off + j]
                if top >= 5:  # minTopHash: below are empty / evacuated markers
                    out.append((kt, blob, off + keys_f.offset + j * kt.size,
                                addr + keys_f.offset + j * kt.size,
                                vt, blob, off + vals_f.offset + j * vt.size,
                                addr + vals_f.offset + j * vt.size))
            ovf = u(blob, off + bt.field("overflow").offset, 8)
            if not ovf or len(out) >= limit:
                return False
            nxt = self.read(ovf, bt.size)
            if nxt is PENDING:
                return True
            if isinstance(nxt, Cut):
                self._cut(nxt)
                return False
            blob, off, addr = nxt, 0, ovf
        return False

    def _swiss_entries(self, h: GoType, raw: bytes, limit: int | None):
        """Go >= 1.24 swiss tables: a directory of tables of 8-slot groups with a control
        word; with dirLen == 0 the directory pointer is one group (a small map)."""
        used = u(raw, h.field("used").offset, 8)
        dir_ptr = u(raw, h.field("dirPtr").offset, 8)
        dir_len = i_(raw, h.field("dirLen").offset, 8)
        table_t = h.field("dirPtr").type.elem.elem
        gref = table_t.field("groups")
        group_t = gref.type.field("data").type.elem
        slots_f = group_t.field("slots")
        slot_t = slots_f.type.elem
        kf, vf = slot_t.field("key"), slot_t.field("elem")
        limit = limit or self._entry_limit(kf.type, vf.type)
        out: list = []
        if used == 0 or dir_ptr == 0:
            return out
        if dir_len == 0:
            g = self.read(dir_ptr, group_t.size)
            if g is PENDING:
                return PENDING
            if isinstance(g, Cut):
                return self._cut(g)
            self._group(group_t, slots_f, slot_t, kf, vf, g, 0, dir_ptr, out)
            if len(out) > limit:
                self.truncated = True
            return out[:limit]
        d = self.read(dir_ptr, 8 * min(dir_len, 1 << 16))
        if d is PENDING:
            return PENDING
        if isinstance(d, Cut):
            return self._cut(d)
        tables = list(dict.fromkeys(u(d, 8 * i, 8) for i in range(min(dir_len, 1 << 16))))
        pending = False
        for tp in tables:
            if len(out) >= limit:
                break
            tr = self.read(tp, table_t.size)
            if tr is PENDING:
                pending = True
                continue
            if isinstance(tr, Cut):
                self._cut(tr)
                continue
            data = u(tr, gref.offset + gref.type.field("data").offset, 8)
            mask = u(tr, gref.offset + gref.type.field("lengthMask").offset, 8)
            ngroups = mask + 1
            n_read = min(ngroups, max(1, (limit * 2 + 7) // 8))
            blob = self._blocks(data, n_read * group_t.size)
            if blob is None or blob is PENDING:
                pending = pending or blob is PENDING
                continue
            for i in range(n_read):
                self._group(group_t, slots_f, slot_t, kf, vf, blob, i * group_t.size,
                            data + i * group_t.size, out)
        if pending:
            return PENDING
        if len(out) < used or len(out) > limit:
            self.truncated = True
        return out[:limit]

    @staticmethod
    def _group(group_t, slots_f, slot_t, kf, vf, blob, off, addr, out) -> None:
        ctrl = blob[off + group_t.field("ctrl").offset: off + group_t.field("ctrl").offset + 8]
        for j in range(8):
            if ctrl[j] & 0x80:  # empty or deleted; full slots hold the low 7 hash bits
                continue
            so = off + slots_f.offset + j * slot_t.size
            sa = addr + slots_f.offset + j * slot_t.size
            out.append((kf.type, blob, so + kf.offset, sa + kf.offset,
                        vf.type, blob, so + vf.offset, sa + vf.offset))
