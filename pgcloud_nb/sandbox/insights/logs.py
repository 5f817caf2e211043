"""A service's PostgreSQL JSON log, indexed once and queried many times.

Each server writes ``log/postgresql-<date>.json`` (``log_destination='jsonlog'``,
one JSON object per line, one file per day in ``log_timezone``, which the
sandbox sets to UTC). The files only grow, so :class:`LogIndex` keeps, per file,
the byte offset, time, severity and ``query_id`` of every complete line, and on
each query reads only what was appended since the last one. A line's body is
read back (by offset) only when it may be an answer: a ``body_contains`` search
runs over the raw file bytes first, and files outside the window are skipped by
their date. The logs API (:meth:`LogIndex.entries`) and the slow query patterns
(:meth:`LogIndex.records`, via ``query_id``) both read through it.

Limits: a line is indexed only once it ends in a newline (a line being written
is picked up next time); files are assumed not to overlap in time, which holds
while ``log_timezone`` stays the same.
"""

from __future__ import annotations

import bisect
import functools
import json
import mmap
import os
import re
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

__all__ = ["SEVERITIES", "LogIndex", "LogQuery"]

# PostgreSQL's error_severity values (elog.c); DEBUG1..5 are all written as DEBUG.
SEVERITIES = ("DEBUG", "LOG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL", "PANIC")
_SEV_CODE = {name.encode(): i for i, name in enumerate(SEVERITIES)}
_UNKNOWN_SEV = -1
# Lines are written through the syslogger in arrival order, so their times are
# almost sorted; this bounds how far back an out-of-order line can be.
_DISORDER_S = 60.0
_FILE_DATE = re.compile(r"postgresql-(\d{4}-\d{2}-\d{2})")
_TS = re.compile(rb'^\{"timestamp":"([^"]+)"')
# A key is preceded by `,"`; inside a JSON string a quote is always `\"`, so message
# text cannot fake these.
_SEV = re.compile(rb',"error_severity":"([A-Z0-9]*)"')
_QID = b',"query_id":'
# An auto_explain plan's own statement (auto_explain.log_verbose), inside the escaped
# message. The line's query_id is whatever ran when the executor ended: for a portal
# closed by the next Bind or by COMMIT, that next statement. A query text cannot fake
# this: its quotes are escaped twice.
_PLAN_QID = re.compile(rb'\\"Query Identifier\\": (-?\d+)')
_CHUNK = 1 << 20
_DAY = 86400.0


@dataclass(frozen=True)
class LogQuery:
    """One page of log entries: the logs API's parameters, already checked."""

    start: float  # inclusive, Unix seconds
    end: float  # inclusive
    severity: str | None = None
    body_contains: str | None = None
    descending: bool = True
    offset: int = 0
    limit: int = 50


class _File:
    """The index of one log file: parallel arrays, one slot per complete line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reset(-1)

    def _reset(self, inode: int) -> None:
        self.inode = inode
        self.pos = 0  # bytes indexed so far (always at a line start)
        self.off = array("q")
        self.size = array("q")
        self.ts = array("d")
        # Running maximum of ts: sorted, so a window's lines are found by bisection.
        self.top = array("d")
        self.sev = array("b")
        self.qid = array("q")

    def day(self) -> float | None:
        """Unix time of the midnight (UTC) of the file's date, if it is named by date."""
        m = _FILE_DATE.match(self.path.name)
        return datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp() if m else None

    def refresh(self) -> None:
        """Index whatever was appended since the last call (all of it after a rotation)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if st is None:
            self._reset(-1)
            return
        if st.st_ino != self.inode or st.st_size < self.pos:
            self._reset(st.st_ino)  # replaced or truncated: start over
        if st.st_size == self.pos:
            return
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            while chunk := f.read(_CHUNK):
                end = chunk.rfind(b"\n")
                if end < 0 and len(chunk) == _CHUNK:  # one line longer than a chunk
                    chunk += f.readline()
                    end = chunk.rfind(b"\n")
                if end < 0:
                    break
                self._index(chunk[: end + 1])
                f.seek(self.pos)

    def _index(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            nl = data.index(b"\n", start)
            line = data[start:nl]
            when = _line_time(line)
            if when is not None:
                self.off.append(self.pos + start)
                self.size.append(nl - start)
                self.ts.append(when)
                self.top.append(max(when, self.top[-1]) if self.top else when)
                m = _SEV.search(line)
                self.sev.append(_SEV_CODE.get(m.group(1), _UNKNOWN_SEV) if m else _UNKNOWN_SEV)
                q = line.rfind(_QID)
                try:
                    if plan := _PLAN_QID.search(line):
                        self.qid.append(int(plan.group(1)))
                    else:
                        self.qid.append(int(line[q + len(_QID) :].rstrip(b"} \r")) if q >= 0 else 0)
                except ValueError:
                    self.qid.append(0)
            start = nl + 1
        self.pos += len(data)

    def window(self, start: float, end: float) -> range:
        """Slots that may lie in [start, end]; callers still check ``ts``."""
        lo = bisect.bisect_left(self.top, start)
        hi = bisect.bisect_right(self.top, end + _DISORDER_S)
        return range(lo, hi)

    def read(self, slots: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """The parsed records of ``slots`` (in the order given)."""
        with open(self.path, "rb") as f:
            for i in slots:
                f.seek(self.off[i])
                yield i, json.loads(f.read(self.size[i]))

    def containing(self, needle: bytes, lo: int, hi: int) -> set[int]:
        """Slots in [lo, hi) whose raw line holds ``needle`` (a superset of true matches)."""
        if lo >= hi:
            return set()
        first, last = self.off[lo], self.off[hi - 1] + self.size[hi - 1]
        found: set[int] = set()
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            at = mm.find(needle, first, last)
            while at >= 0:
                slot = bisect.bisect_right(self.off, at) - 1
                found.add(slot)
                # Go on from the next line: one hit per line is enough.
                at = mm.find(needle, self.off[slot] + self.size[slot], last)
        return found


_ZONES: dict[bytes, tzinfo] = {b"UTC": UTC, b"GMT": UTC, b"Z": UTC}


def _zone(name: bytes) -> tzinfo:
    """The zone of a jsonlog time's ``%Z``: UTC here; an offset like ``+03`` or
    ``-0530``; otherwise (an abbreviation such as CET) this machine's zone."""
    zone = _ZONES.get(name)
    if zone is None:
        m = re.fullmatch(rb"([+-])(\d\d):?(\d\d)?", name)
        if m:
            delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
            zone = timezone(-delta if m.group(1) == b"-" else delta)
        else:
            local = datetime.now().astimezone().tzinfo
            assert local is not None
            zone = local
        _ZONES[name] = zone
    return zone


