"""Timestamps, durations and event sort keys (SPEC §2.3, §2.4, §7.2).

Instants are integers: nanoseconds since the Unix epoch.  thrum writes UTC with
exactly six fractional digits and compares instants, never text.

The parser is a precompiled regular expression plus integer arithmetic (days
from a civil date), because it runs for every line of every rebuild, with a
fast path for UTC ``Z`` timestamps that caches the instant of up to 4096
recent minutes; another cache maps up to 4096 recent ``YYYY-MM-DD`` strings to
day numbers.  Formatting uses the inverse arithmetic instead of
:mod:`datetime`, caching the text of up to 4096 recent whole seconds.

**Range.** Only instants from 1970-01-01T00:00:00Z up to (not including)
10^20 ns (year 5138) are accepted as parseable.  The sort-key text of a
projection row (§7.2) is a 20-digit zero-padded ``instant_ns``; restricting the
parser to that domain keeps text order equal to key order, and makes an
earlier timestamp (for example Go's zero time ``0001-01-01T00:00:00Z``) behave
exactly like an unparseable one: the line sorts first and is never projected.

Standard library only: the CLI imports this module.
"""

from __future__ import annotations

import _thread
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = [
    "TS_MAX_NS",
    "TS_MIN_NS",
    "MonotonicClock",
    "format_parsed_ts",
    "format_ts",
    "format_ts_seconds",
    "now_ns",
    "parse_duration_ns",
    "parse_point_in_time",
    "parse_ts_ns",
    "sort_key",
    "sort_key_text",
]

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
_S_PER_DAY = 86_400

#: Smallest instant :func:`parse_ts_ns` accepts (the epoch).
TS_MIN_NS = 0
#: Largest instant :func:`parse_ts_ns` accepts (fits the 20-digit sort-key text).
TS_MAX_NS = 10**20 - 1

# Patterns are compiled on first use, not at import (CLI start-up time); the hot
# timestamp pattern is kept in a global, the others in re's own cache.
# [0-9] rather than \d: \d also matches non-ASCII digits.
_TS_PATTERN = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_TS_RE: re.Pattern[str] | None = None
_DATE_PATTERN = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_DUR_PATTERN = r"[+-]?(?:[0-9]+(?:ms|s|m|h|d|w))+"
_DUR_PART_PATTERN = r"([0-9]+)(ms|s|m|h|d|w)"

_UNIT_NS = {
    "ms": NS_PER_MS,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": _S_PER_DAY * NS_PER_S,
    "w": 7 * _S_PER_DAY * NS_PER_S,
}

# Zero padding for 1..9 fractional digits, as a multiplier to nanoseconds.
_FRAC_SCALE = (0, 10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 10**2, 10, 1)
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Two-digit field text → seconds, only for valid values: a dict lookup is
# several times cheaper than int() plus a range check.
_HOUR_S = {f"{i:02d}": i * 3600 for i in range(24)}
_MIN_S = {f"{i:02d}": i * 60 for i in range(60)}
_SEC = {f"{i:02d}": i for i in range(60)}
# Day numbers of recently seen dates; log lines cluster on few days.  Bounded:
# emptied when full.
_DAY_CACHE: dict[str, int] = {}
_DAY_CACHE_MAX = 4096


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Store ``value`` in one of the bounded caches below, emptying it first when full."""
    if len(cache) >= _DAY_CACHE_MAX:
        cache.clear()
    cache[key] = value


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Inverse of :func:`_days_from_civil`: (year, month, day)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _valid_date(y: int, m: int, d: int) -> bool:
    if not 1 <= m <= 12 or d < 1:
        return False
    if m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        return d <= 29
    return d <= _MONTH_DAYS[m]


def _split_ns(ns: int) -> tuple[int, int, int, int, int, int, int]:
    days, rem_ns = divmod(ns, _S_PER_DAY * NS_PER_S)
    secs, frac_ns = divmod(rem_ns, NS_PER_S)
    y, mo, d = _civil_from_days(days)
    if not 0 <= y <= 9999:
        raise ValueError(f"instant {ns} ns is outside years 0000-9999")
    hh, secs = divmod(secs, 3600)
    mi, ss = divmod(secs, 60)
    return y, mo, d, hh, mi, ss, frac_ns


# "YYYY-MM-DDTHH:MM:SS" of recently formatted whole seconds (since the epoch).
# Bounded: emptied when full.  Events cluster in time, so most lookups hit.
_SECOND_TEXT: dict[int, str] = {}
# "YYYY-MM-DDT" of recently formatted day numbers (seconds apart events miss
# the per-second cache but share their day).  Bounded: emptied when full.
_DAY_TEXT: dict[int, str] = {}


def _second_text(sec: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of the whole second ``sec`` (raises outside years 0000-9999)."""
    text = _SECOND_TEXT.get(sec)
    if text is None:
        days, rem = divmod(sec, _S_PER_DAY)
        day = _DAY_TEXT.get(days)
        if day is None:
            y, mo, d, *_ = _split_ns(days * _S_PER_DAY * NS_PER_S)
            day = f"{y:04d}-{mo:02d}-{d:02d}T"
            _remember(_DAY_TEXT, days, day)
        hh, rem = divmod(rem, 3600)
        mi, ss = divmod(rem, 60)
        text = f"{day}{hh:02d}:{mi:02d}:{ss:02d}"
        _remember(_SECOND_TEXT, sec, text)
    return text


