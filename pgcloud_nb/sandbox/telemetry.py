"""Metrics of a sandbox service, measured on its real PostgreSQL server and processes.

`collect` takes one `Sample` of one server; `render_prometheus` turns the latest
samples of many services into the Prometheus text of the two ``/prometheus``
endpoints; `metrics_json` turns a run of samples into the bucketed ``/metrics``
result (`PostgresMetrics`), with `plan_buckets` checking its window.

How each of the 22 metrics of the data sheet is derived:

- ``PostgresServiceInfo`` — 1, labelled with the service's state and major
  version from the store (`ServiceLabels`); the only series of a service that
  has no sample (creating, stopped, …).
- ``PostgresServer_CPUCores`` / ``_MemoryLimitBytes`` / ``_StorageLimitBytes`` —
  the size's vCPUs, memory and storage (`pgcloud_nb.sizes.SizeSpec`).
- ``PostgresServer_CPUSeconds_Total{mode}`` — ``user``/``system``: utime+cutime
  and stime+cstime of /proc/<pid>/stat summed over the postmaster and its live
  descendants. Linux adds a reaped child's time to its parent's cutime/cstime,
  so exited backends are counted exactly once. ``iowait``: the processes'
  delayacct_blkio_ticks (0 unless the kernel's task_delayacct is on).
  ``irq``/``softirq``/``steal``/``nice``: 0 — the kernel books interrupt and
  hypervisor time to CPUs, not processes, and a process's niced time is
  already in its user time, so per-process accounting cannot split them out.
  ``idle``: vCPUs × seconds elapsed − busy seconds, floored at 0 per interval:
  from the postmaster's start at the first sample, then accumulated sample to
  sample so it stays monotonic when the server uses more cores than the size.
- ``PostgresServer_MemoryUsedPercent`` — Σ PSS (/proc/<pid>/smaps_rollup, RSS
  when unreadable) over the tree / MemoryLimitBytes × 100. PSS splits shared
  pages between their users, so shared_buffers count once.
- ``PostgresServer_MemoryCachePercent`` — Σ Pss_Shmem / MemoryLimitBytes × 100:
  the resident part of the shared memory segment, which is PostgreSQL's buffer
  cache. (The OS page cache cannot be attributed to one server cheaply.)
- ``PostgresServer_FilesystemUsedPercent`` — blocks allocated under the data
  directory / StorageLimitBytes × 100.
- ``PostgresServer_DiskReads_Total`` / ``_DiskWrites_Total`` — read_bytes /
  write_bytes of /proc/<pid>/io (bytes that really reached the block layer, so
  page-cache hits are not reads) summed like the CPU time (reaped children's
  I/O is added to the parent), in 4 KiB operations: bytes // 4096.
  syscr/syscw were rejected: they count socket and pipe calls too.
- ``PostgresServer_NetworkReceiveBytes_Total`` / ``_NetworkTransmitBytes_Total``
  — bytes_received / bytes_acked of every TCP connection to the server's port,
  from ``ss -tin``. Unix-socket sessions, and TCP sessions that open and close
  between two samples, are not seen.
- ``PostgresServer_Tuples{Fetched,Inserted,Updated,Deleted}_Total``,
  ``_Transactions{Committed,RolledBack}_Total``, ``_Deadlocks_Total`` —
  tup_fetched, tup_inserted, tup_updated, tup_deleted, xact_commit,
  xact_rollback, deadlocks of pg_stat_database, summed over its rows.
- ``PostgresServer_ActiveConnections{state}`` — client backends of
  pg_stat_activity by state, without the collector's own session; ``active``,
  ``idle`` and ``idle in transaction`` are always present, rarer states when
  non-zero.
- ``PostgresServer_CacheHitRatio`` — Σ blks_hit / Σ (blks_hit + blks_read) × 100
  over pg_stat_database since the statistics were last reset; 100 before any
  block was read.
- ``PostgresServer_DatabaseSizeBytes{database}`` — pg_database_size() of every
  non-template database.

Counters are cumulative and never decrease, through backends coming and going,
PostgreSQL restarts and sandbox restarts: `ProcessCounters` (persisted by the
store) keeps, per source (a postmaster's process tree, a TCP connection, a
pg_stat_database row), the last raw reading, and folds it into a base when the
source disappears or its reading restarts lower. So lost statistics (a crash
or immediate shutdown discards pg_stat data; a clean restart keeps it), a
dropped database or pg_stat_reset() never make a counter go back.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.pq import TransactionStatus

from pgcloud_nb.sandbox import procfs
from pgcloud_nb.sizes import SizeSpec

__all__ = [
    "FAMILIES",
    "MAX_POINTS",
    "ProcessCounters",
    "Sample",
    "ServiceLabels",
    "collect",
    "metrics_json",
    "plan_buckets",
    "render_prometheus",
]

MAX_POINTS = 250  # the /metrics cap on data points [SPEC]
_OP_BYTES = 4096  # one disk "operation" = one 4 KiB page reaching the block layer
_PS = "PostgresServer_"
_INFO = "PostgresServiceInfo"

# (name, type, HELP) in data-sheet order. Three HELP texts are verbatim from the
# docs; the others are written from the data sheet's meanings (API-NOTES §13).
FAMILIES: tuple[tuple[str, str, str], ...] = (
    (_INFO, "gauge", "Information about PostgreSQL service, including status and version."),
    (_PS + "CPUCores", "gauge", "Number of CPU cores provisioned for the service."),
    (_PS + "MemoryLimitBytes", "gauge", "Memory provisioned for the service, in bytes."),
    (_PS + "StorageLimitBytes", "gauge", "Storage provisioned for the service, in bytes."),
    (_PS + "CPUSeconds_Total", "counter", "CPU time consumed by mode, in seconds."),
    (_PS + "MemoryUsedPercent", "gauge", "Memory in use relative to the memory limit (%)."),
    (_PS + "MemoryCachePercent", "gauge", "Memory held by cache and buffers (%)."),
    (_PS + "FilesystemUsedPercent", "gauge", "Filesystem space used relative to storage (%)."),
    (_PS + "DiskReads_Total", "counter", "Number of completed disk read operations."),
    (_PS + "DiskWrites_Total", "counter", "Number of completed disk write operations."),
    (_PS + "NetworkReceiveBytes_Total", "counter", "Network bytes received."),
    (_PS + "NetworkTransmitBytes_Total", "counter", "Network bytes transmitted."),
    (_PS + "TuplesFetched_Total", "counter", "Number of rows fetched by queries."),
    (_PS + "TuplesInserted_Total", "counter", "Number of rows inserted."),
    (_PS + "TuplesUpdated_Total", "counter", "Number of rows updated."),
    (_PS + "TuplesDeleted_Total", "counter", "Number of rows deleted."),
    (_PS + "TransactionsCommitted_Total", "counter", "Number of transactions committed."),
    (_PS + "TransactionsRolledBack_Total", "counter", "Number of transactions rolled back."),
    (_PS + "Deadlocks_Total", "counter", "Number of deadlocks detected."),
    (_PS + "ActiveConnections", "gauge", "Number of active connections by state."),
    (
        _PS + "CacheHitRatio",
        "gauge",
        "Buffer cache hit ratio: blocks served from cache vs. total blocks accessed (%).",
    ),
    (_PS + "DatabaseSizeBytes", "gauge", "On-disk size of each database, in bytes."),
)

# pg_stat_database column → counter family
_PG_COUNTERS = {
    "tup_fetched": "TuplesFetched_Total",
    "tup_inserted": "TuplesInserted_Total",
    "tup_updated": "TuplesUpdated_Total",
    "tup_deleted": "TuplesDeleted_Total",
    "xact_commit": "TransactionsCommitted_Total",
    "xact_rollback": "TransactionsRolledBack_Total",
    "deadlocks": "Deadlocks_Total",
}
_ALWAYS_STATES = ("active", "idle", "idle in transaction")

# One round trip for every database figure. The collector's own session is not a
# client's connection, so it is left out of the counts.
_SQL = f"""
SELECT current_setting('port')::int,
  (SELECT coalesce(json_agg(json_build_object(
      'datid', datid, 'blks_hit', blks_hit, 'blks_read', blks_read,
      {", ".join(f"'{c}', {c}" for c in _PG_COUNTERS)})), '[]')
   FROM pg_stat_database),
  (SELECT coalesce(json_object_agg(datname, pg_database_size(oid)), '{{}}')
   FROM pg_database WHERE NOT datistemplate),
  (SELECT coalesce(json_object_agg(state, n), '{{}}') FROM (
     SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1) s)
