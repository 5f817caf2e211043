"""pg_stat_statements, given a time dimension: counters, snapshots and estimates.

pg_stat_statements keeps cumulative counters per (user, database, queryid) since
its last reset (``pg_stat_statements_info.stats_reset``), with no notion of
when a call happened. :class:`Snapshots` gives it one: the sandbox reads the
counters of every running service periodically (and at each API request) and
keeps, per statement, the points at which they changed. A window's figures are
the difference between the value at its end and at its start; a statement not
yet seen at the window's start counts from zero, so activity from before the
sandbox's first read is attributed to the first window reaching it. A reset
(counters going down) is folded in, so windows spanning one stay right.

Also here: the statement's operation from its text (:func:`db_operation`) and
duration percentiles from what is known (:func:`duration_quantiles`).
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

import psycopg

__all__ = [
    "OPERATIONS",
    "Counters",
    "Key",
    "Snapshots",
    "Statement",
    "db_operation",
    "duration_quantiles",
    "read_statements",
]

OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE", "UTILITY")
# Points older than this are dropped (the logs API's horizon, too).
RETENTION_S = 30 * 24 * 3600
_IO_TIMES = (  # PostgreSQL 15 names, then 17's
    "blk_read_time",
    "blk_write_time",
    "temp_blk_read_time",
    "temp_blk_write_time",
    "shared_blk_read_time",
    "shared_blk_write_time",
    "local_blk_read_time",
    "local_blk_write_time",
)


class Key(NamedTuple):
    query_id: int
    db_name: str
    db_user: str


class Counters(NamedTuple):
    """The differenceable counters of one statement (times in ms)."""

    calls: float = 0.0
    total_ms: float = 0.0
    sumsq_ms: float = 0.0  # Σ duration², rebuilt from mean and stddev
    rows: float = 0.0
    blks_read: float = 0.0
    blks_hit: float = 0.0
    cpu_ms: float = 0.0  # exec time minus I/O wait (track_io_timing): an estimate
    wal_bytes: float = 0.0

    def plus(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(self, other, strict=True)))

    def minus(self, other: Counters) -> Counters:
        return Counters(*(max(a - b, 0.0) for a, b in zip(self, other, strict=True)))


ZERO = Counters()


@dataclass
class Statement:
    """One statement as read now: its counters, extremes and normalized text."""

    key: Key
    counters: Counters
    min_ms: float
    max_ms: float
    text: str | None


def _counters(s: dict[str, Any]) -> Counters:
    calls = float(s["calls"])
    mean, sd = float(s["mean_exec_time"]), float(s["stddev_exec_time"])
    total = float(s["total_exec_time"])
    io = sum(float(s.get(k) or 0) for k in _IO_TIMES)
    return Counters(
        calls=calls,
        total_ms=total,
        sumsq_ms=calls * (sd * sd + mean * mean),  # stddev is the population one
        rows=float(s["rows"]),
        blks_read=float(s["shared_blks_read"]),
        blks_hit=float(s["shared_blks_hit"]),
        cpu_ms=max(total - io, 0.0),
        wal_bytes=float(s.get("wal_bytes") or 0),
    )


def read_statements(conn: psycopg.Connection[Any], *, text: bool) -> list[Statement]:
    """Every statement of the server, top-level and nested rows merged per key."""
    # to_jsonb keeps this working across pg_stat_statements versions (renamed columns).
    try:
        rows = conn.execute(
            "SELECT d.datname, r.rolname, to_jsonb(s) FROM pg_stat_statements(%s) s"
            " JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid"
            " WHERE s.queryid IS NOT NULL",
            [text],
        ).fetchall()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.ObjectNotInPrerequisiteState):
        return []  # the user dropped the extension: no statistics, rather than an error
    merged: dict[Key, Statement] = {}
    for db, user, s in rows:
        key = Key(int(s["queryid"]), db, user)
        seen = merged.get(key)
        counters, low, high = _counters(s), float(s["min_exec_time"]), float(s["max_exec_time"])
        if seen is None:
            merged[key] = Statement(key, counters, low, high, s.get("query"))
        else:
            seen.counters = seen.counters.plus(counters)
            seen.min_ms, seen.max_ms = min(seen.min_ms, low), max(seen.max_ms, high)
    return list(merged.values())


class _Series:
    """The reset-adjusted cumulative counters of one statement, at the times they changed."""

    __slots__ = ("last_raw", "offset", "times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[Counters] = []
        self.last_raw = ZERO
        self.offset = ZERO

    def add(self, when: float, raw: Counters) -> None:
        if raw.calls < self.last_raw.calls or raw.total_ms < self.last_raw.total_ms:
            self.offset = self.offset.plus(
                self.last_raw
            )  # reset or evicted and back: keep counting up
        self.last_raw = raw
        value = raw.plus(self.offset)
        if not self.values or value != self.values[-1]:
            self.times.append(when)
            self.values.append(value)

    def at(self, when: float) -> Counters:
        i = bisect.bisect_right(self.times, when)
        return self.values[i - 1] if i else ZERO

    def prune(self, before: float) -> None:
        # Keep the last point before the cut: it is the baseline of the oldest window.
        i = bisect.bisect_right(self.times, before) - 1
        if i > 0:
            del self.times[:i], self.values[:i]


class Snapshots:
    """Per service, per statement and per node: the counters over time. Thread-safe.

    Each node of a service (its primary, its HA standbys) keeps its own
    pg_stat_statements, and a switchover moves the statements to another node.
    So every node's counters are a series of their own, and a window's figures
    are the sum of what each node accrued in it: one node's counters are never
    taken for a reset (or a rise) of another's.
    """

    def __init__(self) -> None:
        self._series: dict[str, dict[Key, dict[str, _Series]]] = {}
        self._lock = threading.Lock()

    def record(
        self, service_id: str, when: float, statements: list[Statement], node: str = ""
    ) -> None:
        with self._lock:
            series = self._series.setdefault(service_id, {})
            for st in statements:
                series.setdefault(st.key, {}).setdefault(node, _Series()).add(when, st.counters)

    def window(self, service_id: str, key: Key, start: float, end: float) -> Counters:
        """The counters accrued in [start, end), to the resolution of the snapshots."""
        with self._lock:
            total = ZERO
            for s in self._series.get(service_id, {}).get(key, {}).values():
                # A point at `end` was taken after the window closed: exclusive end.
                total = total.plus(s.at(math.nextafter(end, -math.inf)).minus(s.at(start)))
            return total

    def keep_only(self, service_ids: set[str], now: float) -> None:
        """Forget deleted services and points beyond the retention."""
        with self._lock:
            for gone in self._series.keys() - service_ids:
                del self._series[gone]
            for series in self._series.values():
                for nodes in series.values():
                    for s in nodes.values():
                        s.prune(now - RETENTION_S)


# -- the operation of a statement ------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<skip>--[^\n]*|'(?:[^']|'')*'|"(?:[^"]|"")*"|\$\d+)"""
    r"""|(?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)"""
    r"""|(?P<comment>/\*)|(?P<open>\()|(?P<close>\))"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"""
)
_COMMENT = re.compile(r"/\*|\*/")
_MAIN = {"SELECT": "SELECT", "VALUES": "SELECT", "TABLE": "SELECT", "INSERT": "INSERT",
         "UPDATE": "UPDATE", "DELETE": "DELETE"}  # fmt: skip