def format_ts(ns: int) -> str:
    """Format an instant as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, SPEC §2.3).

    Sub-microsecond digits are truncated (floor), never rounded, so a formatted
    instant never lies after the real one.
    """
    sec, frac_ns = divmod(ns, NS_PER_S)
    return f"{_second_text(sec)}.{frac_ns // NS_PER_US:06d}Z"


def format_parsed_ts(text: str, ns: int) -> str:
    """:func:`format_ts` of ``ns``, where ``parse_ts_ns(text) == ns``, reusing ``text`` when it can.

    Thrum's own form (``...SS.ffffffZ``) is already the formatted text; the
    Go tool's whole seconds (``...SSZ``) only lack the zero fraction.  The
    caller guarantees that ``text`` parsed to ``ns`` (a reducer's event
    ``timestamp`` and its ``ts_ns``); anything else is formatted.
    """
    n = len(text)
    if n == 27 and text[26] == "Z" and text[19] == "." and text[10] == "T":
        return text
    if n == 20 and text[19] == "Z" and text[10] == "T":
        return text[:19] + ".000000Z"
    return format_ts(ns)


def format_ts_seconds(ns: int) -> str:
    """Format an instant as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, fraction truncated)."""
    return _second_text(ns // NS_PER_S) + "Z"


def _compile_ts() -> re.Pattern[str]:
    global _TS_RE
    _TS_RE = re.compile(_TS_PATTERN)
    return _TS_RE


def _days_of_date(date: str) -> int | None:
    """Day number of ``YYYY-MM-DD`` (already known to be digits), ``None`` if no such day."""
    days = _DAY_CACHE.get(date)
    if days is None:
        y, m, d = int(date[:4]), int(date[5:7]), int(date[8:10])
        if not _valid_date(y, m, d):
            return None
        days = _days_from_civil(y, m, d)
        _remember(_DAY_CACHE, date, days)
    return days


# Instants of recently seen "YYYY-MM-DDTHH:MM:" prefixes, for the fast path of
# parse_ts_ns.  Bounded: emptied when full.
_MINUTE_NS: dict[str, int] = {}
# Instants of the midnight of recently seen "YYYY-MM-DDT" prefixes.  Bounded.
_DAY_NS: dict[str, int] = {}
# "00".."59" → ns; a miss is not a valid second.
_SECOND_NS = {f"{i:02d}": i * NS_PER_S for i in range(60)}


def parse_ts_ns(s: object) -> int | None:
    """Parse an RFC 3339 timestamp to integer nanoseconds since the epoch.

    Accepts 0-9 fractional digits and ``Z``/``z`` or ``±hh:mm`` (``T`` may be
    lowercase, as RFC 3339 allows).  Returns ``None`` when ``s`` is not a str,
    does not match, names an impossible date or time (second 60 included), or
    lies outside ``[TS_MIN_NS, TS_MAX_NS]`` (see the module docstring).

    UTC timestamps ending in ``Z`` (what thrum writes, six fractional digits,
    and what the Go tool writes, zero to nine) take a fast path: the instant
    of their minute is cached and the seconds and fraction are added; the
    result is the same (a test holds this).
    """
    if type(s) is not str:
        return None
    n = len(s)
    if 20 <= n <= 30 and s[n - 1] == "Z" and (n == 20 or s[19] == "."):
        base = _MINUTE_NS.get(s[:17])
        if base is None:
            # the minute from its day (cached: events minutes apart share it)
            day = _DAY_NS.get(s[:11])
            if day is None:
                day = _parse_ts_ns(s[:11] + "00:00:00Z")  # checks the date and the "T"
                if day is not None:
                    _remember(_DAY_NS, s[:11], day)
            if day is not None and s[13] == ":" and s[16] == ":":
                hour, minute = _HOUR_S.get(s[11:13]), _MIN_S.get(s[14:16])
                if hour is not None and minute is not None:
                    base = day + (hour + minute) * NS_PER_S
                    _remember(_MINUTE_NS, s[:17], base)
        if base is not None:
            sec = _SECOND_NS.get(s[17:19])
            if sec is not None:
                if n == 20:
                    ns = base + sec
                    return ns if ns <= TS_MAX_NS else None
                frac = s[20 : n - 1]
                if frac.isdigit() and frac.isascii():
                    ns = base + sec + int(frac) * _FRAC_SCALE[n - 21]
                    return ns if ns <= TS_MAX_NS else None
    return _parse_ts_ns(s)


def _parse_ts_ns(s: str) -> int | None:
    """:func:`parse_ts_ns` by the regular expression (any form)."""
    m = (_TS_RE or _compile_ts()).fullmatch(s)
    if m is None:
        return None
    date, hh, mi, ss, frac, sign, oh, om = m.groups()
    days = _days_of_date(date)
    # The lookup tables hold only in-range values, so a miss is an invalid field.
    hour, minute, second = _HOUR_S.get(hh), _MIN_S.get(mi), _SEC.get(ss)
    if days is None or hour is None or minute is None or second is None:
        return None
    secs = days * _S_PER_DAY + hour + minute + second
    if sign is not None:
        off_h, off_m = _HOUR_S.get(oh), _MIN_S.get(om)
        if off_h is None or off_m is None:
            return None
        secs = secs - off_h - off_m if sign == "+" else secs + off_h + off_m
    ns = secs * NS_PER_S
    if frac is not None:
        ns += int(frac) * _FRAC_SCALE[len(frac)]
    if ns < TS_MIN_NS or ns > TS_MAX_NS:
        return None
    return ns


def now_ns() -> int:
    """Return the wall clock as integer nanoseconds since the epoch."""
    return time.time_ns()


class MonotonicClock:
    """Event timestamps that strictly increase at microsecond granularity.

    SPEC §2.3: one daemon never writes two events with the same or a decreasing
    timestamp.  :meth:`next_ns` returns the wall clock truncated to a whole
    microsecond, or the previous value + 1 µs when the clock has not moved on
    (or was stepped back).  Thread-safe.

    ``clock`` is the wall-clock source (``time.time_ns`` by default); tests pass
    a scripted clock to step time backwards.
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._last = -1
        self._lock = _thread.allocate_lock()

    def next_ns(self) -> int:
        """Return the next timestamp (a multiple of 1000 ns), greater than every earlier one."""
        with self._lock:
            t = self._clock() // NS_PER_US * NS_PER_US
            if t <= self._last:
                t = self._last + NS_PER_US
            self._last = t
            return t

    @property
    def last_ns(self) -> int:
        """The value most recently returned by :meth:`next_ns` (-1 before the first call)."""
        return self._last

    def observe(self, ns: int) -> None:
        """Never return ``ns`` or anything earlier from now on.

        Lets a daemon that restarts after its clock was stepped back continue
        after the newest timestamp it already wrote.
        """
        with self._lock:
            ns = ns // NS_PER_US * NS_PER_US
            if ns > self._last:
                self._last = ns


def parse_duration_ns(s: str) -> int:
    """Parse a ``dur`` (SPEC §2.4) to signed nanoseconds.

    ``dur`` = ``[+-]?(<digits>(ms|s|m|h|d|w))+``, e.g. ``30s``, ``-5m``,
    ``1h30m``; ``d`` is 24 h and ``w`` 7 d.  Bare numbers, blanks and unknown
    units raise ``ValueError``.
    """
    if not isinstance(s, str) or re.fullmatch(_DUR_PATTERN, s) is None:
        raise ValueError(
            f"invalid duration {s!r}: expected a number with a unit (ms, s, m, h, d, w), e.g. 30s, 5m, 1h30m"
        )
    total = sum(int(n) * _UNIT_NS[unit] for n, unit in re.findall(_DUR_PART_PATTERN, s))
    return -total if s[0] == "-" else total


def parse_point_in_time(s: str, *, now: int, mode: Literal["before", "after"]) -> int:
    """Resolve a cut-off given as a date, an RFC 3339 timestamp or a ``dur`` (SPEC §2.4).

    - ``YYYY-MM-DD`` → that day at 00:00:00Z.
    - RFC 3339 → that instant.
    - ``dur`` relative to ``now`` (ns).  ``mode="before"`` (purge): an unsigned
      ``dur`` means "that long ago" (``30d`` = now - 30 days); a signed one is
      applied as written.  ``mode="after"`` (wait): the sign is required
      (``-30s`` = 30 s ago, ``+60s`` = 60 s from now).

    Raises ``ValueError`` with a readable message on anything else.
    """
    if mode not in ("before", "after"):
        raise ValueError(f"mode must be 'before' or 'after', not {mode!r}")
    if not isinstance(s, str):
        raise ValueError(f"invalid time {s!r}: expected a string")
    dm = re.fullmatch(_DATE_PATTERN, s)
    if dm is not None:
        year, month, day = (int(g) for g in dm.groups())
        if not _valid_date(year, month, day):
            raise ValueError(f"invalid date {s!r}: no such day")
        ns = _days_from_civil(year, month, day) * _S_PER_DAY * NS_PER_S
        if ns < TS_MIN_NS or ns > TS_MAX_NS:
            raise ValueError(f"invalid date {s!r}: must be between 1970 and 5138")
        return ns
    ts = parse_ts_ns(s)
    if ts is not None:
        return ts
    if re.fullmatch(_DUR_PATTERN, s) is not None:
        signed = s[0] in "+-"
        if mode == "after" and not signed:
            raise ValueError(f"relative time {s!r} needs a sign: -{s} means {s} ago, +{s} means {s} from now")
        delta = parse_duration_ns(s)
        return now + delta if signed else now - delta
    if re.match(_DATE_PATTERN, s) is not None:  # starts like a date: a malformed timestamp
        raise ValueError(
            f"invalid timestamp {s!r}: expected RFC 3339 such as 2026-01-01T00:00:00Z "
            "(with Z or a ±hh:mm offset, at most 9 fractional digits)"
        )
    example = "30d" if mode == "before" else "-30s"
    raise ValueError(
        f"invalid time {s!r}: expected a date (YYYY-MM-DD), an RFC 3339 timestamp "
        f"or a duration such as {example}"
    )


def sort_key(obj: Mapping[str, Any] | None, line: bytes) -> tuple[int, bytes]:
    """Return the SPEC §2.3 sort key ``(instant_ns, event_id as UTF-8)``.

    ``obj`` is the parsed line (``None`` when it did not parse) and ``line`` the
    raw line bytes as stored, without the trailing newline.  A line that did
    not parse, or whose ``timestamp`` is missing or unparseable, gets
    ``(-1, line)`` and so sorts before every valid event.
    """
    if obj is None:
        return (-1, line)
    ns = parse_ts_ns(obj.get("timestamp"))
    if ns is None:
        return (-1, line)
    eid = obj.get("event_id")
    if type(eid) is not str or not eid:
        # Lazy import: ids imports this module at load time.
        from thrum_core.ids import event_id_of

        eid = event_id_of(obj)
    return (ns, eid.encode("utf-8", "surrogatepass"))


def sort_key_text(ns: int, event_id: str) -> str:
    """Return a sort key as text, ``<20-digit zero-padded ns>|<event_id>`` (SPEC §7.2).

    Text order (byte order of the UTF-8) equals key order.  Raises
    ``ValueError`` when ``ns`` lies outside ``[TS_MIN_NS, TS_MAX_NS]``.
    """
    if ns < TS_MIN_NS or ns > TS_MAX_NS:
        raise ValueError(f"instant {ns} ns is outside the sortable range")
    return f"{ns:020d}|{event_id}"
