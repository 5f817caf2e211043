"""The Prometheus text of the two ``/prometheus`` endpoints, from services' latest samples.

:data:`FAMILIES` lists the 22 metric families in data-sheet order with their
type and HELP text; :func:`render_prometheus` writes every service's series
under them, labelled from the store (:class:`ServiceLabels`). How each value is
measured is told in :mod:`telemetry.sampling`, which re-exports this module's names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pgcloud_nb.sandbox.telemetry.samples import INFO, PS, Sample

__all__ = ["FAMILIES", "ServiceLabels", "render_prometheus"]

# (name, type, HELP) in data-sheet order. Three HELP texts are verbatim from the
# docs; the others are written from the data sheet's meanings (docs/api-behaviour.md §9.3).
FAMILIES: tuple[tuple[str, str, str], ...] = (
    (INFO, "gauge", "Information about PostgreSQL service, including status and version."),
    (PS + "CPUCores", "gauge", "Number of CPU cores provisioned for the service."),
    (PS + "MemoryLimitBytes", "gauge", "Memory provisioned for the service, in bytes."),
    (PS + "StorageLimitBytes", "gauge", "Storage provisioned for the service, in bytes."),
    (PS + "CPUSeconds_Total", "counter", "CPU time consumed by mode, in seconds."),
    (PS + "MemoryUsedPercent", "gauge", "Memory in use relative to the memory limit (%)."),
    (PS + "MemoryCachePercent", "gauge", "Memory held by cache and buffers (%)."),
    (PS + "FilesystemUsedPercent", "gauge", "Filesystem space used relative to storage (%)."),
    (PS + "DiskReads_Total", "counter", "Number of completed disk read operations."),
    (PS + "DiskWrites_Total", "counter", "Number of completed disk write operations."),
    (PS + "NetworkReceiveBytes_Total", "counter", "Network bytes received."),
    (PS + "NetworkTransmitBytes_Total", "counter", "Network bytes transmitted."),
    (PS + "TuplesFetched_Total", "counter", "Number of rows fetched by queries."),
    (PS + "TuplesInserted_Total", "counter", "Number of rows inserted."),
    (PS + "TuplesUpdated_Total", "counter", "Number of rows updated."),
    (PS + "TuplesDeleted_Total", "counter", "Number of rows deleted."),
    (PS + "TransactionsCommitted_Total", "counter", "Number of transactions committed."),
    (PS + "TransactionsRolledBack_Total", "counter", "Number of transactions rolled back."),
    (PS + "Deadlocks_Total", "counter", "Number of deadlocks detected."),
    (PS + "ActiveConnections", "gauge", "Number of active connections by state."),
    (
        PS + "CacheHitRatio",
        "gauge",
        "Buffer cache hit ratio: blocks served from cache vs. total blocks accessed (%).",
    ),
    (PS + "DatabaseSizeBytes", "gauge", "On-disk size of each database, in bytes."),
)


@dataclass(frozen=True, slots=True)
class ServiceLabels:
    """What the store knows about a service, for the labels of its series."""

    org_id: str
    service_id: str
    service_name: str
    status: str
    version: str


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
        lines[INFO].append(_series(INFO, common + extra, 1))
        for name, labels, value in sample.points if sample else ():
            if name in lines and name != INFO:
                lines[name].append(_series(name, common + list(labels.items()), value))
    blocks = [
        f"# HELP {name} {help_}\n# TYPE {name} {type_}\n" + "\n".join(lines[name]) + "\n"
        for name, type_, help_ in FAMILIES
        if lines[name]
    ]
    return "\n".join(blocks)
