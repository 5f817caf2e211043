"""API results -> tidy pandas DataFrames.

Every function takes what the client returns (pydantic models) or the plain
API dicts/lists (camelCase), and gives a frame with a stable column order and
real dtypes. ``password`` and ``connectionString`` never reach a frame: they are
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

Each column takes its type from the field's type in the spec's response schema
(:func:`pgcloud_nb.contract.property_kinds`), not from what a server happens to
send: ``integer`` is ``Int64`` (``Float64`` when a value is past 64 bits or not
whole, so nothing overflows), ``number`` is ``Float64``, ``boolean`` is
``boolean``, ``date-time`` is a UTC timestamp in µs, ``string`` is text, or a
categorical for labels and the spec's enums (values the enum lacks are kept).
Numbers sent as strings (``"12"``) are read as numbers. A value that cannot be
read as its type (text in a number column, an impossible date) becomes NA: no
value makes a frame raise (:mod:`pgcloud_nb.columns` holds the rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cache
from typing import Any

import pandas as pd
from pydantic import SecretStr

from . import columns
from .contract import enum_values, property_kinds
from .pgparams import KINDS, PG_DEFAULTS, needs_restart, typed_value
from .sizes import size_spec

__all__ = [
    "backups_frame",
    "config_frame",
    "executions_frame",
    "logs_frame",
    "metrics_frame",
    "services_frame",
    "slow_queries_frame",
]

_SECRET = re.compile(r"(?i)password|secret|connection_?string|token|credential")
# PostgreSQL's severities, mildest first; the frame's categorical is ordered on them
_SEVERITIES = ("DEBUG", "LOG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL", "PANIC")

# (column, kind); kind is one of: str, cat, cat:<enum component>, int, float, bool, time, sev
Schema = tuple[tuple[str, str], ...]


def _layout(
    component: str,
    first: str,
    last: str = "",
    *,
    labels: str = "",
    kinds: str = "",
    rest_optional: bool = False,
) -> tuple[Schema, Schema]:
    """The columns of a frame over spec schema ``component``, each typed from the spec.

    Returns the columns every frame has, and the spec's fields that become
    columns only when a record carries them (with ``rest_optional``, every field
    not in ``first``). ``first`` and ``last`` order the columns; the schema's
    other scalar fields come between them, in the spec's order. ``labels`` are
    strings shown as categoricals; ``kinds`` overrides kinds (``severity:sev``).
    """
    spec_kinds = property_kinds(component)
    head, tail, cats = first.split(), last.split(), set(labels.split())
    override = dict(pair.split(":", 1) for pair in kinds.split())
    middle = [c for c in spec_kinds if c not in head and c not in tail]
    out = []
    for column in (*head, *middle, *tail):
        kind = spec_kinds[column]  # a KeyError here: the frame names a field the spec lacks
        if _SECRET.search(column) or kind in ("array", "object") or "|" in kind:
            continue
        out.append((column, override.get(column) or _frame_kind(kind, column in cats)))
    split = len(head) if rest_optional else len(out)
    return tuple(out[:split]), tuple(out[split:])


def _frame_kind(spec_kind: str, label: bool) -> str:
    if spec_kind.startswith("enum:"):
        return "cat:" + spec_kind.removeprefix("enum:")
    kind = {"integer": "int", "number": "float", "boolean": "bool", "date-time": "time"}
    return kind.get(spec_kind) or ("cat" if label else "str")


@cache
def _schemas() -> dict[str, tuple[Schema, Schema]]:
    """Per frame: the columns always there, and the spec's other fields (when present)."""
    # Built on first use, so that importing the package does not read the spec.
    return {
        "service": _layout(
            "PostgresService",
            "id name state provider region postgresVersion size haType isPrimary createdAt "
            "storageSize",
            labels="region",
            rest_optional=True,
        ),
        "slow": _layout(
            "PostgresSlowQueryPattern",
            "queryId dbName dbUser dbOperation app",
            "queryText",
            labels="dbName dbUser dbOperation app",
        ),
        "exec": _layout(
            "PostgresQueryExecution",
            "timestamp queryId dbName dbUser dbOperation app serverRole pid",
            "queryText",
            labels="dbName dbUser dbOperation app serverRole errSqlstate",
        ),
        "logs": _layout("PostgresLogEntry", "timestamp severity body", kinds="severity:sev"),
    }


