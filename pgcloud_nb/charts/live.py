"""LiveChart: Prometheus metrics of one or more services, redrawn as they come in.

>>> from pgcloud_nb.charts import LiveChart
>>> chart = LiveChart(pg, [svc.id], ["PostgresServer_ActiveConnections",
...                                  "PostgresServer_TransactionsCommitted_Total"])
>>> chart                      # start / pause / stop buttons; chart.close() ends it

How it runs, and why:

- **An asyncio task on the kernel's loop**, not a thread: output from threads
  is lost under ipykernel 7. Only the blocking HTTP read goes to the loop's
  executor (see :mod:`pgcloud_nb.jobs`); parsing and drawing run on
  the loop. Without a running loop (a plain test or script), call
  :meth:`LiveChart.update` for one beat.
- **One figure, reused**: lines are created once per series, then moved with
  ``set_data``, and the canvas is redrawn with ``draw_idle``. The figure is a
  plain :class:`matplotlib.figure.Figure` on an Agg canvas, outside pyplot:
  pyplot's inline backend would show a pyplot figure a second time and close
  it after any cell that plots, and it would linger in ``plt.get_fignums()``.
  Each redraw is sent as a PNG to an ``ipywidgets.Image``, so the chart needs
  nothing beyond ipywidgets (ipympl is not required).
- **A bounded window**: scrapes live in a :class:`~pgcloud_nb.history.History`
  whose ``max_age`` is the window, so memory stays flat however long it runs.
  Counters (``…_Total``) are drawn as per-second rates (resets handled there).
  A scrape identical to the last one (the API refreshes once a minute) is
  dropped and causes no redraw.
- **The budget**: one request per beat (the org endpoint when charting several
  services); the interval is stretched so the chart alone takes at most
  :data:`BUDGET_SHARE` of the key's budget, and a beat is skipped while less
  than half of it is free.
- **60 s by default against the real API** (its data refreshes that often),
  :data:`SANDBOX_INTERVAL` against the sandbox.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ipywidgets as widgets
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .history import History
from .jobs import ErrorPanel, cancel, close_children, guarded, poll_job, require_loop, run_job
from .metrics import is_counter

if TYPE_CHECKING:
    import asyncio

    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    from .client import Client

__all__ = ["BUDGET_SHARE", "DEFAULT_INTERVAL", "SANDBOX_INTERVAL", "LiveChart"]

DEFAULT_INTERVAL = 60.0  # the real API's Prometheus data refreshes once a minute
SANDBOX_INTERVAL = 2.0
BUDGET_SHARE = 0.2  # at most 2 of the real API's 10 requests per 10 s
_NOT_SERIES = ("timestamp", "value", "metric", "service_id", "reset")

Scrape = str | pd.DataFrame


def _ids(services: str | Iterable[Any] | None) -> tuple[str, ...] | None:
    if services is None:
        return None
    if isinstance(services, str):
        return (services,)
    return tuple(s if isinstance(s, str) else str(s.id) for s in services)


class LiveChart(widgets.VBox):
    """Metrics × services over a sliding time window, one subplot per metric.

    ``services``: ids (or objects with ``.id``); ``None`` charts every service
    of the org. ``metrics``: Prometheus names. ``where`` keeps only series
    whose labels match (``{"state": "active"}``). ``interval``: seconds between
    scrapes (default: 60 s, or 2 s on a sandbox). ``window``: seconds of
    history shown and kept. ``source`` replaces the API with a callable
    returning Prometheus text or a long frame (tests and benchmarks).

    ``redraws`` counts redraws (also shown in the status line); ``history``
    holds the data.
    """

    def __init__(
        self,
        client: Client | None = None,
        services: str | Iterable[Any] | None = None,
        metrics: Sequence[str] = ("PostgresServer_ActiveConnections",),
        *,
        where: Mapping[str, str] | None = None,
        interval: float | None = None,
        window: float = 600.0,
        source: Callable[[], Scrape] | None = None,
        autostart: bool = True,
        figsize: tuple[float, float] = (8.0, 2.4),
        dpi: int = 80,
    ) -> None:
        if client is None and source is None:
            raise ValueError("LiveChart needs a client or a source")
        if not metrics:
            raise ValueError("LiveChart needs at least one metric")
        self.client = client
        self.services = _ids(services)
        self.metrics = tuple(metrics)
        self.where = dict(where or {})
        if interval is None:
            sandbox = client is None or _is_sandbox(client)
            interval = SANDBOX_INTERVAL if sandbox else DEFAULT_INTERVAL
        self.interval = interval
        self.window = window
        self._source = source
        self.history = History(max_age=timedelta(seconds=window))
        self.redraws = 0
        self.scrapes = 0
        self.state = "stopped"
        self.task: asyncio.Task[None] | None = None

        self.figure = Figure(figsize=(figsize[0], figsize[1] * len(self.metrics)), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.12, hspace=0.45)
        self.axes: list[Axes] = list(
            self.figure.subplots(len(self.metrics), 1, sharex=True, squeeze=False)[:, 0]
        )
        for ax, metric in zip(self.axes, self.metrics, strict=True):
            ax.set_title(metric, fontsize=9, loc="left")
            ax.tick_params(labelsize=8)
            ax.grid(True, alpha=0.3)
        locator = mdates.AutoDateLocator()
        self.axes[-1].xaxis.set_major_locator(locator)
        self.axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        self.lines: dict[tuple[str, tuple[Any, ...]], Line2D] = {}

        self.image = widgets.Image(format="png")
        self.start_button = widgets.Button(description="start", icon="play")
        self.pause_button = widgets.Button(description="pause", icon="pause")
        self.stop_button = widgets.Button(description="stop", icon="stop")
        self.status = widgets.Label()
        self.status.add_class("pgcloud-chart-status")
        self.errors = ErrorPanel()
        guard = guarded(self.errors)
        self.start_button.on_click(guard(lambda _: self.start()))
        self.pause_button.on_click(guard(lambda _: self.pause()))
        self.stop_button.on_click(guard(lambda _: self.stop()))
        super().__init__(
            [
                widgets.HBox([self.start_button, self.pause_button, self.stop_button, self.status]),
                self.image,
                self.errors,
            ]
        )
        self.add_class("pgcloud-live-chart")
        self.redraw()
        if autostart and _loop_running():
            self.start()

    # -- control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start (or resume) scraping on the kernel's loop."""
        require_loop("LiveChart.start")
        if self.task is not None and not self.task.done():
            return
        self.task = run_job(
            poll_job(
                self._fetch,
                self._apply,
                interval=self.effective_interval,
                room=self._room,
                panel=self.errors,
            ),
            self.errors,
        )
        self._set_state("running")

    def pause(self) -> None:
        """Stop scraping and keep what is drawn; :meth:`start` resumes."""
        cancel(self.task)
        self.task = None
        self._set_state("paused")

    def stop(self) -> None:
        """Stop scraping and forget the data; :meth:`start` begins afresh."""
        cancel(self.task)
        self.task = None
        self.history = History(max_age=timedelta(seconds=self.window))
        self.redraw()
        self._set_state("stopped")

    def close(self) -> None:
        """Stop the task and release the figure; the widget disappears."""
        if self.state == "closed":
            return
        cancel(self.task)
        self.task = None
        self.state = "closed"
        self.lines.clear()
        # close() also runs from Widget.__del__, possibly at interpreter exit, when
        # matplotlib can no longer import what clear() needs: then there is nothing to free.
        with contextlib.suppress(Exception):
            self.figure.clear()
        close_children(self)
        super().close()

    def update(self) -> bool:
        """One beat, synchronously: scrape, add, redraw if new. Returns whether it redrew."""
        return self._apply(self._fetch())

    def effective_interval(self) -> float:
        """``interval``, stretched to keep the chart within its share of the budget."""
        if self.client is None:
            return self.interval
        return self.client.budget.paced(self.interval, BUDGET_SHARE)

    # -- data -------------------------------------------------------------------------

    def _room(self) -> bool:
        return self.client is None or self.client.budget.has_room()

    def _fetch(self) -> Scrape:
        if self._source is not None:
            return self._source()
        assert self.client is not None
        # One request a beat: a service's own endpoint, or the org's for several.
        one = self.services[0] if self.services and len(self.services) == 1 else None
        return self.client.prometheus(one)

    def _apply(self, scrape: Scrape) -> bool:
        self.scrapes += 1
        if not self.history.add(scrape):
            self._show_status()
            return False
        self.redraw()
        return True

    def _select(self, frame: pd.DataFrame, metric: str) -> pd.DataFrame:
        keep = frame["metric"] == metric
        if self.services is not None:
            keep &= frame["service_id"].isin(self.services)
        for label, value in self.where.items():
            if label in frame.columns:
                keep &= frame[label] == value
        return frame[keep]

    # -- drawing ----------------------------------------------------------------------

    def redraw(self) -> None:
        """Move every line to the data in the window and redraw the one figure."""
        counters = [m for m in self.metrics if is_counter(m, self.history.types)]
        gauges = self.history.frame() if len(counters) < len(self.metrics) else None
        rates = self.history.rates() if counters else None
        seen: set[tuple[str, tuple[Any, ...]]] = set()
        relabel: set[str] = set()
        newest = None
        for ax, metric in zip(self.axes, self.metrics, strict=True):
            frame = rates if metric in counters else gauges
            assert frame is not None
            sub = self._select(frame, metric)
            if self._move_lines(ax, metric, sub, seen):
                relabel.add(metric)
            if len(sub):
                last = sub["timestamp"].max()
                newest = last if newest is None else max(newest, last)
            ax.set_title(
                metric + (" (per second)" if metric in counters else ""), fontsize=9, loc="left"
            )
            ax.relim()
            ax.autoscale_view(scalex=False)
        for key in [k for k in self.lines if k not in seen]:
            self.lines.pop(key).remove()  # a series gone from the window
            relabel.add(key[0])
        for ax, metric in zip(self.axes, self.metrics, strict=True):
            if metric not in relabel:  # legends are rebuilt only when the set of lines changes
                continue
            if ax.lines:
                ax.legend(fontsize=7, loc="upper left", frameon=False)
            elif (legend := ax.get_legend()) is not None:
                legend.remove()
        if newest is not None:
            end = mdates.date2num(newest.to_datetime64())
            self.axes[-1].set_xlim(end - self.window / 86400, end)
        self.canvas.draw_idle()
        self.image.value = self._png()
        self.redraws += 1
        self._show_status()

    def _move_lines(
        self, ax: Axes, metric: str, sub: pd.DataFrame, seen: set[tuple[str, tuple[Any, ...]]]
    ) -> bool:
        """``set_data`` on each series' line (made on first sight); True if lines were added."""
        added = False
        if sub.empty:  # e.g. a counter before its second scrape: no rate yet
            return False
        cols = [c for c in sub.columns if c not in _NOT_SERIES and sub[c].notna().any()]
        groups = sub.groupby(cols, observed=True, dropna=False, sort=True) if cols else [((), sub)]
        for name, group in groups:
            parts: tuple[Any, ...] = name if isinstance(name, tuple) else (name,)
            key = (metric, tuple(parts))
            seen.add(key)
            line = self.lines.get(key)
            if line is None:
                label = " ".join(str(p) for p in parts if pd.notna(p)) or metric
                (line,) = ax.plot([], [], linewidth=1.2, label=label)
                self.lines[key] = line
                added = True
            x = mdates.date2num(group["timestamp"].to_numpy("datetime64[us]"))
            line.set_data(x, group["value"].to_numpy(np.float64))
        return added

    def _png(self) -> bytes:
        # The Agg buffer was just rendered by draw_idle: encode it, do not render again.
        width, height = self.canvas.get_width_height(physical=True)
        img = Image.frombuffer(
            "RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1
        )
        out = io.BytesIO()
        img.save(out, format="png", compress_level=1)
        return out.getvalue()

    def _set_state(self, state: str) -> None:
        self.state = state
        self._show_status()

    def _show_status(self) -> None:
        self.status.value = (
            f"{self.state} · redraws {self.redraws} · scrapes {self.scrapes} · "
            f"{self.history.n_scrapes} kept · every {self.effective_interval():g} s · "
            f"window {self.window:g} s · {time.strftime('%H:%M:%S')}"
        )


def _is_sandbox(client: Client) -> bool:
    """Whether the client talks to a local sandbox (loopback URL, or resolved as one)."""
    host = urlsplit(client.base_url).hostname or ""
    return client.source == "sandbox" or host in ("localhost", "127.0.0.1", "::1")


def _loop_running() -> bool:
    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