def _words(sql: str) -> Iterator[tuple[int, str]]:
    """(paren depth, upper-cased keyword) outside comments, strings and quoted names."""
    depth, pos = 0, 0
    while m := _TOKEN.search(sql, pos):
        pos = m.end()
        if m["comment"]:  # block comments nest in PostgreSQL
            nested = 1
            while nested and (c := _COMMENT.search(sql, pos)):
                nested += 1 if c.group() == "/*" else -1
                pos = c.end()
            if nested:
                return
        elif m["dollar"]:  # $tag$ … $tag$ body
            end = sql.find(m["dollar"], pos)
            pos = len(sql) if end < 0 else end + len(m["dollar"])
        elif m["open"] or m["close"]:
            depth += 1 if m["open"] else -1
        elif m["word"]:
            yield depth, m["word"].upper()


def db_operation(sql: str) -> str:
    """SELECT, INSERT, UPDATE or DELETE from the statement's main keyword, else UTILITY.

    A leading ``WITH`` is looked through to the statement after its CTEs, and a
    parenthesized query to its first keyword.
    """
    words = _words(sql)
    first = next(words, (0, ""))
    if first[1] == "WITH":
        top = first[0]
        first = next(((d, w) for d, w in words if d == top and w in _MAIN), (0, ""))
    return _MAIN.get(first[1], "UTILITY")


# -- percentiles -------------------------------------------------------------------


def duration_quantiles(
    calls: int,
    total_ms: float,
    sumsq_ms: float,
    recorded_ms: list[float],
    floor_ms: float,
    ceiling_ms: float,
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99, 1.0),
) -> list[float]:
    """Duration quantiles of ``calls`` executions, from what is known about them.

    ``recorded_ms`` are executions logged individually: every one slower than the
    log threshold, so they are the top order statistics, exactly. The rest are
    only known through their count, sum and sum of squares; a quantile among them
    is estimated from a normal curve with that mean and deviation, kept within
    [``floor_ms``, ``ceiling_ms``] (the server's minimum, and the threshold or
    maximum). With every execution recorded the answer is exact.
    """
    done = sorted(recorded_ms)
    n = max(calls, len(done))
    rest = n - len(done)
    mean = sd = 0.0
    if rest:
        total = max(total_ms - sum(done), 0.0)
        mean = total / rest
        sd = math.sqrt(max((sumsq_ms - sum(d * d for d in done)) / rest - mean * mean, 0.0))
    out = []
    for q in quantiles:
        rank = max(math.ceil(q * n), 1)  # nearest rank, 1-based
        if not n:
            out.append(0.0)
        elif rank > rest:
            out.append(done[rank - rest - 1])
        else:
            z = NormalDist().inv_cdf((rank - 0.5) / rest) if sd else 0.0
            out.append(min(max(mean + z * sd, floor_ms), max(ceiling_ms, floor_ms)))
    return out
