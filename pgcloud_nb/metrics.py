"""Prometheus metrics as DataFrames: parse, rates, derived series, the fleet snapshot.

- :func:`parse_prometheus` (from :mod:`pgcloud_nb.prometheus`) turns the text of
  either Prometheus endpoint into one long frame ``timestamp, service_id,
  service_name, metric, <labels>, value``. Counter names keep the API's
  ``_Total`` suffix.
- :func:`rates` turns counters into per-second rates, detecting resets.
- :func:`derived` computes CPU %, commit and rollback rates and cache hit ratio.
- :func:`key_metrics` is the latest value of the key series, one row per service.
- :func:`fleet_snapshot` is services × key metrics in 2 requests.
- :class:`~pgcloud_nb.history.History` accumulates scrapes (its own module).

The JSON ``/metrics`` endpoint has its frame in :func:`pgcloud_nb.frames.metrics_frame`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from . import columns
from .errors import NotFoundError
from .frames import services_frame
from .prometheus import TS_DTYPE, label_columns, parse_prometheus
from .requester import Tally

__all__ = [
    "ORG_PROMETHEUS_LIMIT",
    "concat_scrapes",
    "counter_rates",
    "derived",
    "fleet_snapshot",
    "key_metrics",
    "parse_prometheus",
    "rates",
]

# The org endpoint covers at most this many services (docs/api-behaviour.md §9.2).
ORG_PROMETHEUS_LIMIT = 100

CPU = "PostgresServer_CPUSeconds_Total"
CORES = "PostgresServer_CPUCores"
COMMITS = "PostgresServer_TransactionsCommitted_Total"
ROLLBACKS = "PostgresServer_TransactionsRolledBack_Total"
CACHE = "PostgresServer_CacheHitRatio"
INFO = "PostgresServiceInfo"
_BASE = ("timestamp", "service_id", "service_name", "metric")
_KEY_METRICS = {
    CORES: "cpu_cores",
    "PostgresServer_MemoryLimitBytes": "memory_limit_bytes",
    "PostgresServer_StorageLimitBytes": "storage_limit_bytes",
    "PostgresServer_MemoryUsedPercent": "memory_used_percent",
    "PostgresServer_MemoryCachePercent": "memory_cache_percent",
    "PostgresServer_FilesystemUsedPercent": "filesystem_used_percent",
    "PostgresServer_ActiveConnections": "connections",
    CACHE: "cache_hit_ratio",
    "PostgresServer_DatabaseSizeBytes": "database_size_bytes",
    COMMITS: "transactions_committed",
    ROLLBACKS: "transactions_rolled_back",
    "PostgresServer_Deadlocks_Total": "deadlocks",
}
# Counts and byte sizes: Int64 when every value is whole, so that a frame shows 17179869184
# (and tables.readable shows 16.0 GiB) where a float64 column shows 1.717987e+10.
_COUNTS = (
    "memory_limit_bytes",
    "storage_limit_bytes",
    "connections",
    "active_connections",
    "database_size_bytes",
    "transactions_committed",
    "transactions_rolled_back",
    "deadlocks",
)
# The rates fleet_snapshot adds from a history: columns even before there are two scrapes.
RATE_COLUMNS = ("cpu_percent", "commits_per_s", "rollbacks_per_s", "rollback_ratio")


# --- rates ---------------------------------------------------------------------------------


def counter_rates(
    series: np.ndarray, ts_us: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-second rates of counter samples, given each sample's series code.

    Returns (positions of the samples that get a rate, rates, reset flags). A
    series' first sample has no rate. A decrease is a counter reset: as in
    Prometheus, the increase is then the new value itself (counted from zero).
    """
    order = np.lexsort((ts_us, series))
    s, t, v = series[order], ts_us[order], values[order]
    same = s[1:] == s[:-1]
    dt = np.diff(t.astype(np.float64)) / 1e6  # in float: far-apart int64 µs would wrap
    with np.errstate(invalid="ignore"):  # +Inf - +Inf is NaN, a sample's own business
        dv = v[1:] - v[:-1]
    reset = dv < 0
    keep = same & (dt > 0)
    inc = np.where(reset, v[1:], dv)[keep]
    return order[1:][keep], inc / dt[keep], reset[keep]


def is_counter(metric: str, types: dict[str, str] | None = None) -> bool:
    """By the TYPE line when known, else by the data sheet's ``_Total`` suffix."""
    kind = (types or {}).get(metric, "untyped")
    return kind == "counter" or (kind == "untyped" and metric.endswith("_Total"))


def rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Counter series as per-second rates, stamped at the later sample of each pair.

    Same columns as the input plus ``reset`` (True where the counter went down
    and the rate counts from zero). Needs at least two scrapes of a series.
    """
    types = frame.attrs.get("types")
    metrics = [str(m) for m in frame["metric"].cat.categories if is_counter(str(m), types)]
    sub = frame[frame["metric"].isin(metrics)]
    keys = [c for c in sub.columns if c not in ("timestamp", "value")]
    series = sub.groupby(keys, observed=True, dropna=False, sort=False).ngroup().to_numpy()
    ts = sub["timestamp"].to_numpy("datetime64[us]").view("int64")
    pos, rate, reset = counter_rates(series, ts, sub["value"].to_numpy(np.float64))
    out = sub.iloc[pos].reset_index(drop=True)
    out["value"] = rate
    out["reset"] = reset
    return out


def derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived series per service and scrape, from a long frame of ≥ 2 scrapes.

    Columns: ``service_name, cpu_percent`` (rate of non-idle CPU seconds /
    CPUCores × 100, docs/api-behaviour.md §9.3), ``commits_per_s``,
    ``rollbacks_per_s``, ``rollback_ratio`` (rollbacks / all transactions) and
    ``cache_hit_ratio`` (the API's gauge, 0–100). Index: ``timestamp, service_id``.
    """
    idx = ["timestamp", "service_id"]
    r = rates(frame)

    def pick(source: pd.DataFrame, metric: str) -> pd.DataFrame:
        return source[source["metric"] == metric]

    cpu = pick(r, CPU)
    if "mode" in cpu:
        cpu = cpu[cpu["mode"] != "idle"]
    busy = cpu.groupby(idx, observed=True)["value"].sum()
    cores = pick(frame, CORES).groupby(idx, observed=True)["value"].last()
    commits = pick(r, COMMITS).groupby(idx, observed=True)["value"].sum()
    rollbacks = pick(r, ROLLBACKS).groupby(idx, observed=True)["value"].sum()
    cache = pick(frame, CACHE).groupby(idx, observed=True)["value"].last()
    names = frame.groupby(idx, observed=True)["service_name"].first()
    out = pd.DataFrame(
        {
            "cpu_percent": busy / cores.reindex(busy.index) * 100,
            "commits_per_s": commits,
            "rollbacks_per_s": rollbacks,
        }
    )
    out["rollback_ratio"] = out["rollbacks_per_s"] / (out["commits_per_s"] + out["rollbacks_per_s"])
    out["cache_hit_ratio"] = cache.reindex(out.index)
    out.insert(0, "service_name", names.reindex(out.index))
    return out.sort_index()


# --- snapshots ---------------------------------------------------------------------------


