"""Derived tables the fleet questions read instead of raw samples (docs/architecture.md).

Two questions need every sample of a counter in order (CPU % per scrape, a counter's
increase with resets counted): over raw ``samples`` that is a sort of millions of rows
per question. Three tables do that work once, as data arrives:

- ``service_scrapes``: one row per service and scrape, fed by a materialized view:
  the non-idle CPU seconds summed over the modes, how many modes, and CPUCores. A
  per-scrape CPU % is then one difference per row instead of a group by (service,
  time) over nine rows a scrape. An AggregatingMergeTree keyed by (service, time),
  sums as the merge rule, so a scrape whose samples came in two insert blocks adds
  up; a whole round inserted again is dropped by the samples' deduplication token
  (``deduplicate_blocks_in_dependent_materialized_views``). Kept as long as raw.
- ``counters_1h``: per counter series and hour: its first and last sample, and the
  increase over the pairs of samples inside the hour (a decrease is a reset, and the
  increase is then the new value: :func:`pgcloud_nb.metrics.counter_rates`' rule),
  with the resets and seconds those pairs span. A counter's increase over hours is
  the sum of theirs plus, between two consecutive hours, the pair (last, first): the
  same sum the raw samples give, reading one row an hour instead of sixty. No
  aggregate state can merge "increase with resets" of samples inserted out of order
  (a backfill fills the middle of an hour), so this table is not a view: the store
  recomputes the hours a round touched from raw samples after inserting it
  (:func:`refresh`), a ReplacingMergeTree by ``version`` keeping the newest.
  Kept as long as the hourly rollup.
- ``cpu_1h``: the same for CPU %, per service and hour from ``service_scrapes``: the
  CPU % of each scrape paired with the one before it in the hour (an array), and the
  hour's first and last scrape, so that a query pairs consecutive hours itself. An
  hour's p95 is then a quantile over one array, not a sort of the week's scrapes.

A store made before these tables existed gets them on open: :func:`migrate` runs each
step not yet listed in ``migrations`` (so twice is harmless), backfilling from raw.
Samples written around :meth:`Store.insert_scrape` (a hand-made INSERT) reach the
view's table but not the hourly ones until a round touches their hours again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..metrics import CORES, CPU
from .schema import SERIES_KEY, TS
from .sqlrates import counter_test, utc

__all__ = ["TABLES", "VIEWS", "ddl", "migrate", "ready", "refresh", "ttl_statements"]

TABLES = ("service_scrapes", "counters_1h", "cpu_1h", "migrations")
VIEWS = ("service_scrapes_mv",)
_BUSY = f"metric = '{CPU}' AND mode != 'idle'"
_KEY = ", ".join(SERIES_KEY)


class _Client(Protocol):
    def command(self, cmd: str, parameters: Any = None) -> Any: ...
    def query(self, query: str, parameters: Any = None) -> Any: ...


def _seconds(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds()))


def ddl(database: str, *, raw_ttl: timedelta, rollup_ttl: timedelta) -> list[str]:
    """The tables (``IF NOT EXISTS``); the view comes with its migration step."""
    db = f"`{database}`"
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.service_scrapes (
  service_id LowCardinality(String),
  ts {TS} CODEC(DoubleDelta, ZSTD(1)),
  service_name SimpleAggregateFunction(anyLast, LowCardinality(String)),
  cpu_busy SimpleAggregateFunction(sum, Float64) CODEC(Delta, ZSTD(3)),
  cpu_modes SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
  cores SimpleAggregateFunction(max, Nullable(Float64)) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(ts)
ORDER BY (service_id, ts)
TTL toDateTime(ts) + toIntervalSecond({_seconds(raw_ttl)})
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1""",
        f"""CREATE TABLE IF NOT EXISTS {db}.counters_1h (
  metric LowCardinality(String),
  service_id LowCardinality(String),
  mode LowCardinality(String),
  state LowCardinality(String),
  database LowCardinality(String),
  extra String,
  hour DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
  service_name LowCardinality(String),
  first_ts {TS} CODEC(Delta, ZSTD(1)),
  first Float64 CODEC(ZSTD(3)),
  last_ts {TS} CODEC(Delta, ZSTD(1)),
  last Float64 CODEC(ZSTD(3)),
  increase Float64 CODEC(ZSTD(3)),
  seconds Float64 CODEC(ZSTD(1)),
  resets UInt32 CODEC(ZSTD(1)),
  samples UInt32 CODEC(ZSTD(1)),
  version {TS}
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (metric, service_id, mode, state, database, extra, hour)
TTL hour + toIntervalSecond({_seconds(rollup_ttl)})""",
        f"""CREATE TABLE IF NOT EXISTS {db}.cpu_1h (
  service_id LowCardinality(String),
  hour DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
  service_name LowCardinality(String),
  first_ts {TS} CODEC(Delta, ZSTD(1)),
  first_busy Float64 CODEC(ZSTD(3)),
  first_cores Float64 CODEC(ZSTD(1)),
  last_ts {TS} CODEC(Delta, ZSTD(1)),
  last_busy Float64 CODEC(ZSTD(3)),
  cpu Array(Float64) CODEC(ZSTD(3)),
  version {TS}
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (service_id, hour)
TTL hour + toIntervalSecond({_seconds(rollup_ttl)})""",
        f"""CREATE TABLE IF NOT EXISTS {db}.migrations (
  step String,
  at {TS} DEFAULT now64(6)
) ENGINE = ReplacingMergeTree ORDER BY step""",
    ]


