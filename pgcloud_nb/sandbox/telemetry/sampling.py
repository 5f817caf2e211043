"""Metrics of a sandbox service, measured on its real PostgreSQL server and processes.

`collect` takes one `Sample` (:mod:`telemetry.samples`) of one server. The
other modules of the room shape samples into answers: `render_prometheus`
(:mod:`telemetry.exposition`) turns the latest samples of many services into the
Prometheus text of the two ``/prometheus`` endpoints; `metrics_json`
(:mod:`telemetry.timeseries`) turns a run of samples into the bucketed ``/metrics``
result (`PostgresMetrics`), with `plan_buckets` checking its window. This
module holds the measuring only.

How each of the 22 metrics of the data sheet (docs/api-behaviour.md §9.3) is derived:

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

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pgcloud_nb.sandbox.telemetry import procfs
from pgcloud_nb.sandbox.telemetry.samples import Sample
from pgcloud_nb.sizes import SizeSpec

__all__ = ["ProcessCounters", "collect"]

_OP_BYTES = 4096  # one disk "operation" = one 4 KiB page reaching the block layer

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