def key_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest scrape of each service as one row: status, version and key gauges/counters.

    Multi-series metrics are summed (``connections`` over states,
    ``database_size_bytes`` over databases); ``active_connections`` is the
    ``state="active"`` part. Index: ``service_id`` (str).
    """
    latest = frame[
        frame["timestamp"]
        == frame.groupby("service_id", observed=True)["timestamp"].transform("max")
    ]
    latest = latest[latest["service_id"].notna()]
    wide = (
        latest[latest["metric"].isin(list(_KEY_METRICS))]
        .groupby(["service_id", "metric"], observed=True)["value"]
        .sum()
        .unstack("metric")
        .reindex(columns=list(_KEY_METRICS))
        .rename(columns=_KEY_METRICS)
    )
    wide.columns.name = None
    info = latest[latest["metric"] == INFO].groupby("service_id", observed=True).last()
    conns = latest[latest["metric"] == "PostgresServer_ActiveConnections"]
    active = conns[conns["state"] == "active"] if "state" in conns else conns.iloc[:0]
    out = pd.DataFrame(index=latest.groupby("service_id", observed=True).size().index)
    out["scraped_at"] = latest.groupby("service_id", observed=True)["timestamp"].max()
    for col in ("postgres_status", "postgres_version"):
        out[col] = info[col] if col in info else pd.Series(dtype="category")
        out[col] = out[col].astype("category")
    out = out.join(wide)
    out.insert(
        list(out.columns).index("connections") + 1,
        "active_connections",
        active.groupby("service_id", observed=True)["value"].sum(),
    )
    for col in _COUNTS:
        out[col] = _whole(out[col])
    out.index = out.index.astype(str)
    out.index.name = "service_id"
    return out


def _whole(values: pd.Series) -> pd.Series:
    """``Int64`` when every value is a whole number within 64 bits, else as it was."""
    floats = values.to_numpy(np.float64, na_value=np.nan)
    known = floats[~np.isnan(floats)]
    if not (np.isfinite(known).all() and (known == np.round(known)).all()):
        return values
    return pd.Series(columns.ints(list(values.astype(object))), index=values.index)


class _FleetClient(Protocol):
    def counting(self) -> AbstractContextManager[Tally]: ...

    def list_services(self) -> Sequence[Any]: ...

    def prometheus(self, service_id: str | None = None) -> str: ...


class _Scrapes(Protocol):
    # What fleet_snapshot asks of a pgcloud_nb.history.History (which imports this module).
    def add(self, scrape: pd.DataFrame) -> int: ...

    def derived(self, last: int | None = None) -> pd.DataFrame: ...


def fleet_snapshot(client: _FleetClient, *, history: _Scrapes | None = None) -> pd.DataFrame:
    """Services × their latest key metrics, in 2 requests for up to 100 services.

    The list endpoint gives the services, and the org Prometheus endpoint the
    metrics of all of them at once: 2 requests, not 1 + N. The org endpoint
    covers at most 100 services and takes no paging or filter parameter
    (docs/api-behaviour.md §9.2), so past 100 the services it left out are fetched one by one
    from the per-service endpoint: 2 + (N − 100) requests, the fewest the API
    allows. (Services it omits below 100 — creating, stopped — are not chased:
    their ``PostgresServiceInfo`` is all there would be.)

    With a ``history``, the scrape is added to it and the derived rates of its
    last two scrapes (``cpu_percent``, ``commits_per_s``…) join the frame.
    ``attrs["requests"]`` is the number of requests the snapshot cost: its own, not
    those a widget sent meanwhile on the same client.
    """
    with client.counting() as tally:
        services = list(client.list_services())
        now = pd.Timestamp.now(tz="UTC")
        scrapes = [parse_prometheus(client.prometheus(), timestamp=now)]
        if len(services) > ORG_PROMETHEUS_LIMIT:
            covered = set(scrapes[0]["service_id"].dropna().astype(str))
            for svc in services:
                sid = str(svc["id"] if isinstance(svc, dict) else svc.id)
                if sid not in covered:
                    try:
                        scrapes.append(parse_prometheus(client.prometheus(sid), timestamp=now))
                    except NotFoundError:
                        continue  # deleted since the list was taken
    scrape = concat_scrapes(scrapes)
    frame = services_frame(services)
    out = frame.merge(key_metrics(scrape), left_on="id", right_index=True, how="left")
    if history is not None:
        history.add(scrape)
        rated = history.derived(last=2)
        last = rated.reset_index().groupby("service_id", observed=True).last()
        last.index = last.index.astype(str)
        # the same columns from the first snapshot on (NaN until two scrapes are kept)
        last = last.reindex(columns=list(RATE_COLUMNS)).astype(np.float64)
        out = out.merge(last, left_on="id", right_index=True, how="left")
    out.attrs["requests"] = tally.requests
    return out.reset_index(drop=True)


def concat_scrapes(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Long frames one after the other, categoricals unioned (plain concat makes them object)."""
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return parse_prometheus("")
    labels = label_columns({c for f in frames for c in f.columns} - {*_BASE, "value"})
    cols: dict[str, Any] = {}
    for col in (*_BASE, *labels, "value"):
        parts = [f[col] if col in f else _empty_cat(len(f)) for f in frames]
        if col == "timestamp":
            cols[col] = pd.concat([pd.Series(p) for p in parts], ignore_index=True).astype(TS_DTYPE)
        elif col == "value":
            cols[col] = np.concatenate([p.to_numpy(np.float64) for p in parts])
        else:
            cols[col] = union_categoricals([pd.Categorical(p) for p in parts])
    out = pd.DataFrame(cols)
    types: dict[str, str] = {}
    for f in frames:
        types.update(f.attrs.get("types", {}))
    orgs = {f.attrs.get("org_id") for f in frames} - {None}
    out.attrs.update(types=types, org_id=orgs.pop() if len(orgs) == 1 else None)
    return out


def _empty_cat(n: int) -> pd.Categorical:
    return pd.Categorical([None] * n, categories=pd.Index([], dtype=str))