# --- services ------------------------------------------------------------------------------


def services_frame(services: Iterable[Any]) -> pd.DataFrame:
    """One row per service: API fields, size figures, extra fields, then ``tag.<key>``.

    ``vcpus``, ``memoryGib`` and ``storageGib`` come from the size table of
    :mod:`pgcloud_nb.sizes` (the API publishes none); ``storageSize`` is what
    the API itself reports, when it does. A field of the API's own with one of
    these names wins over the table.
    """
    records = [_record(s) for s in services]
    tags = [_tags(r.pop("tags", None)) for r in records]
    fixed, optional = _schemas()["service"]
    frame = _frame(records, fixed, optional)
    specs = [size_spec(s) if isinstance(s, str) else None for s in frame["size"]]
    derived = {
        "vcpus": columns.ints([s.vcpus if s else None for s in specs]),
        "memoryGib": columns.floats([s.memory_gib if s else None for s in specs]),
        "storageGib": columns.ints([s.storage_gib if s else None for s in specs]),
    }
    for offset, (name, values) in enumerate(derived.items()):
        if name not in frame:
            frame.insert(len(fixed) + offset, name, values)
    keys = sorted({k for t in tags for k in t})
    if not keys:
        return frame
    # all tag columns at once: one column at a time fragments a frame of many tag keys
    tagged = {f"tag.{k}": columns.categorical([t.get(k) for t in tags], []) for k in keys}
    frame = frame.drop(columns=[c for c in tagged if c in frame])
    return pd.concat([frame, pd.DataFrame(tagged, index=frame.index)], axis=1)


