"""Slow query patterns and server logs of a sandbox service, from the server's own records.

Sources (the API's side: docs/api-behaviour.md §10.2, §10.3):

- **Patterns** are pg_stat_statements' statements, one per (queryid, database,
  user), with the normalized text it keeps (literals are ``$n``). It has no
  time dimension, so the sandbox reads it every ``sample_interval`` and at each
  request (:mod:`pgcloud_nb.sandbox.services.querystats`); a window's
  figures are what accrued between the snapshots at its ends, and a pattern is
  listed when it ran (or failed) in the window. Counters from before the
  sandbox's first snapshot count in the first window that reaches it; a
  statement evicted from pg_stat_statements is no longer listed.
- **Executions** are the server's JSON log (:mod:`insights.logs`,
  :mod:`insights.executions`): ``auto_explain`` writes every execution slower
  than ``auto_explain.log_min_duration``
  (100 ms, see :mod:`postgres.conffiles`) with its plan's buffers, WAL, JIT and workers,
  and the log line carries pid, user, database, ``application_name`` and
  ``query_id``. Failed executions are the log's ERROR/FATAL/PANIC lines with a
  ``query_id`` (errors before parse analysis have none and are not counted).
  pg_stat_statements counts only executions that finished, so a pattern's
  ``callCount`` excludes its ``errorCount``.
- **app**: pg_stat_statements has none, so it is the ``application_name``
  logged most often for the pattern in the window (executions, errors, notices
  raised by it); ``""`` when the log holds no line for it, which is the case
  for fast statements that never fail. The ``app`` filter matches this value.
- **Percentiles**: exact from the logged executions when every call was logged;
  otherwise the logged ones are the slowest, exactly, and a quantile among the
  rest is estimated from their mean and deviation (derived from
  pg_stat_statements' sums), capped by the log threshold. See
  :func:`~pgcloud_nb.sandbox.insights.statements.duration_quantiles`.
- **CPU time** is execution time minus I/O wait (``track_io_timing``), an
  estimate: PostgreSQL does not measure CPU time per statement, nor does it
  split user and system time (``cpuSysTimeUs`` is 0).
- **Logs** are every line of the JSON log; ``body`` is the line's message only
  (not its DETAIL, or the STATEMENT text, which may hold literals).

The sandbox's own password changes never reach these: they run with
pg_stat_statements' utility tracking and statement logging off (:mod:`postgres.passwords`).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.wire import (
    bad_request,
    ok,
    parse_date,
    parse_int,
    query_value,
    shown,
)
from pgcloud_nb.sandbox.errors import HTTPProblem
from pgcloud_nb.sandbox.insights.executions import Activity, activity_by_key, execution, us
from pgcloud_nb.sandbox.insights.logs import SEVERITIES, LogQuery
from pgcloud_nb.sandbox.insights.statements import (
    OPERATIONS,
    Counters,
    Key,
    Statement,
    db_operation,
    duration_quantiles,
)
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["SORT_KEYS", "InsightRoutes"]

RECENT = 50  # executions in a pattern's detail
_QUERY_ID = re.compile(r"-?[0-9]{1,19}")
LOG_WINDOW = timedelta(days=30)
# sort_by → the pattern's field (spec enum of slowQueryPatternsGetList).
SORT_KEYS = {
    "total_duration": "totalDurationUs",
    "avg_duration": "avgDurationUs",
    "call_count": "callCount",
    "total_blks_read": "totalSharedBlksRead",
    "total_cpu_time": "totalCpuTimeUs",
    "error_count": "errorCount",
    "max_duration": "maxDurationUs",
    "p50_duration": "p50DurationUs",
    "p95_duration": "p95DurationUs",
    "p99_duration": "p99DurationUs",
    "total_rows": "totalRows",
    "total_shared_blks_hit": "totalSharedBlksHit",
    "total_wal_bytes": "totalWalBytes",
}


# -- query parameters ------------------------------------------------------------


def _text(request: Request, name: str, *, required: bool = False) -> str | None:
    value = query_value(request, name) or None  # an empty filter means "no filter"
    if value is None and required:
        raise bad_request(f"BAD_REQUEST: query parameter {name} is required")
    return value


def _choice(
    request: Request, name: str, allowed: tuple[str, ...], *, required: bool = False
) -> str | None:
    # Unlike a filter, an empty choice is no choice at all: a 400 (it is not in the list).
    value = query_value(request, name)
    if value is None and required:
        raise bad_request(f"BAD_REQUEST: query parameter {name} is required")
    if value is not None and value not in allowed:
        raise bad_request(
            f"BAD_REQUEST: {name}: '{shown(value)}' must be one of {', '.join(allowed)}"
        )
    return value


def _window(request: Request) -> tuple[float, float]:
    start, end = parse_date(request, "from_date"), parse_date(request, "to_date")
    assert start is not None and end is not None
    if end <= start:
        raise bad_request("BAD_REQUEST: to_date must be after from_date")
    return start.timestamp(), end.timestamp()


def _descending(request: Request) -> bool:
    return _choice(request, "sort_order", ("asc", "desc")) != "asc"


def log_query(request: Request) -> LogQuery:
    """The logs API's parameters (docs/api-behaviour.md §10.3); a 400 names the bad one."""
    start, end = _window(request)
    if end - start > LOG_WINDOW.total_seconds():
        raise bad_request("BAD_REQUEST: to_date: the window from from_date must be ≤ 30 days")
    return LogQuery(
        start=start,
        end=end,
        severity=_choice(request, "severity", SEVERITIES),
        body_contains=_text(request, "body_contains"),
        descending=_descending(request),
        offset=parse_int(request, "offset", minimum=0) or 0,
        limit=parse_int(request, "limit", minimum=1, maximum=2000) or 50,
    )


