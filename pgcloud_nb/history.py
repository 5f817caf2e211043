"""History: an accumulator of Prometheus scrapes with bounded memory.

A long frame spends ~60 bytes a sample on repeated labels. Here each distinct
series (service, metric, labels) is registered once and a scrape is stored as
two arrays: the series ids (int32, shared with the previous scrape when the
layout is the same, which is the normal case) and the values (float64). That
is ~8–12 bytes a sample; :attr:`History.bytes_per_sample` reports it.

- Scrapes older than ``max_age`` (default one day) are dropped.
- A scrape identical to what is held (every series known and unchanged) is
  dropped: the real endpoint refreshes only every 60 s (docs/api-behaviour.md §9.2), so
  scraping faster gives repeats, which would read as zero rates.
- :meth:`History.frame` gives the long frame with categoricals;
  :meth:`History.rates` and :meth:`History.derived` compute on the arrays.
- :meth:`History.save` / :meth:`History.load` use Parquet (the long frame, so
  DuckDB or ClickHouse can read the file directly).
- :meth:`History.from_store` loads a time range of the collector's ClickHouse
  store (``pgcloud_nb.collect.Store``), which can import the Parquet files too.
"""

from __future__ import annotations

import os
from collections import deque
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .metrics import CACHE, COMMITS, CORES, CPU, ROLLBACKS, counter_rates, derived, is_counter
from .prometheus import LABEL_ORDER, TS_DTYPE, label_columns, parse_prometheus

__all__ = ["History"]