"""

Labels = dict[str, str]
Point = tuple[str, Labels, float]


@dataclass(frozen=True, slots=True)
class ServiceLabels:
    """What the store knows about a service, for the labels of its series."""

    org_id: str
    service_id: str
    service_name: str
    status: str
    version: str


@dataclass(slots=True)
class Sample:
    """One measurement of one server: (metric name, extra labels, value) at ``taken_at``."""

    taken_at: float
    points: list[Point] = field(default_factory=list)

    def add(self, family: str, value: float, **labels: str) -> None:
        self.points.append((family if family == _INFO else _PS + family, labels, value))

    def get(self, name: str, **labels: str) -> float | None:
        """The value of one series, e.g. ``get("PostgresServer_CPUSeconds_Total", mode="user")``."""
        return next((v for n, lb, v in self.points if n == name and lb == labels), None)

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": self.taken_at, "points": [[n, lb, v] for n, lb, v in self.points]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        points = [
            (str(n), {str(k): str(x) for k, x in lb.items()}, v) for n, lb, v in data["points"]
        ]
        return cls(float(data["taken_at"]), points)


@dataclass(slots=True)
class ProcessCounters:
    """Running totals that keep counters monotonic across sources that come and go.

    For every counter, ``last`` holds the latest raw reading per source and
    ``base`` the contributions of sources that are gone or restarted lower.
    """

    base: dict[str, float] = field(default_factory=dict)
    last: dict[str, dict[str, float]] = field(default_factory=dict)
    idle: float = 0.0
    idle_at: float | None = None
    busy_at: float = 0.0

    def total(self, counter: str) -> float:
        return self.base.get(counter, 0.0) + sum(self.last.get(counter, {}).values())

    def observe(self, counter: str, readings: Mapping[str, float], *, clamp: bool = False) -> float:
        """Record this sample's raw readings per source and return the counter's total.

        A reading lower than the source's previous one is a restart of that
        source (stats reset, reused connection) unless ``clamp``, where it is a
        transient dip (a backend reaped mid-read) and the previous value stays.
        """
        last = self.last.setdefault(counter, {})
        base = self.base.get(counter, 0.0)
        for key in [k for k in last if k not in readings]:
            base += last.pop(key)
        for key, raw in readings.items():
            prev = last.get(key)
            if prev is not None and raw < prev:
                if clamp:
                    raw = prev
                else:
                    base += prev
            last[key] = raw
        self.base[counter] = base
        return self.total(counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "last": {c: dict(r) for c, r in self.last.items()},
            "idle": self.idle,
            "idle_at": self.idle_at,
            "busy_at": self.busy_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessCounters:
        return cls(
            base={k: float(v) for k, v in data.get("base", {}).items()},
            last={c: {k: float(v) for k, v in r.items()} for c, r in data.get("last", {}).items()},
            idle=float(data.get("idle", 0.0)),
            idle_at=None if data.get("idle_at") is None else float(data["idle_at"]),
            busy_at=float(data.get("busy_at", 0.0)),
        )


_Rows = tuple[int, list[dict[str, int]], dict[str, int], dict[str, int]]


def _query(conn: psycopg.Connection[Any]) -> _Rows:
    idle_before = conn.info.transaction_status == TransactionStatus.IDLE
    row = conn.execute(_SQL).fetchone()
    if idle_before and not conn.autocommit:
        # end our transaction: pg_stat views are cached for a transaction's life
        conn.rollback()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def _collect_processes(
    sample: Sample, postmaster_pid: int, port: int, size: SizeSpec, acc: ProcessCounters
) -> None:
    tree = procfs.process_tree(postmaster_pid)
    if tree:  # not running: keep the totals, report no memory
        # one source per postmaster lifetime: the tree sum includes reaped children
        pm = tree[0].key
        acc.observe("user", {pm: sum(p.user_tree for p in tree)}, clamp=True)
        acc.observe("system", {pm: sum(p.system_tree for p in tree)}, clamp=True)
        acc.observe("read_bytes", {pm: sum(p.read_bytes_tree for p in tree)}, clamp=True)
        acc.observe("write_bytes", {pm: sum(p.write_bytes_tree for p in tree)}, clamp=True)
        acc.observe("iowait", {p.key: p.iowait for p in tree})  # not inherited: per process
    conns = procfs.tcp_connections(port)
    if conns is not None:
        acc.observe("net_rx", {k: rx for k, (rx, _) in conns.items()})
        acc.observe("net_tx", {k: tx for k, (_, tx) in conns.items()})

    busy = sum(acc.total(m) for m in ("user", "system", "iowait"))
    now = sample.taken_at
    if acc.idle_at is None:
        started = procfs.process_started_at(tree[0]) if tree else now
        acc.idle = max(0.0, size.vcpus * (now - started) - busy)
    else:
        acc.idle += max(0.0, size.vcpus * (now - acc.idle_at) - (busy - acc.busy_at))
    acc.idle_at, acc.busy_at = now, busy

    for mode in ("user", "system", "iowait"):
        sample.add("CPUSeconds_Total", round(acc.total(mode), 2), mode=mode)
    for mode in ("softirq", "steal", "irq", "nice"):
        sample.add("CPUSeconds_Total", 0, mode=mode)  # not attributable to processes
    sample.add("CPUSeconds_Total", round(acc.idle, 2), mode="idle")
    mem = size.memory_bytes
    sample.add("MemoryUsedPercent", 100 * sum(p.pss for p in tree) / mem)
    sample.add("MemoryCachePercent", 100 * sum(p.pss_shmem for p in tree) / mem)


def collect(
    conn: psycopg.Connection[Any],
    postmaster_pid: int,
    pgdata: Path,
    size: SizeSpec,
    acc: ProcessCounters,
) -> Sample:
    """One sample of one running server; updates ``acc`` in place (persist it after)."""
    port, stats, sizes, states = _query(conn)
    sample = Sample(time.time())
    sample.add("CPUCores", size.vcpus)
    sample.add("MemoryLimitBytes", size.memory_bytes)
    sample.add("StorageLimitBytes", size.storage_bytes)
    _collect_processes(sample, postmaster_pid, port, size, acc)
    sample.add("FilesystemUsedPercent", 100 * procfs.disk_usage(pgdata) / size.storage_bytes)
    sample.add("DiskReads_Total", int(acc.total("read_bytes")) // _OP_BYTES)
    sample.add("DiskWrites_Total", int(acc.total("write_bytes")) // _OP_BYTES)
    sample.add("NetworkReceiveBytes_Total", int(acc.total("net_rx")))
    sample.add("NetworkTransmitBytes_Total", int(acc.total("net_tx")))
    for column, family in _PG_COUNTERS.items():
        total = acc.observe(column, {f"db:{r['datid']}": r[column] for r in stats})
        sample.add(family, int(total))
    for state in (*_ALWAYS_STATES, *sorted(set(states) - set(_ALWAYS_STATES))):
        sample.add("ActiveConnections", states.get(state, 0), state=state)
    hit = sum(r["blks_hit"] for r in stats)
    read = sum(r["blks_read"] for r in stats)
    sample.add("CacheHitRatio", 100 * hit / (hit + read) if hit + read else 100)
    for name, nbytes in sorted(sizes.items()):
        if nbytes is not None:  # dropped while we measured
            sample.add("DatabaseSizeBytes", nbytes, database=name)
    return sample


# ---------------------------------------------------------------- Prometheus text


def _number(v: float) -> str:
    if isinstance(v, int) or (math.isfinite(v) and v.is_integer()):
        return str(int(v))
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{body}}} {_number(value)}"


def render_prometheus(entries: Iterable[tuple[ServiceLabels, Sample | None]]) -> str:
    """Prometheus text of many services' latest samples, families in data-sheet order."""
    lines: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    for svc, sample in entries:
        common = [
            ("clickhouse_org", svc.org_id),
            ("postgres_service", svc.service_id),
            ("postgres_service_name", svc.service_name),
        ]
        extra = [("postgres_status", svc.status), ("postgres_version", svc.version)]
        lines[_INFO].append(_series(_INFO, common + extra, 1))
        for name, labels, value in sample.points if sample else ():
            if name in lines and name != _INFO:
                lines[name].append(_series(name, common + list(labels.items()), value))
    blocks = [
        f"# HELP {name} {help_}\n# TYPE {name} {type_}\n" + "\n".join(lines[name]) + "\n"
        for name, type_, help_ in FAMILIES
        if lines[name]
    ]
    return "\n".join(blocks)


# ---------------------------------------------------------------- /metrics JSON

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
            if n != _PS + self.family:
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


# The real key list is unknown (API-NOTES §13); keys and units follow the spec's examples.
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
            scale = 100 / (cur.get(_PS + "CPUCores") or 1)
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
