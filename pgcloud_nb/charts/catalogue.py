"""What each Prometheus metric is called in a chart, and in what unit it is drawn.

The titles restate the meanings of the metrics data sheet (ClickHouse's
docs/monitoring/metrics page, summarised in docs/api-behaviour.md §9.3) in a
person's words; the units are the data sheet's, with three turns that make a
chart readable:

- **counters** (``…_Total``) are drawn as per-second rates, so their unit gains
  ``/s`` (commits → transactions/s);
- **bytes** are shown in B, KiB, MiB, GiB or TiB, whichever keeps the largest
  value in view between 1 and 1024 (:func:`byte_scale`);
- **CPU seconds** become CPU busy as a percentage of the service's provisioned
  cores, the data sheet's own formula: the rate of CPU seconds of every mode
  but idle, over ``PostgresServer_CPUCores``, × 100 (docs/api-behaviour.md §9.3).

A metric missing from the catalogue (a newer API) is titled by its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CATALOGUE",
    "CPU_CORES",
    "CPU_SECONDS",
    "CPU_WITHOUT_CORES",
    "WHOLE_UNITS",
    "MetricInfo",
    "byte_scale",
    "info",
]

CPU_SECONDS = "PostgresServer_CPUSeconds_Total"
CPU_CORES = "PostgresServer_CPUCores"
WHOLE_UNITS = frozenset({"connections", "cores"})  # gauges that count: whole-number ticks
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class MetricInfo:
    """A chart's words for one metric: ``title`` and the y-axis ``unit`` as drawn.

    ``unit`` is ``"bytes"`` (or ``"bytes/s"``) when the value is scaled by
    :func:`byte_scale` at draw time; otherwise it is the label as printed.
    """

    title: str
    unit: str
    counter: bool = False

    @property
    def is_bytes(self) -> bool:
        return self.unit.startswith("bytes")


def _gauge(title: str, unit: str) -> MetricInfo:
    return MetricInfo(title, unit)


def _rate(title: str, unit: str) -> MetricInfo:
    return MetricInfo(title, f"{unit}/s", counter=True)


_PS = "PostgresServer_"
# In the data sheet's order. Meanings are the data sheet's; units are what the axis shows.
CATALOGUE: dict[str, MetricInfo] = {
    "PostgresServiceInfo": _gauge("Service info: status and version labels", "constant 1"),
    CPU_CORES: _gauge("CPU cores provisioned", "cores"),
    _PS + "MemoryLimitBytes": _gauge("Memory provisioned", "bytes"),
    _PS + "StorageLimitBytes": _gauge("Storage provisioned", "bytes"),
    CPU_SECONDS: MetricInfo("CPU busy, all modes but idle", "% of provisioned cores", True),
    _PS + "MemoryUsedPercent": _gauge("Memory in use, of the memory limit", "%"),
    _PS + "MemoryCachePercent": _gauge("Memory held by cache and buffers", "%"),
    _PS + "FilesystemUsedPercent": _gauge("Filesystem space used, of the storage", "%"),
    _PS + "DiskReads_Total": _rate("Disk reads completed", "reads"),
    _PS + "DiskWrites_Total": _rate("Disk writes completed", "writes"),
    _PS + "NetworkReceiveBytes_Total": _rate("Network bytes received", "bytes"),
    _PS + "NetworkTransmitBytes_Total": _rate("Network bytes sent", "bytes"),
    _PS + "TuplesFetched_Total": _rate("Rows fetched by queries", "rows"),
    _PS + "TuplesInserted_Total": _rate("Rows inserted", "rows"),
    _PS + "TuplesUpdated_Total": _rate("Rows updated", "rows"),
    _PS + "TuplesDeleted_Total": _rate("Rows deleted", "rows"),
    _PS + "TransactionsCommitted_Total": _rate("Transactions committed", "transactions"),
    _PS + "TransactionsRolledBack_Total": _rate("Transactions rolled back", "transactions"),
    _PS + "Deadlocks_Total": _rate("Deadlocks detected", "deadlocks"),
    _PS + "ActiveConnections": _gauge("Connections, by backend state", "connections"),
    _PS + "CacheHitRatio": _gauge("Block reads served from the buffer cache", "%"),
    _PS + "DatabaseSizeBytes": _gauge("On-disk size, per database", "bytes"),
}

# Without the provisioned cores, CPU seconds per second is the number of cores kept busy.
CPU_WITHOUT_CORES = MetricInfo("CPU busy, all modes but idle", "cores busy", counter=True)


def info(metric: str, counter: bool) -> MetricInfo:
    """The catalogue's entry, or one made from the name (``counter``: drawn as a rate)."""
    known = CATALOGUE.get(metric)
    if known is not None:
        return known
    return MetricInfo(metric, "per second" if counter else "", counter)


def byte_scale(largest: float, per_second: bool = False) -> tuple[float, str]:
    """(divisor, unit) that shows byte values up to ``largest`` as 1–1024 of a binary unit."""
    step = 0
    while step < len(_BYTE_UNITS) - 1 and abs(largest) >= 1024.0 ** (step + 1):
        step += 1
    return 1024.0**step, _BYTE_UNITS[step] + ("/s" if per_second else "")
