"""DataFrames as HTML a person can read, with the frames themselves left as they are.

The frames keep their real dtypes (numbers stay numbers, ids stay whole: see
:mod:`pgcloud_nb.frames`); only what is *shown* changes here:

- an id (text in a column named ``id``, ``*_id``, ``*Id``) shows its first 8
  characters, the whole id in a tooltip, instead of a UUID wrapped over lines;
- a byte count (a column named ``*_bytes``, ``*Bytes``, ``sizeInBytes``) shows
  in binary units (``16.0 GiB``), not ``1.717987e+10``;
- numbers show as integers when whole, with at most 4 significant digits
  otherwise, and with thousands separators from 100,000 up;
- times show to the second in UTC, durations as ``1h 2m 3s``;
- long text is cut with ``…`` and shown whole in a tooltip; lists and dicts as
  compact JSON.

Every value and every tooltip is HTML-escaped: names and tags are user input.
The table sits in a box that scrolls sideways (``overflow-x: auto``) and cells
do not wrap, so a wide frame scrolls instead of squeezing ``us-east-1`` onto
two lines. ``jp-RenderedHTMLCommon`` gives it JupyterLab's own table style,
light or dark theme alike.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = [
    "Cell",
    "Readable",
    "byte_text",
    "cell",
    "duration_text",
    "escape",
    "html_table",
    "number_text",
    "readable",
    "table_html",
    "td",
]

ID_CHARS = 8  # a UUID's first group: unique enough to tell a fleet's services apart
TEXT_CHARS = 40
_ID_COLUMN = re.compile(r"(^id$|_id$|[a-z]Id$)")
_BYTES_COLUMN = re.compile(r"(_bytes$|Bytes$|^sizeInBytes$)")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# Inline styles (not a <style> block) survive JupyterLab's sanitizer on reopened notebooks.
# JupyterLab's own CSS sets white-space:normal on every td and th, so nowrap goes on each cell.
BOX_STYLE = "overflow-x:auto;max-width:100%"
TABLE_STYLE = "white-space:nowrap;border-collapse:collapse;margin:0"
NOWRAP = "white-space:nowrap"


def escape(text: str) -> str:
    """HTML-escape text for an element or a quoted attribute."""
    return html.escape(text, quote=True)


@dataclass(frozen=True)
class Cell:
    """What one value shows (``text``) and, when that is not all of it, its ``title``."""

    text: str
    title: str = ""


def _is_na(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def byte_text(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 KiB``, ``16.0 GiB``."""
    if not math.isfinite(n):
        return str(n)
    size, unit = abs(float(n)), 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    sign = "-" if n < 0 else ""
    return f"{sign}{size:.0f} B" if unit == 0 else f"{sign}{size:.1f} {_UNITS[unit]}"


def number_text(value: Any) -> str:
    """Whole numbers as integers, others with at most 4 significant digits; never ``e+10``."""
    if isinstance(value, numbers.Integral):
        n = int(value)
        return f"{n:,}" if abs(n) >= 100_000 else str(n)
    f = float(value)
    if not math.isfinite(f):
        return str(f)
    if f.is_integer() or abs(f) >= 100_000:
        n = round(f)
        return f"{n:,}" if abs(n) >= 100_000 else str(n)
    if abs(f) >= 1:
        return f"{f:.{max(0, 3 - int(math.log10(abs(f))))}f}"
    return f"{f:.4g}" if abs(f) >= 1e-4 else f"{f:.1e}"