def ttl_statements(database: str, *, raw_ttl: timedelta, rollup_ttl: timedelta) -> list[str]:
    db = f"`{database}`"
    return [
        f"ALTER TABLE {db}.service_scrapes MODIFY TTL toDateTime(ts) + toIntervalSecond("
        f"{_seconds(raw_ttl)})",
        *(
            f"ALTER TABLE {db}.{t} MODIFY TTL hour + toIntervalSecond({_seconds(rollup_ttl)})"
            for t in ("counters_1h", "cpu_1h")
        ),
    ]


def _scrapes_select(db: str) -> str:
    return f"""SELECT service_id, ts, anyLast(service_name) AS service_name,
  sumIf(value, {_BUSY}) AS cpu_busy, countIf({_BUSY}) AS cpu_modes,
  maxOrNullIf(value, metric = '{CORES}') AS cores
FROM {db}.samples WHERE metric IN ('{CPU}', '{CORES}') AND service_id != ''
GROUP BY service_id, ts"""


def _counters_select(db: str, where_sql: str) -> str:
    """Each counter series' hours over the samples ``where_sql`` picks (see the module)."""
    return f"""SELECT {_KEY}, extra_key AS extra, hour, service_name,
  t[1] AS first_ts, v[1] AS first, t[-1] AS last_ts, v[-1] AS last,
  arraySum(arrayMap((b, a, ok) -> if(ok, if(b < a, b, b - a), 0), pb, pa, paired)) AS increase,
  arraySum(arrayMap((tb, ta, ok) -> if(ok, (toUnixTimestamp64Micro(tb)
    - toUnixTimestamp64Micro(ta)) / 1e6, 0), ptb, pta, paired)) AS seconds,
  arrayCount((b, a, ok) -> ok AND b < a, pb, pa, paired) AS resets,
  length(t) AS samples, now64(6) AS version
FROM (
  SELECT {_KEY}, toString(extra) AS extra_key, toStartOfHour(ts) AS hour,
    argMax(service_name, ts) AS service_name,
    arraySort((x, y) -> y, groupArray(value), groupArray(ts)) AS v, arraySort(groupArray(ts)) AS t,
    arrayPopFront(v) AS pb, arrayPopBack(v) AS pa, arrayPopFront(t) AS ptb, arrayPopBack(t) AS pta,
    arrayMap((x, y) -> x > y, ptb, pta) AS paired
  FROM {db}.samples {where_sql} AND {counter_test(db)}
  GROUP BY {_KEY}, extra_key, hour)"""


