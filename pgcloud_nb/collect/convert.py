"""Long frames to Arrow tables for ``samples``, and query results back to long frames.

The long frame is :func:`pgcloud_nb.prometheus.parse_prometheus`'s: ``timestamp,
service_id, service_name, metric, <label columns>, value`` with categoricals. Arrow
dictionary arrays carry the categoricals' codes straight into LowCardinality
columns, so an insert never builds a Python string per sample. ClickHouse has no
NULL in these columns: a missing label is the empty string, and the way back turns
it into a missing value again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..prometheus import TS_DTYPE, label_columns
from .schema import LABELS

__all__ = ["long_frame", "samples_table"]

_BASE = ("timestamp", "service_id", "service_name", "metric", "value")


def _strings(col: pd.Series) -> pa.Array:
    """A string column as an Arrow dictionary array, missing values as ''."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
        codes = col.cat.codes.to_numpy()
        if (codes < 0).any():
            codes = np.where(codes < 0, len(cats), codes)
            cats.append("")
        return pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32)), pa.array(cats, pa.string())
        )
    return pa.array(col.astype(object).where(col.notna(), "").astype(str)).dictionary_encode()


def samples_table(frame: pd.DataFrame, *, backfilled: bool) -> pa.Table:
    """The columns of ``samples`` for every row of a long frame.

    Labels outside the data sheet's set go to the ``extra`` map; the column is left
    out (its default is the empty map) when there are none, the normal case.
    """
    n = len(frame)
    ts = pd.DatetimeIndex(frame["timestamp"])
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    cols: dict[str, Any] = {
        "ts": pa.array(ts.as_unit("us"), pa.timestamp("us", tz="UTC")),
        "metric": _strings(frame["metric"]),
        "service_id": _strings(frame["service_id"]),
        "service_name": _strings(frame["service_name"]),
    }
    for label in LABELS:
        cols[label] = _strings(frame[label] if label in frame else pd.Series([""] * n))
    extra = [c for c in frame.columns if c not in (*_BASE, *LABELS)]
    if extra:
        lists = [
            [(k, str(v)) for k, v in zip(extra, row, strict=True) if pd.notna(v)]
            for row in zip(*(frame[c] for c in extra), strict=True)
        ]
        cols["extra"] = pa.array(lists, pa.map_(pa.string(), pa.string()))
    cols["value"] = pa.array(frame["value"].to_numpy(np.float64))
    cols["backfilled"] = pa.array(np.full(n, backfilled))
    return pa.table(cols)


def long_frame(table: pa.Table, types: dict[str, str], org_id: str | None) -> pd.DataFrame:
    """A ``samples`` query result (ts, metric, service_id, service_name, labels, extra,
    value) as the long frame History and :mod:`pgcloud_nb.metrics` take."""
    extra: dict[str, list[Any]] = {}
    if "extra" in table.column_names:
        maps = table.column("extra")
        table = table.drop_columns(["extra"])
        # Only rows with extra labels become Python objects (normally none of them).
        lengths = np.concatenate(
            [np.diff(chunk.offsets.to_numpy()) for chunk in maps.chunks] or [np.empty(0)]
        )
        for i in np.flatnonzero(lengths > 0):
            for k, v in maps[int(i)].as_py():
                extra.setdefault(k, [None] * table.num_rows)[int(i)] = v
    raw = table.to_pandas()
    n = len(raw)
    cols: dict[str, Any] = {
        "timestamp": pd.DatetimeIndex(raw["ts"]).tz_convert("UTC").astype(TS_DTYPE)
        if n
        else pd.DatetimeIndex([], dtype=TS_DTYPE)
    }
    for col in ("service_id", "service_name", "metric"):
        cols[col] = _category(raw[col])
    present = [c for c in LABELS if c in raw and _has_values(raw[c])]
    for label in label_columns([*present, *extra]):
        cols[label] = _category(raw[label]) if label in present else pd.Categorical(extra[label])
    cols["value"] = raw["value"].to_numpy(np.float64) if n else np.empty(0)
    frame = pd.DataFrame(cols)
    frame.attrs.update(types=dict(types), org_id=org_id)
    return frame


def _has_values(col: pd.Series) -> bool:
    if isinstance(col.dtype, pd.CategoricalDtype):  # the categories, not 32M strings
        return bool(set(col.cat.remove_unused_categories().cat.categories) - {""})
    return bool((col.astype(str) != "").any())


def _category(col: pd.Series) -> pd.Categorical:
    if not isinstance(col.dtype, pd.CategoricalDtype):  # a plain String column
        col = col.astype(str).astype("category")
    cat = col.cat.rename_categories([str(c) for c in col.cat.categories])
    if "" in cat.cat.categories:
        cat = cat.cat.remove_categories([""])
    return pd.Categorical(cat.cat.remove_unused_categories())
