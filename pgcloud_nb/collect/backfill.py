"""Backfill: what the collector missed, rebuilt from a service's JSON ``/metrics`` history.

The JSON endpoint answers buckets of a window (``from_date``/``to_date``/
``bucket_size_seconds``, at most 250 points a call, docs/api-behaviour.md §9.1):
gauges as bucket averages, counters as per-second rates (CPU as a share of the
cores). The store keeps Prometheus samples, so a gap is filled with samples of
the same families (docs/api-behaviour.md §9.3), marked as backfilled:

- gauges map one to one (``connection_count`` → ``PostgresServer_ActiveConnections``
  by ``state``, ``database_size`` → ``PostgresServer_DatabaseSizeBytes`` by
  ``database``, …); the three size gauges (cores, memory and storage limits) are
  carried over from the scrape that closed the gap, so CPU % is computable on
  backfilled points too;
- counters are rebuilt by integrating the rates over each bucket, starting at
  the counter's value before the gap. When its value after the gap is known too
  and the counter did not reset meanwhile, the increments are scaled so the
  rebuilt run lands on it: rates over the rebuilt points keep the shape the API
  reported and add up to the true increase, and no false counter reset appears at
  either edge of the gap.

A gap is a :class:`Debt`; :func:`windows` cuts it into calls of at most
:data:`MAX_POINTS` buckets, and :func:`backfill_frame` turns one answer into the
long frame :meth:`Store.insert_scrape` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import CORES, concat_scrapes
from ..prometheus import TS_DTYPE

__all__ = ["MAX_CALLS_PER_GAP", "MAX_POINTS", "Debt", "backfill_frame", "windows"]

MAX_POINTS = 250  # data points per /metrics call (docs/api-behaviour.md §9.1)
# A long outage is paid in at most this many calls per service: the bucket grows instead.
MAX_CALLS_PER_GAP = 4
STATIC_GAUGES = (CORES, "PostgresServer_MemoryLimitBytes", "PostgresServer_StorageLimitBytes")

# /metrics key → (family, label column, how). A fixed label value maps through _FIXED.
_P = "PostgresServer_"
_GAUGES: dict[tuple[str, str], tuple[str, str | None, str | None]] = {
    ("memory_usage", "Used"): (_P + "MemoryUsedPercent", None, None),
    ("memory_usage", "Cache"): (_P + "MemoryCachePercent", None, None),
    ("disk_usage", "Used"): (_P + "FilesystemUsedPercent", None, None),
    ("cache_hit_ratio", "Hit ratio"): (_P + "CacheHitRatio", None, None),
}
_LABELLED_GAUGES = {  # one series per label value
    "connection_count": (_P + "ActiveConnections", "state"),
    "database_size": (_P + "DatabaseSizeBytes", "database"),
}
_COUNTERS: dict[tuple[str, str], str] = {
    ("iops", "Reads"): _P + "DiskReads_Total",
    ("iops", "Writes"): _P + "DiskWrites_Total",
    ("network", "Receive"): _P + "NetworkReceiveBytes_Total",
    ("network", "Transmit"): _P + "NetworkTransmitBytes_Total",
    ("throughput", "Fetched"): _P + "TuplesFetched_Total",
    ("throughput", "Inserted"): _P + "TuplesInserted_Total",
    ("throughput", "Updated"): _P + "TuplesUpdated_Total",
    ("throughput", "Deleted"): _P + "TuplesDeleted_Total",
    ("transactions", "Commits"): _P + "TransactionsCommitted_Total",
    ("transactions", "Rollbacks"): _P + "TransactionsRolledBack_Total",
    ("deadlocks", "Deadlocks"): _P + "Deadlocks_Total",
}
_CPU_KEY, _CPU = "cpu_usage", _P + "CPUSeconds_Total"  # % of the cores, one series per mode
_INCREASE_KEYS = frozenset({"deadlocks"})  # already an increase per bucket, not a rate

SeriesKey = str  # "metric" or "metric|mode": a counter or static gauge of one service


@dataclass
class Debt:
    """A service's gap ``(start, end)``: both edges are real scrapes the store holds.

    ``before``/``after``: counter (and static gauge) values at the edges, by
    :func:`series_key`; ``before`` may be empty (not known after a restart).
    """

    service_id: str
    service_name: str
    start: pd.Timestamp
    end: pd.Timestamp
    before: dict[SeriesKey, float] = field(default_factory=dict)
    after: dict[SeriesKey, float] = field(default_factory=dict)
    cursor: pd.Timestamp | None = None  # paid up to here (a long gap takes several calls)

    def advance(self, to: pd.Timestamp, frame: pd.DataFrame) -> None:
        """Paid up to ``to``; the rebuilt counters' last values start the next call."""
        self.cursor = to
        if len(frame):
            last = (
                frame.sort_values("timestamp")
                .groupby(
                    [c for c in ("metric", "mode") if c in frame], observed=True, dropna=False
                )["value"]
                .last()
            )
            for idx, value in last.items():
                metric, mode = idx if isinstance(idx, tuple) else (idx, None)
                if str(metric).endswith("_Total"):
                    self.before[series_key(str(metric), mode)] = float(value)

    def round_id(self, org_id: str, lo: pd.Timestamp, hi: pd.Timestamp) -> str:
        """Deterministic per call window: a window paid twice (kill -9) is stored once."""
        return f"{org_id}/backfill/{self.service_id}/{_iso(lo)}/{_iso(hi)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id,
            "service_name": self.service_name,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "before": self.before,
            "after": self.after,
            "cursor": None if self.cursor is None else _iso(self.cursor),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Debt:
        return cls(
            str(data["service_id"]),
            str(data["service_name"]),
            pd.Timestamp(data["start"]),
            pd.Timestamp(data["end"]),
            {str(k): float(v) for k, v in dict(data.get("before") or {}).items()},
            {str(k): float(v) for k, v in dict(data.get("after") or {}).items()},
            pd.Timestamp(data["cursor"]) if data.get("cursor") else None,
        )