def _query_id(raw: str) -> int:
    # ASCII digits only: int() would also take "1_0", " 1" and other scripts' digits.
    value = int(raw) if _QUERY_ID.fullmatch(raw) else None
    if value is None or not -(2**63) <= value < 2**63:
        raise bad_request(f"BAD_REQUEST: queryId: '{shown(raw)}' is not a signed 64-bit integer")
    return value


def _pattern(
    st: Statement, op: str, got: Counters, seen: Activity, threshold: float | None
) -> dict[str, Any]:
    calls = round(got.calls)
    ceiling = st.max_ms if threshold is None else min(threshold, st.max_ms)
    p50, p95, p99, top = duration_quantiles(
        calls, got.total_ms, got.sumsq_ms, seen.durations, st.min_ms, ceiling
    )
    return {
        "queryId": str(st.key.query_id),
        "queryText": st.text or "",
        "dbName": st.key.db_name,
        "dbUser": st.key.db_user,
        "dbOperation": op,
        "app": seen.app(),
        "callCount": calls,
        "errorCount": seen.errors,
        "totalDurationUs": us(got.total_ms),
        "avgDurationUs": us(got.total_ms / calls) if calls else 0,
        "maxDurationUs": us(top),
        "p50DurationUs": us(p50),
        "p95DurationUs": us(p95),
        "p99DurationUs": us(p99),
        "totalRows": round(got.rows),
        "totalSharedBlksRead": round(got.blks_read),
        "totalSharedBlksHit": round(got.blks_hit),
        "totalCpuTimeUs": us(got.cpu_ms),
        "totalWalBytes": round(got.wal_bytes),
    }


# -- the routes ---------------------------------------------------------------------


class InsightRoutes:
    """Slow query patterns, one pattern's detail, and the logs of a service."""

    def __init__(self, access: Access, life: Lifecycle) -> None:
        self.access = access
        self.life = life

    async def logs(self, request: Request) -> Response:
        row = self.access.service(request)
        return ok(await self.life.log_entries(row, log_query(request)))

    async def query_patterns(self, request: Request) -> Response:
        return ok(await self.patterns(self.access.service(request), request))

    async def query_pattern(self, request: Request) -> Response:
        row = self.access.service(request)
        return ok(await self.pattern(row, request.path_params["query_id"], request))

    async def patterns(self, row: ServiceRow, request: Request) -> list[dict[str, Any]]:
        start, end = _window(request)
        want = {
            "dbName": _text(request, "db_name"),
            "dbUser": _text(request, "db_user"),
            "dbOperation": _choice(request, "db_operation", OPERATIONS),
            "app": _text(request, "app"),
        }
        field = SORT_KEYS[_choice(request, "sort_by", tuple(SORT_KEYS)) or "total_duration"]
        descending = _descending(request)
        limit = parse_int(request, "limit", minimum=1, maximum=500) or 20
        offset = parse_int(request, "offset", minimum=0) or 0

        statements, threshold = await self.life.statements(row)
        records = await self.life.log_records(row, start, end)
        seen = activity_by_key(records)
        found = []
        for st in statements:
            got = self.life.statement_window(row, st.key, start, end)
            activity = seen.get(st.key) or Activity()
            if st.text is None or not (got.calls or activity.lines):
                continue
            pattern = _pattern(st, db_operation(st.text), got, activity, threshold)
            if all(v is None or pattern[k] == v for k, v in want.items()):
                found.append(pattern)
        # Ties in a stable order, so pages neither repeat nor skip a pattern.
        found.sort(key=lambda p: (p["queryId"], p["dbName"], p["dbUser"]))
        found.sort(key=lambda p: p[field], reverse=descending)
        return found[offset : offset + limit]

    async def pattern(self, row: ServiceRow, raw_id: str, request: Request) -> dict[str, Any]:
        query_id = _query_id(raw_id)
        key = Key(
            query_id,
            _text(request, "db_name", required=True) or "",
            _text(request, "db_user", required=True) or "",
        )
        op = _choice(request, "db_operation", OPERATIONS, required=True)
        app = _text(request, "app")
        at = parse_date(request, "timestamp", required=False)

        statements, threshold = await self.life.statements(row)
        st = next((s for s in statements if s.key == key and s.text is not None), None)
        if st is None or db_operation(st.text or "") != op:
            raise HTTPProblem(
                404,
                f"NOT_FOUND: slow query pattern {raw_id} not found for"
                f" db_name={shown(key.db_name)}, db_user={shown(key.db_user)}, db_operation={op}",
            )
        now = time.time() + 1  # everything since pg_stat_statements' reset
        records = await self.life.log_records(row, 0.0, now, query_id)
        activity = activity_by_key(records).get(key, Activity())  # this db and user only
        got = self.life.statement_window(row, key, 0.0, now)
        aggregate = _pattern(st, op, got, activity, threshold)
        role = "primary" if row.is_primary else "standby"
        lines = [
            (when, rec)
            for when, rec in reversed(activity.lines)
            if (app is None or rec.get("application_name", "") == app)
            and (at is None or round(when * 1000) == round(at.timestamp() * 1000))  # same ms
        ]
        executions = [execution(when, rec, aggregate, role) for when, rec in lines[:RECENT]]
        return {"aggregate": aggregate, "recentExecutions": executions}
