"""Counter rates and the derived series as ClickHouse SQL, matching :mod:`pgcloud_nb.metrics`.

The rules are :func:`pgcloud_nb.metrics.counter_rates`': within one series, ordered by
time, each sample after the first gets ``increase / seconds`` from the previous one; a
decrease is a counter reset, and the increase is then the new value itself (counted
from zero, as Prometheus does); pairs with no time between them get no rate. A metric
is a counter by its TYPE, or, when untyped, by the data sheet's ``_Total`` suffix.

One difference on purpose: a series here is (metric, service id, labels), without the
service's name, so a renamed service's counters keep their rates across the rename
(pandas' long frame keys on the name too, and starts the series again).

The derived series are :func:`pgcloud_nb.metrics.derived`'s: CPU % is the rate of
non-idle CPU seconds over CPUCores × 100 (docs/api-behaviour.md §9.3); commits and
rollbacks per second; rollback ratio; the cache hit ratio gauge at the same scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from ..metrics import CACHE, COMMITS, CORES, CPU, ROLLBACKS

__all__ = ["counter_test", "derived_sql", "pairs_sql", "rates_sql", "utc", "where"]

_SERIES = "metric, service_id, mode, state, database, extra"
_LABELS = "mode, state, database"


def utc(value: datetime | pd.Timestamp) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def where(
    start: datetime | pd.Timestamp | None,
    end: datetime | pd.Timestamp | None,
    services: Iterable[str] | None = None,
    metrics: Iterable[str] | None = None,
    *,
    extra: str = "",
    tag: str = "",
) -> tuple[str, dict[str, Any]]:
    """A WHERE clause over ``samples`` (``start <= ts < end``) and its parameters.

    ``tag`` suffixes the parameter names, for two clauses in one statement.
    """
    terms: list[str] = []
    params: dict[str, Any] = {}
    if start is not None:
        terms.append("ts >= {start:DateTime64(6, 'UTC')}")
        params["start"] = utc(start)
    if end is not None:
        terms.append("ts < {end:DateTime64(6, 'UTC')}")
        params["end"] = utc(end)
    if services is not None:
        terms.append("service_id IN {services:Array(String)}")
        params["services"] = [str(s) for s in services]
    if metrics is not None:
        terms.append(f"metric IN {{metrics{tag}:Array(String)}}")
        params[f"metrics{tag}"] = [str(m) for m in metrics]
    if extra:
        terms.append(f"({extra})")
    return ("WHERE " + " AND ".join(terms) if terms else ""), params


def counter_test(db: str) -> str:
    """A condition on ``metric``: a counter by its TYPE, or untyped with ``_Total``."""
    typed = (
        f"(SELECT metric FROM (SELECT metric, argMax(type, updated_at) AS type "
        f"FROM {db}.metric_types GROUP BY metric) WHERE type {{op}} {{kind}})"
    )
    counter = typed.format(op="=", kind="'counter'")
    other = typed.format(op="NOT IN", kind="('counter', 'untyped')")
    return f"(metric IN {counter} OR (endsWith(metric, '_Total') AND metric NOT IN {other}))"


def pairs_sql(table: str, where_sql: str) -> str:
    """Each sample of the selected series with the one before it (``prev``, ``prev_ts``).

    Each series' samples are gathered into one array sorted by time and joined with
    itself shifted by one: a single pass over the rows, no window function (which
    ClickHouse runs several times slower on millions of rows).
    """
    return f"""SELECT metric, service_id, {_LABELS}, extra,
    p.1 AS ts, p.2 AS service_name, p.3 AS v, q.1 AS prev_ts, q.3 AS prev
  FROM (
    SELECT {_SERIES}, arraySort(x -> x.1, groupArray((ts, service_name, value))) AS s
    FROM {table} {where_sql}
    GROUP BY {_SERIES})
  ARRAY JOIN arrayPopFront(s) AS p, arrayPopBack(s) AS q
  WHERE p.1 > q.1"""


def _rates(db: str, where_sql: str) -> str:
    """Per-second rates of the counter samples ``where_sql`` selects."""
    return f"""SELECT ts AS timestamp, service_id, service_name, metric, {_LABELS}, extra,
    if(v < prev, v, v - prev)
      / ((toUnixTimestamp64Micro(ts) - toUnixTimestamp64Micro(prev_ts)) / 1e6) AS value,
    v < prev AS reset
  FROM ({pairs_sql(f"{db}.samples", where_sql)})"""


def rates_sql(
    database: str,
    start: datetime | pd.Timestamp | None = None,
    end: datetime | pd.Timestamp | None = None,
    *,
    services: Iterable[str] | None = None,
    metrics: Iterable[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """SQL for every counter's rate: the columns of :func:`pgcloud_nb.metrics.rates`
    (labels as strings, '' where absent, plus the ``extra`` map) and ``reset``."""
    db = f"`{database}`"
    where_sql, params = where(start, end, services, metrics, extra=counter_test(db))
    sql = (
        _rates(db, where_sql) + "\n  ORDER BY metric, service_id, mode, state, database, timestamp"
    )
    return sql, params


def derived_sql(
    database: str,
    start: datetime | pd.Timestamp | None = None,
    end: datetime | pd.Timestamp | None = None,
    *,
    services: Iterable[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """SQL for :func:`pgcloud_nb.metrics.derived`'s columns, one row per service and scrape.

    NaN stands where pandas has a missing value (no rate of that kind at that scrape).
    """
    db = f"`{database}`"
    picked = f"(metric = '{CPU}' AND mode != 'idle') OR metric IN ('{COMMITS}', '{ROLLBACKS}')"
    rate_where, params = where(start, end, services, [CPU, COMMITS, ROLLBACKS], extra=picked)
    gauge_where, more = where(start, end, services, [CORES, CACHE], tag="_gauges")
    params.update(more)
    sql = f"""WITH
  r AS ({_rates(db, rate_where)}),
  b AS (
    SELECT timestamp, service_id, any(service_name) AS service_name,
      sumIf(value, metric = '{CPU}') AS busy, countIf(metric = '{CPU}') AS n_busy,
      sumIf(value, metric = '{COMMITS}') AS commits, countIf(metric = '{COMMITS}') AS n_commits,
      sumIf(value, metric = '{ROLLBACKS}') AS rollbacks,
      countIf(metric = '{ROLLBACKS}') AS n_rollbacks
    FROM r GROUP BY timestamp, service_id),
  g AS (
    SELECT ts AS timestamp, service_id,
      anyLastIf(value, metric = '{CORES}') AS cores, countIf(metric = '{CORES}') AS n_cores,
      anyLastIf(value, metric = '{CACHE}') AS cache, countIf(metric = '{CACHE}') AS n_cache
    FROM {db}.samples {gauge_where} GROUP BY ts, service_id)
SELECT b.timestamp AS timestamp, b.service_id AS service_id, b.service_name AS service_name,
  if(n_busy > 0 AND n_cores > 0, busy / cores * 100, nan) AS cpu_percent,
  if(n_commits > 0, commits, nan) AS commits_per_s,
  if(n_rollbacks > 0, rollbacks, nan) AS rollbacks_per_s,
  rollbacks_per_s / (commits_per_s + rollbacks_per_s) AS rollback_ratio,
  if(n_cache > 0, cache, nan) AS cache_hit_ratio
FROM b LEFT JOIN g ON b.timestamp = g.timestamp AND b.service_id = g.service_id
ORDER BY timestamp, service_id"""
    return sql, params