def series_key(metric: str, mode: object = None) -> SeriesKey:
    return f"{metric}|{mode}" if isinstance(mode, str) and mode else metric


def edge_values(frame: pd.DataFrame) -> dict[str, dict[SeriesKey, float]]:
    """Per service id: the counters' and static gauges' values in one scrape frame."""
    if not len(frame):
        return {}
    keep = frame["metric"].astype(str)
    mask = keep.str.endswith("_Total") | keep.isin(STATIC_GAUGES)
    sub = frame[mask]
    modes = sub["mode"] if "mode" in sub else pd.Series([None] * len(sub), index=sub.index)
    out: dict[str, dict[SeriesKey, float]] = {}
    for sid, metric, mode, value in zip(
        sub["service_id"].astype(str), sub["metric"].astype(str), modes, sub["value"], strict=True
    ):
        out.setdefault(sid, {})[series_key(metric, mode)] = float(value)
    return out


def windows(debt: Debt, interval: float) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """The ``(from, to, bucket)`` calls that cover the gap, oldest first.

    The bucket is the collector's interval (whole seconds), grown so that a long
    gap takes at most :data:`MAX_CALLS_PER_GAP` calls of :data:`MAX_POINTS` points.
    """
    span = (debt.end - debt.start).total_seconds()
    if span <= 0:
        return []
    bucket = max(1, math.ceil(interval), math.ceil(span / (MAX_POINTS * MAX_CALLS_PER_GAP)))
    step = pd.Timedelta(seconds=bucket * MAX_POINTS)
    out = []
    lo = (debt.cursor if debt.cursor is not None else debt.start).floor("ms")
    while lo < debt.end:
        hi = min(lo + step, debt.end.ceil("ms"))
        out.append((lo, hi, bucket))
        lo = hi
    return out


