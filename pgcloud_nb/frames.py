"""API results -> tidy pandas DataFrames.

Every function takes what the client returns (pydantic models) or the plain
API dicts/lists (camelCase), and gives a frame with a stable column order and
real dtypes: tz-aware UTC timestamps, categoricals for labels and enums,
nullable integers for counts, numbers as numbers even when the API sends
strings. ``password`` and ``connectionString`` never reach a frame: they are
dropped before anything else, together with any field holding a ``SecretStr``.

=======================  ==========================================  ===========
function                 rows                                        source
=======================  ==========================================  ===========
``services_frame``       one per service; ``tag.<key>`` columns       list / get
``config_frame``         one per parameter, user-set or default       config
``metrics_frame``        one per data point of ``/metrics`` (JSON)   metrics
``slow_queries_frame``   one per slow query pattern                  slowQueryPatterns
``executions_frame``     one per recent execution of a pattern       slowQueryPatterns/{id}
``logs_frame``           one per log entry                           logs
=======================  ==========================================  ===========
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import pandas as pd
from pydantic import SecretStr

from .sizes import size_spec
from .spec import enum_values

__all__ = [
    "PG_DEFAULTS",
    "RESTART_PARAMETERS",
    "config_frame",
    "executions_frame",
    "logs_frame",
    "metrics_frame",
    "services_frame",
    "slow_queries_frame",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SECRET = re.compile(r"(?i)password|secret|connection_?string|token|credential")
_TS = pd.DatetimeTZDtype("us", "UTC")  # pandas 3's resolution; same as the metrics frames

# (column, kind); kind is one of: str, cat, int, float, bool, time
Schema = tuple[tuple[str, str], ...]

_SERVICE: Schema = (
    ("id", "str"),
    ("name", "str"),
    ("state", "cat:pgStateProperty"),
    ("provider", "cat:pgProvider"),
    ("region", "cat"),
    ("postgresVersion", "cat:pgVersion"),
    ("size", "cat:pgSize"),
    ("haType", "cat:pgHaType"),
    ("isPrimary", "bool"),
    ("createdAt", "time"),
    ("storageSize", "int"),
)
_SIZE_COLUMNS = ("vcpus", "memoryGib", "storageGib")

_SLOW_INTS = _words(
    "callCount errorCount totalDurationUs avgDurationUs maxDurationUs p50DurationUs "
    "p95DurationUs p99DurationUs totalRows totalSharedBlksRead totalSharedBlksHit "
    "totalCpuTimeUs totalWalBytes"
)
_SLOW: Schema = (
    ("queryId", "str"),
    ("dbName", "cat"),
    ("dbUser", "cat"),
    ("dbOperation", "cat"),
    ("app", "cat"),
    *((c, "int") for c in _SLOW_INTS),
    ("queryText", "str"),
)
_EXEC_INTS = _words(
    "durationUs rows sharedBlksHit sharedBlksRead sharedBlksWritten sharedBlksDirtied "
    "sharedBlkReadTimeUs sharedBlkWriteTimeUs localBlksHit localBlksRead localBlksWritten "
    "localBlksDirtied tempBlksRead tempBlksWritten tempBlkReadTimeUs tempBlkWriteTimeUs "
    "walRecords walBytes walFpi cpuUserTimeUs cpuSysTimeUs jitFunctions "
    "jitGenerationTimeUs jitInliningTimeUs jitOptimizationTimeUs jitEmissionTimeUs "
    "jitDeformTimeUs parallelWorkersPlanned parallelWorkersLaunched"
)
_EXEC: Schema = (
    ("timestamp", "time"),
    ("queryId", "str"),
    ("dbName", "cat"),
    ("dbUser", "cat"),
    ("dbOperation", "cat"),
    ("app", "cat"),
    ("serverRole", "cat"),
    ("pid", "int"),  # a string in the spec; it is a process id
    *((c, "int") for c in _EXEC_INTS),
    ("errSqlstate", "cat"),
    ("errElevel", "int"),
    ("errMessage", "str"),
    ("traceId", "str"),
    ("spanId", "str"),
    ("queryText", "str"),
)
# PostgreSQL's severities, mildest first; the frame's categorical is ordered on them
_SEVERITIES = ("DEBUG", "LOG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL", "PANIC")
_LOGS: Schema = (("timestamp", "time"), ("severity", "sev"), ("body", "str"))


# --- services ------------------------------------------------------------------------------


def services_frame(services: Iterable[Any]) -> pd.DataFrame:
    """One row per service: API fields, size figures, extra fields, then ``tag.<key>``.

    ``vcpus``, ``memoryGib`` and ``storageGib`` come from the size table of
    :mod:`pgcloud_nb.sizes` (the API publishes none); ``storageSize`` is what
    the API itself reports, when it does.
    """
    records = [_record(s) for s in services]
    tags = [_tags(r.pop("tags", None)) for r in records]
    frame = _frame(records, _SERVICE)
    specs = [size_spec(s) if isinstance(s, str) else None for s in frame["size"]]
    frame.insert(
        len(_SERVICE), "vcpus", pd.Series([s.vcpus if s else None for s in specs], dtype="Int64")
    )
    frame.insert(
        len(_SERVICE) + 1,
        "memoryGib",
        pd.Series([s.memory_gib if s else None for s in specs], dtype="Float64"),
    )
    frame.insert(
        len(_SERVICE) + 2,
        "storageGib",
        pd.Series([s.storage_gib if s else None for s in specs], dtype="Int64"),
    )
    keys = sorted({k for t in tags for k in t})
    for key in keys:
        frame[f"tag.{key}"] = pd.Categorical([t.get(key) for t in tags])
    return frame


def _tags(raw: Any) -> dict[str, str | None]:
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    return {str(t["key"]): t.get("value") for t in raw or () if isinstance(t, Mapping)}


# --- config ----------------------------------------------------------------------------------

# Parameters that only take effect after a server restart: PostgreSQL's
# "postmaster" context (pg_settings.context), from its documentation. Of the 31
# keys the API accepts, max_connections and max_worker_processes are always
# here, autovacuum_max_workers up to PostgreSQL 17 (18 made it reloadable). The
# WAL keys the API accepts (wal_keep_size, min/max_wal_size, wal_compression,
# wal_sender_timeout, max_slot_wal_keep_size) are reloadable; the postmaster
# WAL settings are listed for configs that carry them.
RESTART_PARAMETERS: frozenset[str] = frozenset(
    _words(
        "max_connections max_worker_processes autovacuum_max_workers "
        "superuser_reserved_connections reserved_connections shared_buffers huge_pages "
        "huge_page_size max_prepared_transactions max_locks_per_transaction "
        "max_pred_locks_per_transaction max_files_per_process shared_preload_libraries "
        "wal_level wal_buffers wal_log_hints max_wal_senders max_replication_slots "
        "track_commit_timestamp track_activity_query_size listen_addresses port ssl_library "
        "archive_mode hot_standby shared_memory_type dynamic_shared_memory_type "
        "max_notify_queue_pages recovery_target_timeline"
    )
)
# PgBouncer settings that a reload does not change (its docs: "Can be changed at
# runtime: no" or a restart needed for the new value).
_BOUNCER_RESTART = frozenset(
    _words(
        "listen_addr listen_port unix_socket_dir unix_socket_mode unix_socket_group user "
        "pidfile so_reuseport peer_id auth_type"
    )
)

# PostgreSQL 17's own defaults for the 31 keys the API accepts (API-NOTES §3.1).
# The managed service may tune some per size (e.g. max_connections) [U]: a
# ``source="default"`` row is PostgreSQL's default, not a reading of the server.
PG_DEFAULTS: Mapping[str, str] = {
    "max_connections": "100",
    "default_transaction_isolation": "read committed",
    "ssl_min_protocol_version": "TLSv1.2",
    "maintenance_work_mem": "64MB",
    "work_mem": "4MB",
    "effective_cache_size": "4GB",
    "random_page_cost": "4",
    "effective_io_concurrency": "1",
    "max_worker_processes": "8",
    "max_parallel_workers": "8",
    "max_parallel_workers_per_gather": "2",
    "max_parallel_maintenance_workers": "2",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "transaction_timeout": "0",
    "wal_sender_timeout": "60s",
    "wal_keep_size": "0",
    "min_wal_size": "80MB",
    "max_wal_size": "1GB",
    "max_slot_wal_keep_size": "-1",
    "wal_compression": "off",
    "autovacuum_max_workers": "3",
    "autovacuum_naptime": "1min",
    "autovacuum_work_mem": "-1",
    "autovacuum_vacuum_scale_factor": "0.2",
    "autovacuum_analyze_scale_factor": "0.1",
    "autovacuum_vacuum_insert_scale_factor": "0.2",
    "autovacuum_vacuum_cost_limit": "-1",
    "autovacuum_vacuum_cost_delay": "2ms",
}
# The unit of a bare number, per parameter (pg_settings.unit); memory -> bytes, time -> Timedelta
_MEMORY_UNIT = {
    "maintenance_work_mem": 1024, "work_mem": 1024, "autovacuum_work_mem": 1024,
    "effective_cache_size": 8192,
    "wal_keep_size": 2**20, "min_wal_size": 2**20, "max_wal_size": 2**20,
    "max_slot_wal_keep_size": 2**20,
}  # fmt: skip
_TIME_UNIT: dict[str, Any] = {
    "statement_timeout": "ms", "lock_timeout": "ms", "idle_session_timeout": "ms",
    "idle_in_transaction_session_timeout": "ms", "transaction_timeout": "ms",
    "wal_sender_timeout": "ms", "autovacuum_vacuum_cost_delay": "ms", "autovacuum_naptime": "s",
}  # fmt: skip
_MEM_SUFFIX = {"B": 1, "kB": 1024, "MB": 2**20, "GB": 2**30, "TB": 2**40}
_TIME_SUFFIX: dict[str, Any] = {"us": "us", "ms": "ms", "s": "s", "min": "min", "h": "h", "d": "D"}
_QUANTITY = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_RESTART_MESSAGE = re.compile(r"restart[^:]*:\s*([^.]*)")


def config_frame(config: Any, *, message: str | None = None, defaults: bool = True) -> pd.DataFrame:
    """One row per parameter: ``section, key, value, raw, kind, needs_restart, source``.

    ``value`` is typed: bytes (int) for memory, ``Timedelta`` for durations, int
    or float for numbers, str for enums; ``raw`` is the API's text. ``-1`` and
    ``0`` keep their PostgreSQL meaning (unlimited / off) as plain ints.
    ``needs_restart`` is True for :data:`RESTART_PARAMETERS` and for any key
    named in the API's restart ``message`` (taken from ``config`` when it is a
    write response). With ``defaults``, the API keys the user has not set are
    added with PostgreSQL's default (:data:`PG_DEFAULTS`) and ``source="default"``.
    """
    data = _record(config)
    message = message if message is not None else data.get("message")
    named = set()
    if message and (m := _RESTART_MESSAGE.search(message)):
        named = {k.strip() for k in m[1].split(",") if k.strip()}
    rows: list[tuple[str, str, str, bool]] = []
    pg = {str(k): v for k, v in (data.get("pgConfig") or {}).items()}
    rows += [("pgConfig", k, v, True) for k, v in sorted(pg.items())]
    if defaults:
        rows += [("pgConfig", k, v, False) for k, v in PG_DEFAULTS.items() if k not in pg]
    bouncer = data.get("pgBouncerConfig") or {}
    rows += [("pgBouncerConfig", str(k), v, True) for k, v in sorted(bouncer.items())]
    typed = [_typed(section, key, raw) for section, key, raw, _ in rows]
    restart = [
        key in named or key in (RESTART_PARAMETERS if section == "pgConfig" else _BOUNCER_RESTART)
        for section, key, _, _ in rows
    ]
    frame = pd.DataFrame(
        {
            "section": pd.Categorical([r[0] for r in rows], ["pgConfig", "pgBouncerConfig"]),
            "key": pd.array([r[1] for r in rows], dtype="str"),
            "value": pd.array([t[0] for t in typed], dtype=object),
            "raw": pd.array([str(r[2]) for r in rows], dtype="str"),
            "kind": pd.Categorical(
                [t[1] for t in typed], ["memory", "duration", "integer", "real", "bool", "text"]
            ),
            "needs_restart": pd.array(restart, dtype=bool),
            "source": pd.Categorical(
                ["user" if r[3] else "default" for r in rows], ["user", "default"]
            ),
        }
    )
    frame.attrs["message"] = message
    return frame


def _typed(section: str, key: str, raw: Any) -> tuple[Any, str]:
    """A parameter's value as a Python object, and its kind."""
    if isinstance(raw, bool):
        return raw, "bool"
    if isinstance(raw, int | float):
        raw = repr(raw)
    text = str(raw)
    m = _QUANTITY.fullmatch(text)
    if m is None:
        low = text.strip().lower()
        if low in ("on", "off", "true", "false") and section == "pgBouncerConfig":
            return low in ("on", "true"), "bool"
        return text, "text"
    number, suffix = m[1], m[2]
    num: int | float = float(number) if "." in number else int(number)
    if key in _MEMORY_UNIT or suffix in _MEM_SUFFIX:
        if num < 0 and not suffix:
            return num, "memory"  # -1: "use the other setting" / unlimited
        scale = _MEM_SUFFIX.get(suffix) if suffix else _MEMORY_UNIT.get(key, 1)
        return (int(num * scale), "memory") if scale else (text, "text")
    if key in _TIME_UNIT or suffix in _TIME_SUFFIX:
        if num < 0 and not suffix:
            return num, "duration"
        unit = _TIME_SUFFIX.get(suffix) if suffix else _TIME_UNIT.get(key, "s")
        return (pd.Timedelta(num, unit=unit), "duration") if unit else (text, "text")
    if suffix:
        return text, "text"
    return num, "integer" if isinstance(num, int) else "real"