def duration_text(delta: pd.Timedelta) -> str:
    """``250ms``, ``1.5s``, ``2m 5s``, ``1h 0m 0s``, ``3d 4h``."""
    ms = delta / pd.Timedelta(milliseconds=1)
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    if ms < 1000:
        return f"{sign}{number_text(ms)}ms"
    s = ms / 1000
    if s < 60:
        return f"{sign}{number_text(s)}s"
    whole = int(s)
    d, rest = divmod(whole, 86_400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{sign}{d}d {h}h"
    return f"{sign}{h}h {m}m {sec}s" if h else f"{sign}{m}m {sec}s"


def _cut(text: str, limit: int) -> Cell:
    one_line = " ".join(text.split())
    if len(one_line) <= limit and one_line == text:
        return Cell(text)
    return Cell(one_line[: limit - 1] + "…" if len(one_line) > limit else one_line, text)


def cell(column: str, value: Any, *, limit: int = TEXT_CHARS) -> Cell:
    """How ``value`` of ``column`` shows in a table (the rules in the module docstring)."""
    if isinstance(value, list | tuple | dict):
        return _cut(json.dumps(value, default=str, ensure_ascii=False), limit)
    if _is_na(value):
        return Cell("")
    if isinstance(value, bool):  # before numbers: a bool is an Integral
        return Cell(str(value))
    if isinstance(value, pd.Timestamp | dt.datetime):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC")
        return Cell(stamp.strftime("%Y-%m-%d %H:%M:%S"), stamp.isoformat())
    if isinstance(value, pd.Timedelta | dt.timedelta):
        delta = pd.Timedelta(value)
        return Cell(duration_text(delta), str(delta))
    if isinstance(value, numbers.Real):
        if _BYTES_COLUMN.search(column):
            return Cell(byte_text(float(value)), f"{number_text(value)} bytes")
        return Cell(number_text(value))
    text = str(value)
    if _ID_COLUMN.search(column) and len(text) > ID_CHARS + 1:
        return Cell(text[:ID_CHARS] + "…", text)
    return _cut(text, limit)


def td(shown: Cell, *, code: bool = False, style: str = NOWRAP) -> str:
    """One escaped ``<td>``; ``code`` sets the text in monospace (ids)."""
    text = escape(shown.text)
    if code and text:
        text = f"<code>{text}</code>"
    attrs = f' title="{escape(shown.title)}"' if shown.title else ""
    attrs += f' style="{style}"' if style else ""
    return f"<td{attrs}>{text}</td>"


def table_html(
    headers: Sequence[Cell],
    rows: Sequence[str],
    *,
    more: int = 0,
    css_class: str = "",
    style: str = NOWRAP,
) -> str:
    """Headers and ready ``<tr>`` rows in the scrolling box; ``more`` rows left out are counted.

    ``style`` goes on each header cell (the rows' cells carry their own, see :func:`td`).
    """
    head = "".join(
        f'<th title="{escape(h.title)}" style="{style}">{escape(h.text)}</th>'
        if h.title
        else f'<th style="{style}">{escape(h.text)}</th>'
        for h in headers
    )
    foot = f"<p><small>… {more:,} more rows not shown</small></p>" if more else ""
    classes = escape(f"jp-RenderedHTMLCommon pgcloud-table {css_class}".strip())
    return (
        f'<div class="{classes}" style="{BOX_STYLE}">'
        f'<table style="{TABLE_STYLE}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{foot}</div>"
    )


def html_table(frame: pd.DataFrame, *, max_rows: int = 200, index: bool | None = None) -> str:
    """``frame`` as a readable, escaped HTML table (the index too, unless it is 0, 1, 2…)."""
    if index is None:
        index = not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None
    shown = frame.iloc[:max_rows]
    if index:
        shown = shown.reset_index()
    columns = [str(c) for c in shown.columns]
    ids = [bool(_ID_COLUMN.search(c)) for c in columns]
    # a long frame (metrics_frame) names each value's unit in a column of its own
    unit = columns.index("unit") if "unit" in columns and "value" in columns else None
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = [cell(c, v) for c, v in zip(columns, values, strict=True)]
        if unit is not None:
            at = columns.index("value")
            cells[at] = _with_unit(values[at], values[unit], cells[at])
        tds = (td(x, code=is_id and bool(x.title)) for x, is_id in zip(cells, ids, strict=True))
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return table_html([Cell(c) for c in columns], rows, more=len(frame) - len(shown))


def _with_unit(value: Any, unit: Any, shown: Cell) -> Cell:
    """A byte count or byte rate in binary units, by the unit its row names."""
    if not isinstance(unit, str) or not unit.startswith("bytes") or _is_na(value):
        return shown
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return shown
    rate = unit.removeprefix("bytes")  # "" or "/s"
    return Cell(byte_text(float(value)) + rate, f"{number_text(value)} {unit}")


class Readable:
    """A frame shown readably in a notebook (``_repr_html_``); ``.frame`` is the frame itself."""

    def __init__(self, frame: pd.DataFrame, *, max_rows: int = 200) -> None:
        self.frame = frame
        self.max_rows = max_rows

    def _repr_html_(self) -> str:
        return html_table(self.frame, max_rows=self.max_rows)

    def __repr__(self) -> str:
        return repr(self.frame)


def readable(frame: pd.DataFrame, *, max_rows: int = 200) -> Readable:
    """Show ``frame`` with compact ids, byte units and no wrapped cells; the frame is unchanged.

    ``readable(snapshot)`` as a cell's last line displays it; ``.frame`` gets the
    frame back for more pandas.
    """
    return Readable(frame, max_rows=max_rows)
