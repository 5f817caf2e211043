"""JSON values -> typed pandas columns that no value can break.

The frames (:mod:`pgcloud_nb.frames`) type each column from the spec; this module
turns a list of whatever the API sent into a column of that type:

- :func:`ints`: ``Int64``, or ``Float64`` when a value is past 64 bits, not whole
  or infinite (JSON and the spec's ``integer`` allow any size; nothing overflows);
- :func:`floats`: ``Float64``; an integer past float's range becomes ±inf;
- :func:`bools`, :func:`texts`, :func:`categorical`, :func:`objects`;
- :func:`times`: UTC timestamps in µs from RFC 3339 text or ``datetime``, read
  with integer arithmetic so that years 1 and 9999, far offsets and leap
  seconds work where ``datetime`` and nanosecond pandas overflow.

Numbers sent as text (``"12"``, ``"1.5"``) are read as numbers. A value that
cannot be read as the column's type (``"abc"`` as a number, ``2026-02-30``)
becomes NA. Text is made storable: a lone surrogate (legal in JSON, refused by
UTF-8 and so by pandas' Arrow strings) becomes U+FFFD.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TEXT_DTYPE",
    "TS_DTYPE",
    "bools",
    "categorical",
    "epoch_us",
    "floats",
    "from_epoch_us",
    "ints",
    "number",
    "objects",
    "scaled",
    "text",
    "texts",
    "times",
]

TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")  # pandas 3's own default resolution


def _text_dtype() -> Any:
    """pandas 3's text dtype ("str": missing is NaN) on pandas 2.2 and 3 alike.

    On pandas 2, ``dtype="str"`` is numpy's fixed-width text, which writes None
    as ``"None"`` and leaves a column of type object; the same dtype as pandas 3's
    stands there behind the ``future.infer_string`` option.
    """
    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return "str"
    with pd.option_context("future.infer_string", True):
        return pd.Series(["text"]).dtype


TEXT_DTYPE = _text_dtype()
_INT64_MAX = 2**63 - 1
_NAT = int(np.iinfo(np.int64).min)  # NaT's bit pattern in a datetime64 column
_RFC3339 = re.compile(
    r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})"
    r"(?:[.,]([0-9]+))?)?\s*(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2})?)?)?\s*"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNIX_DAY = date(1970, 1, 1).toordinal()


# --- text -----------------------------------------------------------------------------------


def text(value: Any) -> str | None:
    """``value`` as storable text (None stays None)."""
    if value is None:
        return None
    out = value if isinstance(value, str) else str(value)
    return out if out.isascii() else _SURROGATE.sub("\ufffd", out)


def texts(values: list[Any]) -> Any:
    return pd.array([text(v) for v in values], dtype=TEXT_DTYPE)


def categorical(values: list[Any], known: list[str], *, ordered: bool = False) -> pd.Categorical:
    """Text as a categorical: the ``known`` categories first, then the others seen, sorted."""
    items = [text(v) for v in values]
    seen = sorted({v for v in items if v is not None} - set(known))
    dtype = _categories((*known, *seen), ordered)
    # codes by a dict: for the few rows of an API answer, pandas' own matching costs more
    index = {c: i for i, c in enumerate(dtype.categories)}
    codes = np.array([-1 if v is None else index[v] for v in items], dtype=np.int64)
    return pd.Categorical.from_codes(codes, dtype=dtype)


@lru_cache(maxsize=256)  # an enum's categories repeat on every frame
def _categories(names: tuple[str, ...], ordered: bool) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(pd.Index(names, dtype="str"), ordered=ordered)


def objects(values: list[Any]) -> Any:
    """Values as they are, one Python object per row."""
    # Filled one by one: from a list of equal-length lists, numpy would build a 2-D array.
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return pd.arrays.NumpyExtensionArray(out)


# --- numbers --------------------------------------------------------------------------------


def number(value: Any) -> int | float | None:
    """A JSON number, or a number sent as text, as int (when whole) or float; else None.

    ``True``/``False`` are not numbers here, and NaN is None.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return int(f) if f.is_integer() else (None if math.isnan(f) else f)
    if isinstance(value, str) and value.strip():
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return number(float(value))
        except ValueError:
            return None
    return None


def _float(value: int | float | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # an int past float's range
        return math.inf if value > 0 else -math.inf


def ints(values: list[Any]) -> Any:
    """``Int64``; ``Float64`` when a value is past 64 bits, fractional or infinite."""
    nums = [number(v) for v in values]
    if all(n is None or (isinstance(n, int) and abs(n) <= _INT64_MAX) for n in nums):
        return pd.array(nums, dtype="Int64")
    return pd.array([_float(n) for n in nums], dtype="Float64")


def floats(values: list[Any], *, nullable: bool = True) -> Any:
    """``Float64``, or numpy's ``float64`` with NaN for NA when not ``nullable``."""
    out = [_float(number(v)) for v in values]
    if not nullable:
        return np.array([math.nan if v is None else v for v in out], dtype=np.float64)
    return pd.array(out, dtype="Float64")


def bools(values: list[Any]) -> Any:
    """``boolean``: JSON booleans, and ``"true"``/``"false"`` sent as text."""
    table = {"true": True, "false": False}
    return pd.array(
        [
            v if isinstance(v, bool) or v is None else table.get(str(v).strip().lower())
            for v in values
        ],
        dtype="boolean",
    )


def scaled(value: int | float, factor: int) -> int | None:
    """``value × factor`` as an int, when a µs timestamp column can hold it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    out = round(value * factor)
    return out if abs(out) <= _INT64_MAX else None


# --- times ----------------------------------------------------------------------------------


def epoch_us(value: Any) -> int | None:
    """Microseconds since 1970 (UTC) of a date-time, whatever its year or offset.

    A leap second (``23:59:60``, legal in RFC 3339) is read as the last µs of its
    minute; a time without offset is UTC; a bare date is its midnight; what is
    not an RFC 3339 date-time (or a ``datetime``) is None.
    """
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, datetime):
        offset = value.utcoffset() or timedelta(0)
        since = value.replace(tzinfo=None) - datetime(1970, 1, 1)
        return (since - offset) // timedelta(microseconds=1)
    if not isinstance(value, str) or (m := _RFC3339.fullmatch(value)) is None:
        return None
    y, mo, d, h, mi, s = (int(g or 0) for g in m.groups()[:6])
    if h > 23 or mi > 59 or s > 60:
        return None
    try:
        days = date(y, mo, d).toordinal() - _UNIX_DAY
    except ValueError:
        return None
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    if s == 60:
        s, micro = 59, 999_999
    minutes = 0
    if m[8]:
        minutes = (int(m[9]) * 60 + int(m[10] or 0)) * (1 if m[8] == "+" else -1)
    return (((days * 24 + h) * 60 + mi - minutes) * 60 + s) * 1_000_000 + micro


def from_epoch_us(values: list[int | None]) -> Any:
    """A UTC µs timestamp column from microseconds since 1970 (None is NaT)."""
    raw = np.array([_NAT if v is None else v for v in values], dtype=np.int64)
    return pd.DatetimeIndex(raw.view("datetime64[us]"), tz="UTC").array


def times(values: list[Any]) -> Any:
    """A UTC µs timestamp column from RFC 3339 text or ``datetime`` values."""
    return from_epoch_us([epoch_us(v) for v in values])