def _tags(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return {columns.text(k) or "": v for k, v in raw.items()}
    if not isinstance(raw, list | tuple):
        return {}
    return {
        columns.text(t["key"]) or "": t.get("value")
        for t in raw
        if isinstance(t, Mapping) and t.get("key") is not None
    }


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
    message = message if isinstance(message, str) else None
    named = set()
    if message and (m := _RESTART_MESSAGE.search(message)):
        named = {k.strip() for k in m[1].split(",") if k.strip()}
    rows: list[tuple[str, str, Any, bool]] = []
    pg = {str(k): v for k, v in _mapping(data.get("pgConfig")).items()}
    rows += [("pgConfig", k, v, True) for k, v in sorted(pg.items())]
    if defaults:
        rows += [("pgConfig", k, v, False) for k, v in PG_DEFAULTS.items() if k not in pg]
    bouncer = {str(k): v for k, v in _mapping(data.get("pgBouncerConfig")).items()}
    rows += [("pgBouncerConfig", k, v, True) for k, v in sorted(bouncer.items())]
    # a null value (an API that writes unset as null) is no "None" text
    typed = [
        typed_value(section, key, raw) if raw is not None else (None, "text")
        for section, key, raw, _ in rows
    ]
    restart = [key in named or needs_restart(section, key) for section, key, _, _ in rows]
    frame = pd.DataFrame(
        {
            "section": pd.Categorical([r[0] for r in rows], ["pgConfig", "pgBouncerConfig"]),
            "key": columns.texts([r[1] for r in rows]),
            "value": columns.objects([t[0] for t in typed]),
            "raw": columns.texts([r[2] for r in rows]),
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

    ``timestamp`` is the start of the bucket (Unix seconds in the API; NaT when
    a timestamp is past what a µs timestamp holds). ``value`` is float64.
    Descriptions are in ``attrs["descriptions"]`` (key -> text).
    """
    data = _record(metrics)
    rows: dict[str, list[Any]] = {c: [] for c in ("timestamp", "key", "name", "unit", "label")}
    values: list[Any] = []
    descriptions = {}
    for metric in _dicts(data.get("metrics")):
        descriptions[columns.text(metric.get("key"))] = (
            columns.text(metric.get("description")) or ""
        )
        for series in _dicts(metric.get("series")):
            points = _dicts(series.get("dataPoints"))
            rows["timestamp"] += [p.get("timestamp") for p in points]
            values += [p.get("value") for p in points]
            for col in ("key", "name", "unit"):
                rows[col] += [metric.get(col)] * len(points)
            rows["label"] += [series.get("label")] * len(points)
    seconds = [columns.number(t) for t in rows["timestamp"]]
    frame = pd.DataFrame(
        {
            "timestamp": columns.from_epoch_us(
                [None if s is None else columns.scaled(s, 1_000_000) for s in seconds]
            ),
            **{c: columns.categorical(rows[c], []) for c in ("key", "name", "unit", "label")},
            "value": columns.floats(values, nullable=False),
        }
    )
    frame.attrs["descriptions"] = descriptions
    return frame


def slow_queries_frame(patterns: Iterable[Any]) -> pd.DataFrame:
    """One row per slow query pattern; durations in µs as integers, ``queryId`` as text."""
    return _frame([_record(p) for p in patterns], *_schemas()["slow"])


def executions_frame(detail: Any) -> pd.DataFrame:
    """The ``recentExecutions`` of one pattern's detail (or a list of executions).

    ``pid`` is text, as the spec types it (a process id on PostgreSQL, but the
    API promises no more than a string).
    """
    data = detail if isinstance(detail, list | tuple) else _record(detail).get("recentExecutions")
    return _frame(_dicts(data), *_schemas()["exec"])


def logs_frame(entries: Iterable[Any]) -> pd.DataFrame:
    """``timestamp, severity, body``; ``severity`` is ordered, so ``>= "WARNING"`` works."""
    return _frame([_record(e) for e in entries], *_schemas()["logs"])


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
        columns.text(k) or "": (v.value if isinstance(v, Enum) else v)
        for k, v in obj.items()
        if not (isinstance(v, SecretStr) or _SECRET.search(str(k)))
    }


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The API objects of a list field (a missing or null list is empty)."""
    return [_record(v) for v in value] if isinstance(value, list | tuple) else []


def _frame(records: list[dict[str, Any]], schema: Schema, optional: Schema = ()) -> pd.DataFrame:
    """Columns of ``schema`` in order and typed, then any extra field, sorted by name.

    An extra field the spec knows (``optional``) is typed as the spec says; one it
    does not is text when every value is text, else kept as Python objects.
    """
    known = {c for c, _ in schema}
    spec_kinds = dict(optional)
    # extra fields the API adds; a field that is None everywhere (an unset model field) is left out
    extra = sorted({k for r in records for k, v in r.items() if v is not None} - known)
    cols = {c: _column([r.get(c) for r in records], kind) for c, kind in schema}
    for c in extra:
        values = [r.get(c) for r in records]
        if c in spec_kinds:
            cols[c] = _column(values, spec_kinds[c])
        elif all(isinstance(v, str | None) for v in values):
            cols[c] = columns.texts(values)
        else:
            cols[c] = columns.objects(values)
    return pd.DataFrame(cols, index=pd.RangeIndex(len(records)))


def _column(values: list[Any], kind: str) -> Any:
    if kind == "str":
        return columns.texts(values)
    if kind == "int":
        return columns.ints(values)
    if kind == "float":
        return columns.floats(values)
    if kind == "bool":
        return columns.bools(values)
    if kind == "time":
        return columns.times(values)
    if kind == "sev":
        return columns.categorical(values, list(_SEVERITIES), ordered=True)
    return columns.categorical(values, enum_values(kind.split(":", 1)[1]) if ":" in kind else [])
