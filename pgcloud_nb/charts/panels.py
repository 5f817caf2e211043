"""The figure of a LiveChart: a panel per metric, a line per series, limits that follow.

- Each panel is titled in words and its y-axis carries the unit
  (:mod:`~pgcloud_nb.charts.catalogue`), with the Prometheus name at the right
  of the title; bytes are rescaled to the unit that fits the data in view.
- A line per series, made on first sight and then moved with ``set_data``.
  With several services (or all of the org's) each service has a colour and
  each label value (connection state, CPU mode…) a line style; with one
  service, each label value has a colour. Colours come from a
  :class:`~pgcloud_nb.charts.style.ColourBook` that outlives stop and start.
- While :attr:`Panels.following`, the time axis runs from the first sample to
  the last (the window once it is full) and the y-axis fits the data, from 0
  when nothing is negative. A zoom or pan by the reader (ipympl's toolbar)
  ends following until :meth:`Panels.follow`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..history import History
from ..metrics import is_counter
from .catalogue import (
    CATALOGUE,
    CPU_CORES,
    CPU_SECONDS,
    CPU_WITHOUT_CORES,
    WHOLE_UNITS,
    MetricInfo,
    byte_scale,
    info,
)
from .style import INK, ColourBook, time_limits

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

__all__ = ["Panels", "Select", "SeriesKey"]

_NOT_LABELS = ("timestamp", "value", "metric", "service_id", "service_name", "reset")
# Margins in inches: the y label on the left, the legend on the right, a title per panel.
_LEFT, _RIGHT, _TOP, _BOTTOM, _GAP = 0.75, 2.0, 0.35, 0.5, 0.45
_LABEL_CHARS = 28  # legend entries are cut here; the hover label has the full name

SeriesKey = tuple[str, str, tuple[str, ...]]  # metric, service id, (service name, labels…)
Select = Callable[[pd.DataFrame, str], pd.DataFrame]  # (long frame, metric) -> its rows


class Panels:
    """One figure of ``metrics`` stacked over a shared time axis."""

    def __init__(
        self,
        metrics: Sequence[str],
        services: Sequence[str] | None,
        window: float,
        figsize: tuple[float, float],
        dpi: int,
    ) -> None:
        self.metrics = tuple(metrics)
        self.window = window
        self.markers = False  # dots on the samples: for hovering, so only where one can
        # One service: a colour per label value (connection state, CPU mode…). Several:
        # a colour per service, in the order given, and a line style per label value.
        self.by_service = services is None or len(services) > 1
        self.colours = ColourBook((services or ()) if self.by_service else ())
        self._styles: dict[str, ColourBook] = {}  # per metric: its first label set is solid
        self.following = True  # limits follow the data until the reader zooms or pans
        self._limits: list[tuple[tuple[float, float], tuple[float, float]]] = []
        self.units: dict[Axes, str] = {}
        self.lines: dict[SeriesKey, Line2D] = {}

        self.figure = Figure(figsize=(figsize[0], figsize[1] * len(self.metrics)), dpi=dpi)
        self.figure.patch.set_alpha(0.0)  # the notebook's own background shows through
        self.axes: list[Axes] = list(
            self.figure.subplots(len(self.metrics), 1, sharex=True, squeeze=False)[:, 0]
        )
        self._layout(figsize)
        self._empty = [self._style(ax, m) for ax, m in zip(self.axes, self.metrics, strict=True)]
        locator = mdates.AutoDateLocator()
        self.axes[-1].xaxis.set_major_locator(locator)
        self.axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        self.axes[-1].xaxis.get_offset_text().set(fontsize=8, color=INK)
        self.axes[-1].set_xlabel("time (UTC)", fontsize=8, color=INK)

    def follow(self) -> None:
        """Fit the axes to the data again at the next :meth:`draw`."""
        self.following = True
        self._limits = []

    def clear(self) -> None:
        self.lines.clear()
        self.units.clear()
        self.figure.clear()

    @staticmethod
    def _cpu(sub: pd.DataFrame, gauges: pd.DataFrame, select: Select) -> tuple[pd.DataFrame, Any]:
        """CPU seconds per second, as the data sheet derives CPU %: every mode but idle,
        summed per service, over its provisioned cores × 100 (a single mode, if ``where``
        kept one). Without the cores: the number of cores kept busy."""
        modes = set(sub["mode"].dropna().astype(str)) if "mode" in sub else set()
        if len(modes) > 1:
            sub = sub[sub["mode"] != "idle"]
        keys = ["timestamp", "service_id", "service_name"]
        summed = sub.groupby(keys, observed=True, sort=True)["value"].sum().reset_index()
        if len(modes) == 1:
            summed["mode"] = modes.pop()  # keeps the mode in the series' name
        cores = select(gauges, CPU_CORES).groupby("service_id", observed=True)["value"].last()
        wanted = summed["service_id"].astype(str).map(cores.rename(index=str))
        if summed.empty or wanted.isna().any() or (wanted <= 0).any():
            return summed, CPU_WITHOUT_CORES
        percent = summed["value"].to_numpy(np.float64) / wanted.to_numpy(np.float64) * 100
        return summed.assign(value=percent), CATALOGUE[CPU_SECONDS]

    def draw(self, history: History, select: Select) -> None:
        """Move every line to the data in ``history`` (as ``select`` filters it) and fit."""
        self._check_navigation()
        counters = {m for m in self.metrics if is_counter(m, history.types)}
        cpu = CPU_SECONDS in counters
        gauges = history.frame() if cpu or len(counters) < len(self.metrics) else None
        rates = history.rates() if counters else None
        seen: set[SeriesKey] = set()
        relabel: set[Axes] = set()
        span = [np.inf, -np.inf]
        for ax, metric, empty in zip(self.axes, self.metrics, self._empty, strict=True):
            frame = rates if metric in counters else gauges
            assert frame is not None
            sub = select(frame, metric)
            about = info(metric, metric in counters)
            if metric == CPU_SECONDS and cpu and len(sub):
                assert gauges is not None
                sub, about = self._cpu(sub, gauges, select)
            divisor, unit = 1.0, about.unit
            if about.is_bytes and len(sub):
                divisor, unit = byte_scale(float(np.nanmax(np.abs(sub["value"]))), about.counter)
            if self._move_lines(ax, metric, sub, divisor, seen, span):
                relabel.add(ax)
            self._label(ax, metric, about, unit)
            empty.set_visible(sub.empty)
        for key in [k for k in self.lines if k not in seen]:
            line = self.lines.pop(key)  # a series gone from the window
            relabel.add(self.axes[self.metrics.index(key[0])])
            line.remove()
        for ax in relabel:  # legends are rebuilt only when the set of lines changes
            self._legend(ax)
        self._fit(span)

    def _series(self, sub: pd.DataFrame) -> Iterable[tuple[str, tuple[str, ...], pd.DataFrame]]:
        """(service id, (service name, label values…), rows) per series, in a stable order."""
        labels = [c for c in sub.columns if c not in _NOT_LABELS and sub[c].notna().any()]
        cols = ["service_id", "service_name", *labels]
        for name, group in sub.groupby(cols, observed=True, dropna=False, sort=True):
            sid, *parts = ("" if _missing(p) else str(p) for p in name)
            yield sid, tuple(parts), group

    def _move_lines(
        self,
        ax: Axes,
        metric: str,
        sub: pd.DataFrame,
        divisor: float,
        seen: set[SeriesKey],
        span: list[float],
    ) -> bool:
        """``set_data`` on each series' line (made on first sight); True if lines were added."""
        if sub.empty:  # e.g. a counter before its second scrape: no rate yet
            return False
        series = list(self._series(sub))
        self.colours.meet(sid if self.by_service else parts[1:] for sid, parts, _ in series)
        added = False
        for sid, parts, group in series:
            key = (metric, sid, parts)
            seen.add(key)
            line = self.lines.get(key)
            if line is None:
                line = self._new_line(ax, metric, sid, parts)
                self.lines[key] = line
                added = True
            x = mdates.date2num(group["timestamp"].to_numpy("datetime64[us]"))
            line.set_data(x, group["value"].to_numpy(np.float64) / divisor)
            span[0], span[1] = min(span[0], float(x.min())), max(span[1], float(x.max()))
        return added

    def _new_line(self, ax: Axes, metric: str, sid: str, parts: tuple[str, ...]) -> Line2D:
        name, labels = parts[0], tuple(p for p in parts[1:] if p)
        colour_key: Hashable = sid if self.by_service else parts[1:]
        if self.by_service:
            text = " · ".join((name, *labels))
            style = self._styles.setdefault(metric, ColourBook()).style(parts[1:])
        else:
            text = " · ".join(labels) or name
            style = "-"
        (line,) = ax.plot(
            [],
            [],
            color=self.colours.colour(colour_key),
            linestyle=style,
            linewidth=1.8,
            marker="o" if self.markers else None,
            markersize=2.5,
            label=text if len(text) <= 28 else text[:27] + "…",
        )
        line.set_gid(" · ".join((name, *labels)))  # the full name, for the hover label
        return line

    def _label(self, ax: Axes, metric: str, about: MetricInfo, unit: str) -> None:
        if self.units.get(ax) != unit or ax.get_title(loc="left") != about.title:
            ax.set_title(about.title, fontsize=10, loc="left", color=INK, fontweight="bold")
            ax.set_ylabel(unit, fontsize=8, color=INK)
            self.units[ax] = unit

    def _legend(self, ax: Axes) -> None:
        if ax.lines:
            ax.legend(
                fontsize=7,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                frameon=False,
                labelcolor="linecolor",  # each name in its line's colour: readable in both themes
                handlelength=2.2,
            )
        elif (legend := ax.get_legend()) is not None:
            legend.remove()

    def _check_navigation(self) -> None:
        """Stop following if the limits are not the ones the last fit left (a zoom or pan).

        Read before anything is drawn: only the reader moves the limits between redraws
        (a new line would request an autoscale of its own, applied on the next read).
        """
        now = [(ax.get_xlim(), ax.get_ylim()) for ax in self.axes] if self._limits else []
        if now != self._limits:
            self.following = False

    def _fit(self, span: list[float]) -> None:
        """Fit the axes to the data while following; leave a reader's zoom alone."""
        if not self.following or not np.isfinite(span).all():
            return
        self.axes[-1].set_xlim(*time_limits(span[0], span[1], self.window))
        for ax in self.axes:
            ax.set_autoscaley_on(True)  # a zoom turned it off; following turns it back on
            ax.relim()
            ax.autoscale_view(scalex=False)
            ys = [np.asarray(line.get_ydata(), np.float64) for line in ax.get_lines()]
            seen = [y[~np.isnan(y)] for y in ys if len(y) and not np.isnan(y).all()]
            if seen and min(y.min() for y in seen) >= 0:  # the data sheet's counts and shares
                # all zero (no connections yet): 0 to 1, not matplotlib's ±0.05 around 0
                top = None if max(y.max() for y in seen) > 0 else 1
                ax.set_ylim(bottom=0, top=top, auto=None)
        self._limits = [(ax.get_xlim(), ax.get_ylim()) for ax in self.axes]

    def _style(self, ax: Axes, metric: str) -> Any:
        """Theme-neutral axes; returns the "waiting for data" note of the panel."""
        ax.set_facecolor("none")
        ax.tick_params(labelsize=8, colors=INK)
        for spine in ax.spines.values():
            spine.set_color(INK)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, color=INK, alpha=0.25, linewidth=0.6)
        if info(metric, is_counter(metric)).unit in WHOLE_UNITS:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no 1.5 connections
        ax.set_title(metric, fontsize=7, loc="right", color=INK, family="monospace")
        self._label(ax, metric, info(metric, is_counter(metric)), "")
        return ax.text(
            0.5, 0.5, "waiting for data (a rate needs two scrapes)" if is_counter(metric)
            else "waiting for data", transform=ax.transAxes, ha="center", va="center",
            color=INK, fontsize=9,
        )  # fmt: skip

    def _layout(self, figsize: tuple[float, float]) -> None:
        width, height = figsize[0], figsize[1] * len(self.metrics)
        n = len(self.metrics)
        panel = (height - _TOP - _BOTTOM - (n - 1) * _GAP) / n
        self.figure.subplots_adjust(
            left=_LEFT / width,
            right=1 - _RIGHT / width,
            top=1 - _TOP / height,
            bottom=_BOTTOM / height,
            hspace=_GAP / panel,
        )

    def describe(self, ax: Axes, line: Line2D, x: float, y: float) -> str:
        when = mdates.num2date(x).strftime("%H:%M:%S UTC")
        return f"{line.get_gid()}\n{when}  {y:,.4g} {self.units.get(ax, '')}".rstrip()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