@functools.lru_cache(maxsize=4096)
def _minute(prefix: bytes, zone: bytes) -> float | None:
    """Unix time of "YYYY-MM-DD HH:MM" in ``zone``; lines share it, so it is cached."""
    try:
        naive = datetime.fromisoformat(prefix.decode())
    except ValueError:
        return None
    return naive.replace(tzinfo=_zone(zone)).timestamp()


def _line_time(line: bytes) -> float | None:
    m = _TS.match(line)
    if not m:
        return None
    # "2026-01-31 12:00:00.123 UTC": log_line_prefix's %m, in log_timezone.
    stamp, _, zone = m.group(1).partition(b" ")[2].partition(b" ")
    base = _minute(m.group(1)[:16], zone)
    try:
        return None if base is None else base + float(stamp[6:])
    except ValueError:
        return None


def iso(ts: float) -> str:
    """RFC 3339 with milliseconds in UTC, as the API writes times."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LogIndex:
    """Every JSON log file of one service, indexed incrementally. Thread-safe."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()

    def _current(self, start: float, end: float) -> list[_File]:
        """Files that may hold lines in [start, end], oldest first (callers refresh them:
        a page of the newest lines should not have to index a month of files)."""
        try:
            names = sorted(n for n in os.listdir(self.log_dir) if n.endswith(".json"))
        except FileNotFoundError:
            names = []
        for gone in self._files.keys() - set(names):
            del self._files[gone]
        out = []
        # A day's file holds that day in log_timezone: a day of slack covers any zone.
        # (Plain numbers: a window may start in year 1, where datetimes cannot go back.)
        first, last = start - 2 * _DAY, end + _DAY
        for name in names:
            file = self._files.setdefault(name, _File(self.log_dir / name))
            day = file.day()
            if day is not None and not first <= day <= last:
                continue
            out.append(file)
        return out

    def entries(self, q: LogQuery) -> list[dict[str, Any]]:
        """One page of ``{timestamp, severity, body}``, newest first unless ascending."""
        sev = SEVERITIES.index(q.severity) if q.severity else None
        needle = None
        if q.body_contains:
            # jsonlog escapes text as json.dumps does, so the raw line must hold this.
            needle = json.dumps(q.body_contains, ensure_ascii=False)[1:-1].encode()
        want = q.offset + q.limit
        hits: list[tuple[float, int, int]] = []  # (time, file, slot)
        with self._lock:
            files = self._current(q.start, q.end)
            order = range(len(files) - 1, -1, -1) if q.descending else range(len(files))
            for n in order:
                file = files[n]
                file.refresh()
                span = file.window(q.start, q.end)
                keep = [
                    i
                    for i in span
                    if q.start <= file.ts[i] <= q.end and (sev is None or file.sev[i] == sev)
                ]
                if needle is not None and keep:
                    raw = file.containing(needle, keep[0], keep[-1] + 1)
                    keep = [i for i in keep if i in raw]
                    body = q.body_contains or ""
                    keep = [i for i, rec in file.read(keep) if body in _body(rec)]
                hits += [(file.ts[i], n, i) for i in keep]
                if len(hits) >= want:  # files are in time order: older ones cannot matter
                    break
        hits.sort(reverse=q.descending)
        page = hits[q.offset : want]
        wanted: dict[int, list[int]] = {}
        for _, n, i in page:
            wanted.setdefault(n, []).append(i)
        found = {(n, i): rec for n, slots in wanted.items() for i, rec in files[n].read(slots)}
        return [
            {
                "timestamp": iso(when),
                "severity": str(found[n, i].get("error_severity", "")),
                "body": _body(found[n, i]),
            }
            for when, n, i in page
        ]

    def records(
        self, start: float, end: float, query_id: int | None = None
    ) -> list[tuple[float, dict[str, Any]]]:
        """(time, record) of lines logged during a statement (``query_id`` ≠ 0) in
        [start, end), or only those of one ``query_id``; oldest first."""
        out: list[tuple[float, dict[str, Any]]] = []
        with self._lock:
            for file in self._current(start, end):
                file.refresh()
                span = file.window(start, end)
                slots = [
                    i
                    for i in span
                    if start <= file.ts[i] < end
                    and file.qid[i] != 0
                    and (query_id is None or file.qid[i] == query_id)
                ]
                out += [(file.ts[i], rec) for i, rec in file.read(slots)]
        out.sort(key=lambda pair: pair[0])
        return out


def _body(rec: dict[str, Any]) -> str:
    """The entry's message; anything structured comes back JSON-encoded (spec)."""
    msg = rec.get("message", "")
    return msg if isinstance(msg, str) else json.dumps(msg)