class _Samples(Protocol):
    # What from_store asks of a pgcloud_nb.collect.Store (which imports this package's
    # modules, so it is not imported here: docs/architecture.md, Rules).
    def frame(
        self,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame: ...


_Key = tuple[str | None, str | None, str, tuple[tuple[str, str], ...]]
_BASE = ("service_id", "service_name", "metric")


class History:
    """Scrapes of the Prometheus endpoints, kept compactly for rates and charts."""

    def __init__(self, *, max_age: timedelta | None = timedelta(days=1)) -> None:
        self.max_age = pd.Timedelta(max_age) if max_age is not None else None
        self.dropped = 0  # identical scrapes not kept
        self.types: dict[str, str] = {}
        self.org_id: str | None = None
        self._keys: list[_Key] = []
        self._index: dict[_Key, int] = {}
        self._chunks: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (ts µs, ids, values)
        self._last = np.empty(0, np.float64)  # last value of each series
        self._seen = np.empty(0, bool)
        self._layout: tuple[tuple[Any, ...], np.ndarray] | None = None
        self._series: pd.DataFrame | None = None

    # -- adding --------------------------------------------------------------------------

    def add(self, scrape: str | pd.DataFrame, *, timestamp: datetime | None = None) -> int:
        """Add a scrape (Prometheus text, or a long frame of one or more scrapes).

        Returns how many scrapes were kept (0 when it repeated the last one).
        """
        frame = parse_prometheus(scrape, timestamp=timestamp) if isinstance(scrape, str) else scrape
        self.types.update(frame.attrs.get("types", {}))
        self.org_id = frame.attrs.get("org_id") or self.org_id
        if not len(frame):
            return 0
        ids = self._ids(frame)
        ts = frame["timestamp"].to_numpy("datetime64[us]").view("int64")
        values = frame["value"].to_numpy(np.float64)
        if ts[0] == ts[-1] and (ts == ts[0]).all():  # one scrape: no sort needed
            kept = self._append(int(ts[0]), ids, values)
        else:
            order = np.argsort(ts, kind="stable")
            ts, ids, values = ts[order], ids[order], values[order]
            cuts = np.flatnonzero(np.diff(ts)) + 1
            kept = sum(
                self._append(int(t[0]), i, v)
                for t, i, v in zip(
                    np.split(ts, cuts), np.split(ids, cuts), np.split(values, cuts), strict=True
                )
            )
        self._trim()
        return kept

    def scrape(self, client: Any, service_id: str | None = None) -> int:
        """Fetch the org (or one service's) Prometheus text and add it."""
        return self.add(client.prometheus(service_id))

    def _append(self, ts: int, ids: np.ndarray, values: np.ndarray) -> int:
        last = self._last[ids]
        if self._seen[ids].all() and np.array_equal(last, values, equal_nan=True):
            self.dropped += 1
            return 0
        self._last[ids] = values
        self._seen[ids] = True
        if self._chunks and np.array_equal(self._chunks[-1][1], ids):
            ids = self._chunks[-1][1]  # the same layout: share one id array
        self._chunks.append((ts, ids.copy() if ids.base is not None else ids, values.copy()))
        return 1

    def _trim(self) -> None:
        if self.max_age is None or not self._chunks:
            return
        newest = max(c[0] for c in (self._chunks[0], self._chunks[-1]))
        floor = newest - self.max_age.value // 1000
        while self._chunks and self._chunks[0][0] < floor:
            self._chunks.popleft()

    def _ids(self, frame: pd.DataFrame) -> np.ndarray:
        """Series id of every row; reuses the last scrape's ids when the layout repeats."""
        labels = [c for c in frame.columns if c not in (*_BASE, "timestamp", "value")]
        cols = [frame[c] for c in (*_BASE, *labels)]
        fingerprint = tuple(
            (c.name, tuple(c.cat.categories), c.cat.codes.to_numpy().tobytes()) for c in cols
        )
        if self._layout is not None and self._layout[0] == fingerprint:
            return self._layout[1]
        groups = frame.groupby([*_BASE, *labels], observed=True, dropna=False, sort=False)
        codes = groups.ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        rows = frame.iloc[first]
        ids = np.empty(len(first), np.int32)
        for g, row in enumerate(zip(*(rows[c] for c in (*_BASE, *labels)), strict=True)):
            extra = tuple((n, str(v)) for n, v in zip(labels, row[3:], strict=True) if pd.notna(v))
            svc, name = (str(v) if pd.notna(v) else None for v in row[:2])
            ids[g] = self._register((svc, name, str(row[2]), extra))
        out = ids[codes]
        self._layout = (fingerprint, out)
        return out

    def _register(self, key: _Key) -> int:
        sid = self._index.get(key)
        if sid is None:
            sid = self._index[key] = len(self._keys)
            self._keys.append(key)
            self._series = None
            if sid >= len(self._last):  # grow by doubling
                size = max(1024, 2 * len(self._last))
                self._last = np.resize(self._last, size)
                self._seen = np.concatenate([self._seen, np.zeros(size - len(self._seen), bool)])
        return sid

    # -- reading ---------------------------------------------------------------------------

    @property
    def n_scrapes(self) -> int:
        return len(self._chunks)

    @property
    def n_samples(self) -> int:
        return sum(len(c[2]) for c in self._chunks)

    @property
    def nbytes(self) -> int:
        """Bytes held: sample arrays (shared id arrays once), timestamps, series table."""
        ids = {id(c[1]): c[1].nbytes for c in self._chunks}
        held = sum(ids.values()) + sum(c[2].nbytes + 8 for c in self._chunks)
        keys = sum(64 + sum(len(s or "") for s in k[:3]) + 16 * len(k[3]) for k in self._keys)
        return held + keys + self._last.nbytes + self._seen.nbytes

    @property
    def bytes_per_sample(self) -> float:
        return self.nbytes / max(1, self.n_samples)

    def _arrays(
        self, last: int | None = None, series: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chunks = list(self._chunks)[-last:] if last else list(self._chunks)
        if not chunks:
            return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.float64)
        ids = np.concatenate([c[1] for c in chunks])
        values = np.concatenate([c[2] for c in chunks])
        ts = np.repeat(np.array([c[0] for c in chunks], np.int64), [len(c[1]) for c in chunks])
        if series is not None:
            keep = series[ids]
            ts, ids, values = ts[keep], ids[keep], values[keep]
        return ts, ids, values

    def _table(self) -> pd.DataFrame:
        """One row per series: the key columns as categoricals."""
        if self._series is None:
            names = label_columns({n for k in self._keys for n, _ in k[3]})
            cols: dict[str, Any] = {
                c: pd.Categorical([k[i] for k in self._keys]) for i, c in enumerate(_BASE)
            }
            for name in names:
                cols[name] = pd.Categorical([dict(k[3]).get(name) for k in self._keys])
            self._series = pd.DataFrame(cols)
        return self._series

    def _frame(self, ts: np.ndarray, ids: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        frame = self._table().take(ids).reset_index(drop=True)
        frame.insert(0, "timestamp", pd.DatetimeIndex(ts.astype("datetime64[us]"), tz="UTC"))
        frame["value"] = values
        frame.attrs.update(types=dict(self.types), org_id=self.org_id)
        return frame

    def frame(self, last: int | None = None) -> pd.DataFrame:
        """The long frame (of the ``last`` scrapes only, if given)."""
        return self._frame(*self._arrays(last))

    def rates(self, last: int | None = None) -> pd.DataFrame:
        """Every counter as per-second rates (see :func:`pgcloud_nb.metrics.rates`)."""
        counters = np.array([is_counter(k[2], self.types) for k in self._keys] + [False])
        ts, ids, values = self._arrays(last, counters)
        pos, rate, reset = counter_rates(ids, ts, values)
        out = self._frame(ts[pos], ids[pos], rate)
        out["reset"] = reset
        return out

    def derived(self, last: int | None = None) -> pd.DataFrame:
        """CPU %, commit/rollback rates, cache hit ratio (:func:`pgcloud_nb.metrics.derived`)."""
        wanted = {CPU, CORES, COMMITS, ROLLBACKS, CACHE}
        series = np.array([k[2] in wanted for k in self._keys] + [False])
        return derived(self._frame(*self._arrays(last, series)))

    # -- Parquet -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the long frame to Parquet (categoricals become dictionary columns)."""
        frame = self.frame()
        frame.attrs = {"types": dict(self.types), "org_id": self.org_id}
        frame.to_parquet(path, index=False, engine="pyarrow")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, max_age: timedelta | None = timedelta(days=1)
    ) -> History:
        """A History holding what :meth:`save` wrote, ready to take more scrapes."""
        frame = pd.read_parquet(path, engine="pyarrow")
        frame["timestamp"] = frame["timestamp"].astype(TS_DTYPE)
        for col in frame.columns:
            if col in (*_BASE, *LABEL_ORDER) and not isinstance(
                frame[col].dtype, pd.CategoricalDtype
            ):
                frame[col] = frame[col].astype("category")
        history = cls(max_age=max_age)
        history.add(frame)
        return history

    @classmethod
    def from_store(
        cls,
        store: _Samples,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        *,
        max_age: timedelta | None = None,
    ) -> History:
        """A History of the store's samples with ``start <= timestamp < end``.

        Nothing is trimmed by default (``max_age=None``): the range asked for is kept.
        """
        history = cls(max_age=max_age)
        history.add(store.frame(start, end))
        return history

    def __repr__(self) -> str:
        return (
            f"<History {self.n_scrapes} scrapes, {len(self._keys)} series, "
            f"{self.n_samples} samples, {self.bytes_per_sample:.1f} B/sample>"
        )
