"""The ClickHouse schema of the fleet history (docs/architecture.md, the collect room).

One database holds:

- ``samples``: every scraped (or backfilled) point, one row per sample. A MergeTree
  ordered by ``(metric, service_id, <labels>, ts)``, so that a metric of one service
  over a time range is one contiguous run of granules, and within a run timestamps
  step by the scrape interval (DoubleDelta turns them into ~0 bits) and values change
  slowly. Values take Delta then ZSTD(3): neighbouring floats of one series share
  sign, exponent and high mantissa bits, so the difference of their bit patterns is
  small; on the benchmark's realistic series (noisy gauges with two decimals,
  counters) that is 1.6 bytes a sample, against 2.9 for Gorilla+ZSTD(1), 2.7 for FPC
  and 2.1 for ZSTD(3) alone (tests/benchmarks/bench_history_store.py). Key columns
  are LowCardinality and repeat for a whole run: next to nothing on disk. Raw
  samples expire after ``raw_ttl``; partitions are days, so expiry drops whole parts
  (``ttl_only_drop_parts``).
- ``samples_1h``: an AggregatingMergeTree fed by a materialized view, one row per
  series and hour: min, max, avg, first/last (by time), count and a t-digest state
  for quantiles (gauges only: quantiles of a cumulative counter mean nothing, and the
  state is most of a rollup row's bytes). It is kept for ``rollup_ttl`` (much longer than raw).
- ``service_last``: the newest sample time per service (a small AggregatingMergeTree
  fed by a view), read by the backfill without scanning ``samples``.
- ``rounds``: one row per collector round, written *after* that round's samples.
  A round is idempotent: :meth:`Store.insert_scrape` skips a round already listed,
  and a round whose samples landed but whose row did not (``kill -9`` between the
  two inserts) is inserted again with the same ``insert_deduplication_token``, which
  MergeTree's deduplication window drops (``non_replicated_deduplication_window``,
  set on the views' target tables too, so that the rollups drop the repeat as well;
  replicated and ClickHouse Cloud tables deduplicate inserts by default).
- ``metric_types``: TYPE and HELP of each metric family, for counter detection.
- ``services``: the service list over time, a ReplacingMergeTree by ``version``
  (the time the list was taken): the newest row per service is its current name,
  size, region, state, tags and major, or its deletion.

The tables derived for the fleet questions (per-scrape CPU, hourly counter
increases) and the migration that adds them to an older store are
:mod:`pgcloud_nb.collect.rollups`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

__all__ = [
    "LABELS",
    "QUANTILES",
    "SERIES_KEY",
    "TABLES",
    "TS",
    "VIEWS",
    "ddl",
    "drop_statements",
    "ttl_statements",
]

# The label columns of the data sheet (docs/api-behaviour.md §9.3); any other label
# goes to the ``extra`` map column.
LABELS = ("mode", "state", "database", "postgres_status", "postgres_version")
SERIES_KEY = ("metric", "service_id", "mode", "state", "database")
TABLES = ("samples", "samples_1h", "service_last", "rounds", "metric_types", "services")
VIEWS = ("samples_1h_mv", "service_last_mv")
# quantile levels kept in the hourly t-digest state
QUANTILES = (0.5, 0.9, 0.95, 0.99)
_Q = ", ".join(str(q) for q in QUANTILES)
TS = "DateTime64(6, 'UTC')"


def _seconds(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds()))


def ddl(database: str, *, raw_ttl: timedelta, rollup_ttl: timedelta) -> list[str]:
    """Statements that create the schema (each ``IF NOT EXISTS``: safe to run again)."""
    db = f"`{database}`"
    raw, rollup = _seconds(raw_ttl), _seconds(rollup_ttl)
    labels = ",\n  ".join(f"{c} LowCardinality(String)" for c in LABELS)
    key = ", ".join(SERIES_KEY)
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.samples (
  ts {TS} CODEC(DoubleDelta, ZSTD(1)),
  metric LowCardinality(String),
  service_id LowCardinality(String),
  service_name LowCardinality(String),
  {labels},
  extra Map(LowCardinality(String), String) CODEC(ZSTD(1)),
  value Float64 CODEC(Delta, ZSTD(3)),
  backfilled Bool CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY ({key}, ts)
TTL toDateTime(ts) + toIntervalSecond({raw})
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1""",
        f"""CREATE TABLE IF NOT EXISTS {db}.samples_1h (
  hour DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
  metric LowCardinality(String),
  service_id LowCardinality(String),
  mode LowCardinality(String),
  state LowCardinality(String),
  database LowCardinality(String),
  service_name SimpleAggregateFunction(anyLast, LowCardinality(String)),
  count SimpleAggregateFunction(sum, UInt64),
  min SimpleAggregateFunction(min, Float64),
  max SimpleAggregateFunction(max, Float64),
  avg AggregateFunction(avg, Float64),
  first AggregateFunction(argMin, Float64, {TS}),
  last AggregateFunction(argMax, Float64, {TS}),
  quantiles AggregateFunction(quantilesTDigest({_Q}), Float64) CODEC(ZSTD(3))
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY ({key}, hour)
TTL hour + toIntervalSecond({rollup})
SETTINGS non_replicated_deduplication_window = 10000""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.samples_1h_mv TO {db}.samples_1h AS
SELECT toStartOfHour(ts) AS hour, {key},
  anyLast(service_name) AS service_name,
  count() AS count, min(value) AS min, max(value) AS max,
  avgState(value) AS avg,
  argMinState(value, ts) AS first, argMaxState(value, ts) AS last,
  quantilesTDigestStateIf({_Q})(value, NOT endsWith(metric, '_Total')) AS quantiles
FROM {db}.samples
GROUP BY hour, {key}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.service_last (
  service_id LowCardinality(String),
  last_ts SimpleAggregateFunction(max, {TS})
) ENGINE = AggregatingMergeTree ORDER BY service_id
SETTINGS non_replicated_deduplication_window = 10000""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.service_last_mv TO {db}.service_last AS
SELECT service_id, max(ts) AS last_ts FROM {db}.samples
WHERE service_id != '' GROUP BY service_id""",
        f"""CREATE TABLE IF NOT EXISTS {db}.rounds (
  round_id String,
  at {TS},
  samples UInt64,
  services UInt32,
  backfilled Bool,
  org_id LowCardinality(String),
  inserted_at {TS} DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(inserted_at) ORDER BY round_id""",
        f"""CREATE TABLE IF NOT EXISTS {db}.metric_types (
  metric LowCardinality(String),
  type LowCardinality(String),
  help String,
  updated_at {TS}
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY metric""",
        f"""CREATE TABLE IF NOT EXISTS {db}.services (
  service_id String,
  name String,
  size LowCardinality(String),
  region LowCardinality(String),
  state LowCardinality(String),
  postgres_version LowCardinality(String),
  tags Map(String, String),
  first_seen {TS},
  deleted Bool,
  version {TS}
) ENGINE = ReplacingMergeTree(version) ORDER BY service_id""",
    ]


def ttl_statements(database: str, *, raw_ttl: timedelta, rollup_ttl: timedelta) -> list[str]:
    """ALTERs that change how long raw samples and hourly rollups are kept."""
    db = f"`{database}`"
    return [
        f"ALTER TABLE {db}.samples MODIFY TTL toDateTime(ts) + toIntervalSecond("
        f"{_seconds(raw_ttl)})",
        f"ALTER TABLE {db}.samples_1h MODIFY TTL hour + toIntervalSecond({_seconds(rollup_ttl)})",
    ]


def drop_statements(
    database: str, views: Sequence[str] = VIEWS, tables: Sequence[str] = TABLES
) -> list[str]:
    """Views first, so that no view is left pointing at a dropped table."""
    db = f"`{database}`"
    return [f"DROP VIEW IF EXISTS {db}.{v}" for v in views] + [
        f"DROP TABLE IF EXISTS {db}.{t}" for t in tables
    ]