def backfill_frame(
    metrics: pd.DataFrame, debt: Debt, bucket: int, *, final: bool = True
) -> pd.DataFrame:
    """One ``/metrics`` answer (:func:`pgcloud_nb.frames.metrics_frame`) as Prometheus samples.

    Only points strictly inside the gap are kept: its edges are real scrapes.
    ``final``: the answer reaches the gap's end, so counters land on their value
    there; before that they only never pass it.
    """
    m = metrics[(metrics["timestamp"] > debt.start) & (metrics["timestamp"] < debt.end)]
    m = m[m["value"].notna()]
    if not len(m):
        return _frame([], debt)
    rows: list[tuple[pd.Timestamp, str, str | None, str | None, float]] = []
    keys, labels = m["key"].astype(str).to_numpy(), m["label"].astype(str).to_numpy()
    stamps, values = m["timestamp"].to_numpy(), m["value"].to_numpy(np.float64)
    counters: dict[SeriesKey, list[tuple[Any, float]]] = {}
    for key, label, ts, value in zip(keys, labels, stamps, values, strict=True):
        if (key, label) in _GAUGES:
            metric, col, lv = _GAUGES[key, label]
            rows.append((ts, metric, col, lv, value))
        elif key in _LABELLED_GAUGES:
            metric, col = _LABELLED_GAUGES[key]
            rows.append((ts, metric, col, label, value))
        elif key == _CPU_KEY:
            cores = debt.after.get(CORES) or debt.before.get(CORES) or 1.0
            counters.setdefault(series_key(_CPU, label), []).append(
                (ts, value / 100 * cores * bucket)
            )
        elif (key, label) in _COUNTERS:
            inc = value if key in _INCREASE_KEYS else value * bucket
            counters.setdefault(_COUNTERS[key, label], []).append((ts, inc))
    for skey, points in counters.items():
        rows.extend(_rebuild(skey, points, debt, final=final))
    for ts in sorted(set(stamps)):
        for metric in STATIC_GAUGES:
            value = debt.after.get(metric, debt.before.get(metric))
            if value is not None:
                rows.append((ts, metric, None, None, value))
    return _frame(rows, debt)


def _rebuild(
    skey: SeriesKey, points: list[tuple[Any, float]], debt: Debt, *, final: bool
) -> list[tuple[Any, str, str | None, str | None, float]]:
    """A counter's values at each bucket, from its increments (see the module docstring)."""
    points.sort(key=lambda p: p[0])
    inc = np.maximum(np.array([p[1] for p in points], np.float64), 0.0)
    total = float(inc.sum())
    start, end = debt.before.get(skey), debt.after.get(skey)
    ceiling = end if start is not None and end is not None and end >= start else None
    if final and ceiling is not None and start is not None and total > 0:
        inc *= (ceiling - start) / total  # lands on the value after the gap
    if start is None:
        start = max(0.0, (end if end is not None else total) - total)
    metric, _, mode = skey.partition("|")
    cum = start + np.cumsum(inc)
    if ceiling is not None:
        cum = np.minimum(cum, ceiling)  # never above the value after the gap: no false reset
    return [(ts, metric, "mode" if mode else None, mode or None, float(v))
            for (ts, _), v in zip(points, cum, strict=True)]  # fmt: skip


def _frame(rows: list[tuple[Any, str, str | None, str | None, float]], debt: Debt) -> pd.DataFrame:
    """Long frame rows → the shape :func:`pgcloud_nb.prometheus.parse_prometheus` makes."""
    cols = sorted({c for _, _, c, _, _ in rows if c})
    data: dict[str, Any] = {
        "timestamp": pd.Series([r[0] for r in rows], dtype=TS_DTYPE),
        "service_id": pd.Categorical([debt.service_id] * len(rows)),
        "service_name": pd.Categorical([debt.service_name] * len(rows)),
        "metric": pd.Categorical([r[1] for r in rows]),
    }
    for col in cols:
        data[col] = pd.Categorical([r[3] if r[2] == col else None for r in rows])
    data["value"] = np.array([r[4] for r in rows], np.float64)
    frame = pd.DataFrame(data)
    # concat_scrapes orders the label columns as every other scrape frame has them
    out = concat_scrapes([frame])
    out.attrs["types"] = {
        str(m): "counter" if str(m).endswith("_Total") else "gauge"
        for m in frame["metric"].cat.categories
    }
    return out


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
