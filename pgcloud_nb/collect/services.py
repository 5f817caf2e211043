"""The rows a service list adds to the ``services`` table (a ReplacingMergeTree by version).

Only what changed gets a row: a new service, a rename or any other change of size,
region, state, major or tags, and the deletion of a known service that the list no
longer holds. Only the fields below are read, never a password or a connection
string. A service is a mapping with the API's field names, or an object with the
client's snake_case attributes (``pgcloud_nb.models``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "service_rows"]

COLUMNS = [
    "service_id",
    "name",
    "size",
    "region",
    "state",
    "postgres_version",
    "tags",
    "first_seen",
    "deleted",
    "version",
]
_COMPARED = ("name", "size", "region", "state", "postgres_version", "tags")


def _get(svc: Any, camel: str, snake: str) -> Any:
    if isinstance(svc, Mapping):
        return svc.get(camel, svc.get(snake))
    return getattr(svc, snake, None)


def _tags(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    out = {}
    for tag in raw:
        if isinstance(tag, tuple):  # a Map column read back: (key, value) pairs
            out[str(tag[0])] = str(tag[1])
            continue
        key = tag.get("key") if isinstance(tag, Mapping) else getattr(tag, "key", None)
        value = tag.get("value") if isinstance(tag, Mapping) else getattr(tag, "value", None)
        if key is not None:
            out[str(key)] = "" if value is None else str(value)
    return out


def _text(value: Any) -> str:
    # enums (state, size) keep their wire value
    value = getattr(value, "value", value)
    return "" if value is None else str(value)


def service_rows(
    services: Iterable[Any], current: pd.DataFrame, *, at: datetime
) -> tuple[list[str], list[list[Any]]] | None:
    """(column names, rows) to insert for the list taken at ``at``; None if nothing changed.

    ``current`` is :meth:`Store.services` (the newest row of each service not deleted).
    """
    stamp = pd.Timestamp(at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    when = stamp.to_pydatetime()
    known = {str(r["service_id"]): r for r in current.to_dict("records")}
    rows: list[list[Any]] = []
    listed: set[str] = set()
    for svc in services:
        sid = _text(_get(svc, "id", "id"))
        if not sid:
            continue
        listed.add(sid)
        fields = {
            "name": _text(_get(svc, "name", "name")),
            "size": _text(_get(svc, "size", "size")),
            "region": _text(_get(svc, "region", "region")),
            "state": _text(_get(svc, "state", "state")),
            "postgres_version": _text(_get(svc, "postgresVersion", "postgres_version")),
            "tags": _tags(_get(svc, "tags", "tags")),
        }
        old = known.get(sid)
        if old is not None and all(_same(old[k], fields[k]) for k in _COMPARED):
            continue
        first = old["first_seen"].to_pydatetime() if old is not None else when
        rows.append([sid, *(fields[k] for k in _COMPARED), first, False, when])
    for sid, old in known.items():
        if sid not in listed:
            kept = [old[k] if k != "tags" else _tags(old[k]) for k in _COMPARED]
            rows.append([sid, *kept, old["first_seen"].to_pydatetime(), True, when])
    return (COLUMNS, rows) if rows else None


def _same(stored: Any, listed: Any) -> bool:
    if isinstance(listed, dict):
        return _tags(stored) == listed
    return str(stored) == listed