# --- metrics JSON, slow queries, executions, logs --------------------------------------------


def metrics_frame(metrics: Any) -> pd.DataFrame:
    """``/metrics`` (JSON) as one long frame: ``timestamp, key, name, unit, label, value``.

    ``timestamp`` is the start of the bucket. Descriptions are in
    ``attrs["descriptions"]`` (key -> text).
    """
    data = _record(metrics)
    rows: dict[str, list[Any]] = {c: [] for c in ("timestamp", "key", "name", "unit", "label")}
    values: list[float] = []
    descriptions = {}
    for metric in data.get("metrics") or ():
        descriptions[metric["key"]] = metric.get("description", "")
        for series in metric.get("series") or ():
            points = series.get("dataPoints") or ()
            rows["timestamp"] += [p["timestamp"] for p in points]
            values += [p["value"] for p in points]
            for col in ("key", "name", "unit"):
                rows[col] += [metric[col]] * len(points)
            rows["label"] += [series["label"]] * len(points)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                pd.Series(rows["timestamp"], dtype="int64"), unit="s", utc=True
            ).astype(_TS),
            **{c: pd.Categorical(rows[c]) for c in ("key", "name", "unit", "label")},
            "value": pd.to_numeric(pd.Series(values, dtype=object)).astype("float64"),
        }
    )
    frame.attrs["descriptions"] = descriptions
    return frame