def _cpu_select(db: str, where_sql: str) -> str:
    """Each service's hours of ``service_scrapes``: the CPU % of every scrape paired with
    the one before it in the hour (NaN-free), and the hour's first and last scrape."""
    pct = (
        "if(tb > ta, if(bb < ba, bb, bb - ba) / ((toUnixTimestamp64Micro(tb) "
        "- toUnixTimestamp64Micro(ta)) / 1e6) / cb * 100, nan)"
    )
    return f"""SELECT service_id, hour, service_name, t[1] AS first_ts, b[1] AS first_busy,
  c[1] AS first_cores, t[-1] AS last_ts, b[-1] AS last_busy,
  arrayFilter(x -> NOT isNaN(x), arrayMap((tb, ta, bb, ba, cb) -> {pct}, arrayPopFront(t),
    arrayPopBack(t), arrayPopFront(b), arrayPopBack(b), arrayPopFront(c))) AS cpu,
  now64(6) AS version
FROM (
  SELECT service_id, toStartOfHour(ts) AS hour, argMax(service_name, ts) AS service_name,
    groupArrayIf(ts, cpu_modes > 0) AS t0, arraySort(t0) AS t,
    arraySort((x, y) -> y, groupArrayIf(cpu_busy, cpu_modes > 0), t0) AS b,
    arraySort((x, y) -> y, groupArrayIf(ifNull(cores, nan), cpu_modes > 0), t0) AS c
  FROM {db}.service_scrapes FINAL {where_sql}
  GROUP BY service_id, hour HAVING notEmpty(t0))"""


def refresh(client: _Client, database: str, start: datetime, end: datetime) -> None:
    """Recompute ``counters_1h`` and ``cpu_1h`` for the hours ``[start, end]`` touches."""
    db = f"`{database}`"
    where_sql = (
        "WHERE ts >= toStartOfHour({lo:DateTime64(6, 'UTC')}) "
        "AND ts < toStartOfHour({hi:DateTime64(6, 'UTC')}) + INTERVAL 1 HOUR"
    )
    for table, select in (("counters_1h", _counters_select), ("cpu_1h", _cpu_select)):
        client.command(
            f"INSERT INTO {db}.{table} {select(db, where_sql)}",
            parameters={"lo": utc(start), "hi": utc(end)},
        )


def _steps(db: str) -> Sequence[tuple[str, list[str]]]:
    """Migration steps, each safe to run again from its start (the marker comes last).

    ``service_scrapes``: emptied and backfilled before its view exists, so no sample
    is summed twice (on a server, a round inserted between the two lands in raw
    samples only); ``counters_1h`` and ``cpu_1h``: every hour (replacing rows is harmless).
    """
    return [
        (
            "service_scrapes",
            [
                f"DROP VIEW IF EXISTS {db}.service_scrapes_mv",
                f"TRUNCATE TABLE {db}.service_scrapes",
                f"INSERT INTO {db}.service_scrapes {_scrapes_select(db)}",
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.service_scrapes_mv "
                f"TO {db}.service_scrapes AS {_scrapes_select(db)}",
            ],
        ),
        ("counters_1h", [f"INSERT INTO {db}.counters_1h {_counters_select(db, 'WHERE 1')}"]),
        ("cpu_1h", [f"INSERT INTO {db}.cpu_1h {_cpu_select(db, '')}"]),
    ]


def _done(client: _Client, db: str) -> set[str]:
    return {str(r[0]) for r in client.query(f"SELECT step FROM {db}.migrations").result_rows}


def ready(client: _Client, database: str, names: Iterable[str]) -> bool:
    """Whether the tables and views ``names`` exist and no step is pending: then an
    open needs no DDL (two reads instead of a dozen statements, on every round of a
    collector that opens the embedded store per round)."""
    found = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    ).result_rows
    if not set(names) <= {str(r[0]) for r in found}:
        return False
    return {step for step, _ in _steps(f"`{database}`")} <= _done(client, f"`{database}`")


def migrate(client: _Client, database: str) -> list[str]:
    """Run the steps ``migrations`` does not list yet; returns their names."""
    db = f"`{database}`"
    done = _done(client, db)
    ran = []
    for step, statements in _steps(db):
        if step in done:
            continue
        for statement in statements:
            client.command(statement)
        client.command(f"INSERT INTO {db}.migrations (step) VALUES ('{step}')")
        ran.append(step)
    return ran
