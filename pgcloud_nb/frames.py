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
``backups_frame``        one per base backup, newest first           backups
=======================  ==========================================  ===========
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import pandas as pd
from pydantic import SecretStr

from .pgparams import KINDS, PG_DEFAULTS, needs_restart, typed_value
from .sizes import size_spec
from .spec import enum_values

__all__ = [
    "backups_frame",
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

_RESTART_MESSAGE = re.compile(r"restart[^:]*:\s*([^.]*)")


def config_frame(config: Any, *, message: str | None = None, defaults: bool = True) -> pd.DataFrame:
    """One row per parameter: ``section, key, value, raw, kind, needs_restart, source``.

    ``value`` is typed by :func:`~pgcloud_nb.pgparams.typed_value`: bytes (int)
    for memory, ``Timedelta`` for durations, int or float for numbers, str for
    enums; ``raw`` is the API's text. ``-1`` and ``0`` keep their PostgreSQL
    meaning (unlimited / off) as plain ints. ``needs_restart`` is True for the
    keys of :data:`~pgcloud_nb.pgparams.RESTART_PARAMETERS` and for any key
    named in the API's restart ``message`` (taken from ``config`` when it is a
    write response). With ``defaults``, the API keys the user has not set are
    added with PostgreSQL's default (:data:`~pgcloud_nb.pgparams.PG_DEFAULTS`)
    and ``source="default"``.
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
    typed = [typed_value(section, key, raw) for section, key, raw, _ in rows]
    restart = [key in named or needs_restart(section, key) for section, key, _, _ in rows]
    frame = pd.DataFrame(
        {
            "section": pd.Categorical([r[0] for r in rows], ["pgConfig", "pgBouncerConfig"]),
            "key": pd.array([r[1] for r in rows], dtype="str"),
            "value": pd.array([t[0] for t in typed], dtype=object),
            "raw": pd.array([str(r[2]) for r in rows], dtype="str"),
            "kind": pd.Categorical([t[1] for t in typed], KINDS),
            "needs_restart": pd.array(restart, dtype=bool),
            "source": pd.Categorical(
                ["user" if r[3] else "default" for r in rows], ["user", "default"]
            ),
        }
    )
    frame.attrs["message"] = message
    return frame


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


# The backups list is newer than the spec file (docs/api-behaviour.md, "Backups list"), so
# its columns are written out: the live API's three, then the two the sandbox adds.
_BACKUPS: Schema = (
    ("key", "str"),
    ("status", "cat"),
    ("lastModified", "time"),
    ("startedAt", "time"),
    ("sizeInBytes", "int"),
)


def backups_frame(backups: Iterable[Any]) -> pd.DataFrame:
    """One row per base backup, in the order given (the API lists the newest first)."""
    return _frame([_record(b) for b in backups], _BACKUPS)


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
