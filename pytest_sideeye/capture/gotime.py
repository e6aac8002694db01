"""time.Time and time.Duration as Go prints them: reading a Time's Location from the
target (`TimeReader`, part of values.ValueDecoder) and the pure formatting of both."""
from __future__ import annotations

import datetime as _dt

from pytest_sideeye.binary import GoType
from pytest_sideeye.capture.memory import PENDING, Cut, i_, u


class TimeReader:
    """values.ValueDecoder's time.Time methods."""

    def time(self, t: GoType, b: bytes, off: int):
        wall = u(b, off + t.field("wall").offset, 8)
        ext = i_(b, off + t.field("ext").offset, 8)
        loc = u(b, off + t.field("loc").offset, 8)
        nsec = wall & ((1 << 30) - 1)
        if wall >> 63:  # hasMonotonic: 33-bit seconds since 1885 in wall, ext is monotonic
            unix = ((wall << 1) & ((1 << 64) - 1)) >> 31
            unix += _WALL_TO_INTERNAL + _INTERNAL_TO_UNIX
        else:
            unix = ext + _INTERNAL_TO_UNIX
        offset = 0
        if loc:
            offset = self._zone_offset(t.field("loc").type.elem, loc, unix)
            if offset is PENDING:
                return PENDING
        return format_rfc3339(unix, nsec, offset)

    def _zone_offset(self, loc_t: GoType, loc: int, unix: int):
        raw = self.read(loc, loc_t.size)
        if raw is PENDING:
            return PENDING
        if isinstance(raw, Cut):
            self._cut(raw)
            return 0
        fo = {f.name: f for f in loc_t.fields}
        cstart, cend = i_(raw, fo["cacheStart"].offset, 8), i_(raw, fo["cacheEnd"].offset, 8)
        czone = u(raw, fo["cacheZone"].offset, 8)
        zone_t = fo["zone"].type.elem
        zoff = zone_t.field("offset").offset
        if czone and cstart <= unix < cend:
            z = self.read(czone + zoff, 8)
            if z is PENDING:
                return PENDING
            return 0 if isinstance(z, Cut) else i_(z, 0, 8)
        zones_ptr, nzones = u(raw, fo["zone"].offset, 8), i_(raw, fo["zone"].offset + 8, 8)
        tx_ptr, ntx = u(raw, fo["tx"].offset, 8), i_(raw, fo["tx"].offset + 8, 8)
        if nzones <= 0 or nzones > 4096 or ntx < 0 or ntx > 1 << 16:
            return 0
        zones = self.read(zones_ptr, nzones * zone_t.size)
        tx_t = fo["tx"].type.elem
        txs = self.read(tx_ptr, ntx * tx_t.size) if ntx else b""
        if zones is PENDING or txs is PENDING:
            return PENDING
        if isinstance(zones, Cut) or isinstance(txs, Cut):
            return 0
        idx = 0
        when_off, index_off = tx_t.field("when").offset, tx_t.field("index").offset
        for i in range(ntx):
            if i_(txs, i * tx_t.size + when_off, 8) <= unix:
                idx = txs[i * tx_t.size + index_off]
            else:
                break
        if idx >= nzones:
            idx = 0
        return i_(zones, idx * zone_t.size + zoff, 8)


_SECONDS_PER_DAY = 86400
_UNIX_TO_INTERNAL = (1969 * 365 + 1969 // 4 - 1969 // 100 + 1969 // 400) * _SECONDS_PER_DAY
_INTERNAL_TO_UNIX = -_UNIX_TO_INTERNAL
_WALL_TO_INTERNAL = (1884 * 365 + 1884 // 4 - 1884 // 100 + 1884 // 400) * _SECONDS_PER_DAY


def format_rfc3339(unix: int, nsec: int, offset: int) -> str:
    """Go's Format(time.RFC3339Nano): trailing zeros of the fraction dropped, Z for UTC."""
    try:
        d = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=unix + offset)
    except OverflowError:
        return f"unix:{unix}.{nsec:09d}"
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    if d.year < 1000:
        s = f"{d.year:04d}" + s[s.index("-"):]
    if nsec:
        s += "." + f"{nsec:09d}".rstrip("0")
    if offset == 0:
        return s + "Z"
    sign = "+" if offset > 0 else "-"
    m = abs(offset) // 60
    return f"{s}{sign}{m // 60:02d}:{m % 60:02d}"


def go_duration(d: int) -> str:
    """time.Duration.String(): "1.5s", "2h0m0.000003s", "350ms", "0s"."""
    if d == 0:
        return "0s"
    neg = d < 0
    v = -d if neg else d
    if v < 1_000_000_000:
        for unit, scale in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if v < scale * 1000:
                out = _fmt_frac(v, scale) + unit
                break
    else:
        secs = _fmt_frac(v % 60_000_000_000, 1_000_000_000) + "s"
        mins = v // 60_000_000_000
        if mins == 0:
            out = secs
        else:
            hours, mins = divmod(mins, 60)
            out = (f"{hours}h" if hours else "") + f"{mins}m" + secs
    return "-" + out if neg else out


def _fmt_frac(v: int, scale: int) -> str:
    whole, frac = divmod(v, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
