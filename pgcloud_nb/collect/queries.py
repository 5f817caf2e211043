"""Fleet questions over the stored history, each one SQL statement answered as a DataFrame.

- :func:`cpu_p95_per_hour`: p95 of CPU % (per scrape, from counter rates) per service
  and hour, from the hourly CPU table.
- :func:`connections_per_hour` and :func:`connection_trends`: connections (all
  states) per hour from the hourly rollup, and the services whose count trends up
  (a least-squares slope per day and its fit).
- :func:`database_size_per_hour` and :func:`storage_growth`: database size per hour
  (rollup), growth per day, and days until the storage limit at that pace.
- :func:`top_commits`: services ranked by transactions committed over the range
  (counter increases with resets handled, from the hourly counter table).

Each takes ``start``/``end`` (``start <= time < end``, either open). Hours are UTC.
Service names are the newest each service had in the range.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from ..metrics import COMMITS
from .schema import SERIES_KEY
from .sqlrates import where

__all__ = [
    "connection_trends",
    "connections_per_hour",
    "cpu_p95_per_hour",
    "database_size_per_hour",
    "storage_growth",
    "top_commits",
]

CONNECTIONS = "PostgresServer_ActiveConnections"
DB_SIZE = "PostgresServer_DatabaseSizeBytes"
STORAGE_LIMIT = "PostgresServer_StorageLimitBytes"
Time = datetime | pd.Timestamp | None
# Days since 2020 as the fits' x: small numbers, so the sums of squares inside the
# regression keep their precision (seconds since 1970 lose digits to cancellation).
_DAYS = "((toUnixTimestamp(hour) - 1577836800) / 86400)"


class _Queryable(Protocol):
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame: ...


def _hour_where(start: Time, end: Time, metric: str, tag: str = "") -> tuple[str, dict[str, Any]]:
    """A WHERE over an hourly table: whole hours that start in [start, end) (and of
    ``metric``, unless '')."""
    sql, params = where(start, end, None, [metric] if metric else None, tag=tag)
    return sql.replace("ts >=", "hour >=").replace("ts <", "hour <"), params


def cpu_p95_per_hour(store: _Queryable, start: Time = None, end: Time = None) -> pd.DataFrame:
    """``hour, service_id, service_name, p95_cpu_percent, mean_cpu_percent, scrapes``
    for the whole hours that start in [start, end).

    CPU % at each scrape is :func:`pgcloud_nb.metrics.derived`'s (non-idle CPU
    seconds per second over CPUCores × 100); the p95 is exact (``quantileExactInclusive``,
    numpy's default interpolation), over the scrapes of that hour.

    Read from ``cpu_1h`` (:mod:`~pgcloud_nb.collect.rollups`): each hour's CPU % of
    its scrapes, plus, computed here, the first scrape's against the last of the
    service's previous hour in the range. The non-idle modes are summed per scrape
    before the counter is differenced: it equals the per-mode rule
    (:func:`~pgcloud_nb.collect.sqlrates.derived_sql`) because a restart resets every
    mode's counter at once; a scrape missing some modes would differ.
    """
    where_sql, params = _hour_where(start, end, "")
    pct = (
        "if(k > 1 AND first_ts > prev_ts, [if(first_busy < prev_busy, first_busy, first_busy"
        " - prev_busy) / ((toUnixTimestamp64Micro(first_ts) - toUnixTimestamp64Micro(prev_ts))"
        " / 1e6) / first_cores * 100], [])"
    )
    sql = f"""SELECT hour, service_id, service_name,
  arrayReduce('quantileExactInclusive(0.95)', v) AS p95_cpu_percent,
  arrayAvg(v) AS mean_cpu_percent, length(v) AS scrapes
FROM (
  SELECT service_id, h.1 AS hour, h.2 AS service_name, h.3 AS first_ts, h.4 AS first_busy,
    h.5 AS first_cores, g.6 AS prev_ts, g.7 AS prev_busy,
    arrayConcat(arrayFilter(x -> NOT isNaN(x), {pct}), h.8) AS v
  FROM (
    SELECT service_id, arraySort(x -> x.1, groupArray((hour, service_name, first_ts,
      first_busy, first_cores, last_ts, last_busy, cpu))) AS hs
    FROM cpu_1h FINAL {where_sql} GROUP BY service_id)
  ARRAY JOIN hs AS h, arrayPushFront(arrayPopBack(hs), hs[1]) AS g, arrayEnumerate(hs) AS k)
WHERE notEmpty(v) ORDER BY hour, service_id"""
    return store.query(sql, params)


def connections_per_hour(store: _Queryable, start: Time = None, end: Time = None) -> pd.DataFrame:
    """``hour, service_id, service_name, connections, active``: hourly means (rollup),
    summed over the connection states."""
    hourly, params = _connections_sql(start, end)
    return store.query(f"{hourly} ORDER BY hour, service_id", params)


def connection_trends(
    store: _Queryable, start: Time = None, end: Time = None, *, min_r2: float = 0.5
) -> pd.DataFrame:
    """Per service: ``slope_per_day`` (connections per day, least squares over the
    hourly means), ``r2`` of that fit, ``first``/``last`` hourly means, ``hours``, and
    ``trending_up`` (slope > 0 with r² ≥ ``min_r2``). Steepest climb first."""
    hourly, params = _connections_sql(start, end)
    sql = f"""SELECT service_id, argMax(service_name, hour) AS service_name,
  simpleLinearRegression({_DAYS}, connections).1 AS slope_per_day,
  if(isNaN(corr({_DAYS}, connections)), 0, pow(corr({_DAYS}, connections), 2)) AS r2,
  argMin(connections, hour) AS first, argMax(connections, hour) AS last, count() AS hours,
  slope_per_day > 0 AND r2 >= {float(min_r2)!r} AS trending_up
FROM ({hourly}) GROUP BY service_id ORDER BY slope_per_day DESC, service_id"""
    return store.query(sql, params)


def _connections_sql(start: Time, end: Time) -> tuple[str, dict[str, Any]]:
    where_sql, params = _hour_where(start, end, CONNECTIONS)
    return (
        f"""SELECT hour, service_id, any(name) AS service_name, sum(mean) AS connections,
  sumIf(mean, state = 'active') AS active
FROM (SELECT hour, service_id, state, anyLast(service_name) AS name, avgMerge(avg) AS mean
      FROM samples_1h {where_sql} GROUP BY hour, service_id, state)
GROUP BY hour, service_id""",
        params,
    )


def _sizes_sql(start: Time, end: Time) -> tuple[str, dict[str, Any]]:
    where_sql, params = _hour_where(start, end, DB_SIZE)
    return (
        f"""SELECT hour, service_id, any(name) AS service_name, sum(last) AS bytes
FROM (SELECT hour, service_id, database, anyLast(service_name) AS name,
        argMaxMerge(last) AS last FROM samples_1h {where_sql}
      GROUP BY hour, service_id, database)
GROUP BY hour, service_id""",
        params,
    )


def database_size_per_hour(store: _Queryable, start: Time = None, end: Time = None) -> pd.DataFrame:
    """``hour, service_id, service_name, bytes``: the last size of each database in the
    hour (rollup), summed over the service's databases."""
    sizes, params = _sizes_sql(start, end)
    return store.query(f"{sizes} ORDER BY hour, service_id", params)


def storage_growth(store: _Queryable, start: Time = None, end: Time = None) -> pd.DataFrame:
    """Per service: ``bytes`` (newest total database size), ``growth_per_day`` (least
    squares over the hourly sizes), ``limit_bytes`` (the newest StorageLimitBytes, from
    the hourly rollup too), ``used_percent``
    and ``days_until_full`` at that pace (NaN when not growing). Soonest full first."""
    sizes, params = _sizes_sql(start, end)
    limit_where, more = _hour_where(start, end, STORAGE_LIMIT, tag="_limit")
    params.update(more)
    sql = f"""WITH
  sizes AS ({sizes}),
  growth AS (
    SELECT service_id, argMax(service_name, hour) AS service_name,
      argMax(bytes, hour) AS newest,
      simpleLinearRegression({_DAYS}, bytes).1 AS growth_per_day
    FROM sizes GROUP BY service_id),
  limits AS (
    SELECT service_id, argMax(last, hour) AS limit_bytes
    FROM (SELECT service_id, hour, argMaxMerge(last) AS last FROM samples_1h {limit_where}
          GROUP BY service_id, hour)
    GROUP BY service_id)
SELECT g.service_id AS service_id, service_name, newest AS bytes, growth_per_day, limit_bytes,
  newest / limit_bytes * 100 AS used_percent,
  if(growth_per_day > 0, (limit_bytes - newest) / growth_per_day, nan) AS days_until_full
FROM growth AS g LEFT JOIN limits AS l ON g.service_id = l.service_id
ORDER BY isNaN(days_until_full), days_until_full, service_id"""
    return store.query(sql, params)


def top_commits(
    store: _Queryable, start: Time = None, end: Time = None, *, n: int = 10
) -> pd.DataFrame:
    """The ``n`` services with the most commits in the whole hours that start in
    [start, end): ``commits`` (the counter's increases, resets counted from zero),
    ``commits_per_s`` (over the time covered), ``resets``.

    Read from ``counters_1h`` (:mod:`~pgcloud_nb.collect.rollups`): each series' hourly
    increases, plus the pair (last of one hour, first of the next) between its
    consecutive hours: the sum over every pair of raw samples, one row an hour.
    """
    where_sql, params = _hour_where(start, end, COMMITS)
    sql = f"""SELECT service_id, argMax(name, hour) AS service_name, sum(inc) AS commits,
  sum(inc) / sum(dt) AS commits_per_s, sum(n_resets) AS resets
FROM (
  SELECT service_id, hour, name,
    increase + if(gap_dt > 0, if(first < prev_last, first, first - prev_last), 0) AS inc,
    seconds + greatest(gap_dt, 0) AS dt,
    resets + (gap_dt > 0 AND first < prev_last) AS n_resets
  FROM (
    SELECT service_id, h.1 AS hour, h.2 AS name, h.3 AS first_ts, h.4 AS first, h.7 AS increase,
      h.8 AS seconds, h.9 AS resets, g.5 AS prev_last_ts, g.6 AS prev_last,
      if(k = 1, 0, (toUnixTimestamp64Micro(first_ts) - toUnixTimestamp64Micro(prev_last_ts))
        / 1e6) AS gap_dt
    FROM (
      SELECT {", ".join(SERIES_KEY)}, extra, arraySort(x -> x.1, groupArray((hour, service_name,
        first_ts, first, last_ts, last, increase, seconds, resets))) AS hs
      FROM counters_1h FINAL {where_sql}
      GROUP BY {", ".join(SERIES_KEY)}, extra)
    ARRAY JOIN hs AS h, arrayPushFront(arrayPopBack(hs), hs[1]) AS g, arrayEnumerate(hs) AS k))
GROUP BY service_id ORDER BY commits DESC, service_id LIMIT {int(n)}"""
    return store.query(sql, params)
