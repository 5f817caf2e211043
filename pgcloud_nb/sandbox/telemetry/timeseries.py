"""The ``/metrics`` JSON result (``PostgresMetrics``): a run of samples in time buckets.

:func:`plan_buckets` checks (or derives) the bucket size of a window against the
:data:`MAX_POINTS` cap; :func:`metrics_json` turns the stored samples into the
result's metrics and series. Gauges are averaged per bucket; counters become
rates (or per-bucket increases) over consecutive samples. :mod:`telemetry.sampling`
re-exports this module's names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgcloud_nb.sandbox.telemetry.samples import PS, Sample

__all__ = ["MAX_POINTS", "metrics_json", "plan_buckets"]

MAX_POINTS = 250  # the /metrics cap on data points (spec; docs/api-behaviour.md §9.1)

How = Literal["gauge", "rate", "increase", "cpu"]


@dataclass(frozen=True, slots=True)
class _Source:
    """Series of a /metrics metric from one family: named by a label, or fixed."""

    family: str
    label: str = ""  # series per value of this label …
    name: str = ""  # … or one series with this name
    skip: tuple[str, ...] = ()

    def values(self, sample: Sample) -> dict[str, float]:
        out = {}
        for n, labels, v in sample.points:
            if n != PS + self.family:
                continue
            key = labels.get(self.label, "") if self.label else self.name
            if key not in self.skip:
                out[key] = v
        return out


@dataclass(frozen=True, slots=True)
class _JsonMetric:
    key: str
    name: str
    unit: str
    description: str
    how: How
    sources: tuple[_Source, ...]
    zero_missing: bool = False  # an absent series means 0 (rare connection states)


def _fixed(*pairs: tuple[str, str]) -> tuple[_Source, ...]:
    return tuple(_Source(family, name=name) for family, name in pairs)


def _m(
    key: str, name: str, unit: str, how: How, sources: tuple[_Source, ...], text: str
) -> _JsonMetric:
    return _JsonMetric(key, name, unit, text, how, sources, zero_missing=key == "connection_count")


# The real key list is unpublished; keys and units follow the spec's examples
# (docs/api-behaviour.md §9.1).
_JSON_METRICS = (
    _m("cpu_usage", "CPU usage", "%", "cpu", (_Source("CPUSeconds_Total", "mode", skip=("idle",)),),
       "CPU time by mode as a share of the provisioned cores (idle left out)."),
    _m("memory_usage", "Memory usage", "%", "gauge",
       _fixed(("MemoryUsedPercent", "Used"), ("MemoryCachePercent", "Cache")),
       "Memory in use, and memory held as buffer cache, relative to the memory limit."),
    _m("disk_usage", "Disk usage", "%", "gauge", _fixed(("FilesystemUsedPercent", "Used")),
       "Filesystem space used relative to the storage limit."),
    _m("iops", "Disk IOPS", "IOPS", "rate",
       _fixed(("DiskReads_Total", "Reads"), ("DiskWrites_Total", "Writes")),
       "Disk read and write operations per second."),
    _m("network", "Network throughput", "bytes/s", "rate",
       _fixed(("NetworkReceiveBytes_Total", "Receive"), ("NetworkTransmitBytes_Total", "Transmit")),
       "Bytes received and transmitted per second."),
    _m("connection_count", "Connections", "count", "gauge",
       (_Source("ActiveConnections", "state"),),
       "Client connections by backend state."),
    _m("cache_hit_ratio", "Cache hit ratio", "%", "gauge", _fixed(("CacheHitRatio", "Hit ratio")),
       "Blocks served from the buffer cache vs. all blocks accessed."),
    _m("throughput", "Tuple throughput", "rows/s", "rate",
       _fixed(("TuplesFetched_Total", "Fetched"), ("TuplesInserted_Total", "Inserted"),
              ("TuplesUpdated_Total", "Updated"), ("TuplesDeleted_Total", "Deleted")),
       "Rows fetched, inserted, updated and deleted per second."),
    _m("transactions", "Transactions", "transactions/s", "rate",
       _fixed(("TransactionsCommitted_Total", "Commits"),
              ("TransactionsRolledBack_Total", "Rollbacks")),
       "Transactions committed and rolled back per second."),
    _m("deadlocks", "Deadlocks", "count", "increase", _fixed(("Deadlocks_Total", "Deadlocks")),
       "Deadlocks detected in each bucket."),
    _m("database_size", "Database size", "bytes", "gauge",
       (_Source("DatabaseSizeBytes", "database"),),
       "On-disk size of each database."),
)  # fmt: skip

# Derived bucket sizes: the smallest that keeps the window within MAX_POINTS. The real
# service refreshes its metrics about once a minute, hence no derived step below 60 s.
_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def plan_buckets(from_ts: float, to_ts: float, bucket: int | None) -> int:
    """The bucket size for a window: ``bucket`` checked, or derived when ``None``.

    Raises ValueError naming the offending parameter (the app answers 400).
    """
    if not from_ts < to_ts:
        raise ValueError("from_date must be earlier than to_date")
    window = to_ts - from_ts
    if bucket is None:
        fits = [s for s in _STEPS if math.ceil(window / s) <= MAX_POINTS]
        return fits[0] if fits else 86400 * math.ceil(window / MAX_POINTS / 86400)
    if bucket < 1:
        raise ValueError(f"bucket_size_seconds must be at least 1, got {bucket}")
    points = math.ceil(window / bucket)
    if points > MAX_POINTS:
        least = math.ceil(window / MAX_POINTS)
        raise ValueError(
            f"bucket_size_seconds={bucket} makes {points} data points between from_date and "
            f"to_date; at most {MAX_POINTS} are allowed: use bucket_size_seconds >= {least} "
            "or a shorter window"
        )
    return bucket


Cells = dict[str, dict[int, list[float]]]  # series label → bucket start → [sum, weight]


def _add(cells: Cells, label: str, ts: int, num: float, den: float) -> None:
    cell = cells.setdefault(label, {}).setdefault(ts, [0.0, 0.0])
    cell[0] += num
    cell[1] += den


def _values(metric: _JsonMetric, sample: Sample) -> dict[str, float]:
    out: dict[str, float] = {}
    for source in metric.sources:
        out.update(source.values(sample))
    return out


def _gauge_cells(metric: _JsonMetric, timed: list[tuple[int, Sample]]) -> Cells:
    cells: Cells = {}
    rows = [(ts, _values(metric, s)) for ts, s in timed]
    labels = list(dict.fromkeys(k for _, values in rows for k in values))
    for ts, values in rows:
        for label in labels:
            if label in values or metric.zero_missing:
                _add(cells, label, ts, values.get(label, 0.0), 1.0)
    return cells


def _counter_cells(metric: _JsonMetric, pairs: list[tuple[int, Sample, Sample]]) -> Cells:
    cells: Cells = {}
    for ts, prev, cur in pairs:
        dt = cur.taken_at - prev.taken_at
        scale = 1.0
        if metric.how == "cpu":  # seconds per second per core, in %
            scale = 100 / (cur.get(PS + "CPUCores") or 1)
        before = _values(metric, prev)
        for label, value in _values(metric, cur).items():
            if label in before:
                delta = value - before[label]
                # a drop is a counter reset (Prometheus's rule): count from 0
                _add(cells, label, ts, (delta if delta >= 0 else value) * scale, dt)
    return cells


def metrics_json(
    samples: Sequence[Sample], from_ts: float, to_ts: float, bucket: int
) -> dict[str, Any]:
    """The ``PostgresMetrics`` result for ``[from_ts, to_ts)`` in ``bucket``-second buckets.

    Gauges are averaged per bucket; rates are Σ increase / Σ elapsed over the
    pairs of consecutive samples whose later sample falls in the bucket (pass
    the sample just before ``from_ts`` too, for the first bucket's rates).
    Buckets without data are left out.
    """
    ordered = sorted(samples, key=lambda s: s.taken_at)

    def slot(t: float) -> int | None:
        if not from_ts <= t < to_ts:
            return None
        return math.floor(from_ts + (t - from_ts) // bucket * bucket)

    timed = [(ts, s) for s in ordered if (ts := slot(s.taken_at)) is not None]
    pairs = [
        (ts, prev, cur)
        for prev, cur in itertools.pairwise(ordered)
        if (ts := slot(cur.taken_at)) is not None and cur.taken_at > prev.taken_at
    ]
    out = []
    for metric in _JSON_METRICS:
        if metric.how == "gauge":
            cells = _gauge_cells(metric, timed)
        else:
            cells = _counter_cells(metric, pairs)
        series = [
            {
                "label": label,
                "dataPoints": [
                    {
                        "timestamp": ts,
                        "value": round(num if metric.how == "increase" else num / den, 6),
                    }
                    for ts, (num, den) in sorted(by_ts.items())
                ],
            }
            for label, by_ts in cells.items()
        ]
        out.append(
            {
                "key": metric.key,
                "name": metric.name,
                "unit": metric.unit,
                "description": metric.description,
                "series": series,
            }
        )
    return {"metrics": out}