def slow_queries_frame(patterns: Iterable[Any]) -> pd.DataFrame:
    """One row per slow query pattern; durations in µs as integers, ``queryId`` as text."""
    return _frame([_record(p) for p in patterns], _SLOW)


def executions_frame(detail: Any) -> pd.DataFrame:
    """The ``recentExecutions`` of one pattern's detail (or a list of executions)."""
    data = (
        detail
        if isinstance(detail, list | tuple)
        else _record(detail).get("recentExecutions") or []
    )
    return _frame([_record(e) for e in data], _EXEC)


def logs_frame(entries: Iterable[Any]) -> pd.DataFrame:
    """``timestamp, severity, body``; ``severity`` is ordered, so ``>= "WARNING"`` works."""
    return _frame([_record(e) for e in entries], _LOGS)


# --- shared ------------------------------------------------------------------------------


def _record(obj: Any) -> dict[str, Any]:
    """A model or an API dict, camelCase, without any secret."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(by_alias=True)
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected an API object or dict, got {type(obj).__name__}")
    return {
        k: (v.value if isinstance(v, Enum) else v)
        for k, v in obj.items()
        if not (isinstance(v, SecretStr) or _SECRET.search(k))
    }


def _frame(records: list[dict[str, Any]], schema: Schema) -> pd.DataFrame:
    """Columns of ``schema`` in order and typed, then any extra field, sorted by name."""
    known = {c for c, _ in schema}
    # extra fields the API adds; a field that is None everywhere (an unset model field) is left out
    extra = sorted({k for r in records for k, v in r.items() if v is not None} - known)
    cols = {c: _column([r.get(c) for r in records], kind) for c, kind in schema}
    for c in extra:
        values = [r.get(c) for r in records]
        if all(isinstance(v, str | None) for v in values):
            cols[c] = pd.array(values, dtype="str")
        else:
            cols[c] = pd.array(values, dtype=object)
    return pd.DataFrame(cols, index=pd.RangeIndex(len(records)))


def _column(values: list[Any], kind: str) -> Any:
    if kind == "str":
        return pd.array([None if v is None else str(v) for v in values], dtype="str")
    if kind == "int":
        return pd.to_numeric(pd.Series(values, dtype=object)).astype("Int64").array
    if kind == "float":
        return pd.to_numeric(pd.Series(values, dtype=object)).astype("Float64").array
    if kind == "bool":
        return pd.array(values, dtype="boolean")
    if kind == "time":
        return (
            pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
            .astype(_TS)
            .array
        )
    if kind == "sev":
        extra = sorted({v for v in values if v is not None} - set(_SEVERITIES))
        return pd.Categorical(values, [*_SEVERITIES, *extra], ordered=True)
    texts = [None if v is None else str(v) for v in values]
    known = enum_values(kind.split(":", 1)[1]) if ":" in kind else []
    seen = sorted({v for v in texts if v is not None} - set(known))
    return pd.Categorical(texts, [*known, *seen])
