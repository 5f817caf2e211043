"""LiveChart: the widget, its loop task, and the redraw that keeps one figure current.

How it runs is told in :mod:`pgcloud_nb.charts`; how it looks in
:mod:`~pgcloud_nb.charts.style`, :mod:`~pgcloud_nb.charts.catalogue` and
:mod:`~pgcloud_nb.charts.views`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ipywidgets as widgets
import pandas as pd

from ..history import History
from ..jobs import ErrorPanel, cancel, close_children, guarded, poll_job, require_loop, run_job
from .panels import Panels
from .views import ipympl_available, make_view

if TYPE_CHECKING:
    from ..client import Client

__all__ = [
    "BUDGET_SHARE",
    "DEFAULT_INTERVAL",
    "INTERACTIVE_PIXELS",
    "SANDBOX_INTERVAL",
    "LiveChart",
]

DEFAULT_INTERVAL = 60.0  # the real API's Prometheus data refreshes once a minute
# A PNG frame shrinks with the output area (the image's max-width is 100 %); ipympl's
# canvas keeps the figure's pixel size, and what passes the output area's right edge is
# cut off, legends first. So an interactive figure is laid out for the narrowest output a
# notebook commonly has: 768 px in JupyterLab at a 1,200 px window with its file browser
# open, less ipympl's toolbar beside the canvas.
PNG_WIDTH = 9.0  # inches
INTERACTIVE_PIXELS = 680
SANDBOX_INTERVAL = 2.0
BUDGET_SHARE = 0.2  # at most 2 of the real API's 10 requests per 10 s

Scrape = str | pd.DataFrame


def _ids(services: str | Iterable[Any] | None) -> tuple[str, ...] | None:
    if services is None:
        return None
    if isinstance(services, str):
        return (services,)
    return tuple(s if isinstance(s, str) else str(s.id) for s in services)


class LiveChart(widgets.VBox):
    """Metrics × services over a sliding time window, one panel per metric.

    ``services``: ids (or objects with ``.id``); ``None`` charts every service
    of the org. ``metrics``: Prometheus names. ``where`` keeps only series
    whose labels match (``{"state": "active"}``). ``interval``: seconds between
    scrapes (default: 60 s, or 2 s on a sandbox). ``window``: seconds of
    history shown and kept. ``interactive``: ipympl's canvas with zoom, pan and
    hover values (``True``), or PNG frames (``False``, the default: they need
    nothing but ipywidgets; ipympl's canvas paints in JupyterLab 4.6 since its
    first frame is no longer sent before the browser is ready; ``None`` picks
    ipympl when installed). ``figsize`` (inches, per panel): by default 9 wide
    for PNG frames, which shrink to the output area, and 680 px for ipympl's
    canvas, which does not (see :data:`INTERACTIVE_PIXELS`). ``source`` replaces
    the API with a callable returning Prometheus text or a long frame (tests
    and benchmarks).

    ``redraws`` counts redraws (also shown in the status line); ``history``
    holds the data; ``lines`` maps (metric, service id, (name, labels…)) to
    the line drawing that series.
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
        interactive: bool | None = False,
        source: Callable[[], Scrape] | None = None,
        autostart: bool = True,
        figsize: tuple[float, float] | None = None,
        dpi: int = 96,
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
        self.task: asyncio.Task[None] | None = None
        if interactive is None:
            interactive = ipympl_available()
        if figsize is None:
            figsize = (INTERACTIVE_PIXELS / dpi if interactive else PNG_WIDTH, 2.4)
        self.panels = Panels(self.metrics, self.services, window, figsize, dpi)
        self.figure = self.panels.figure
        self.axes = self.panels.axes
        self.lines = self.panels.lines
        self.view = make_view(self.figure, interactive, self.panels.describe, self.follow)
        self.panels.markers = self.view.interactive

        self.start_button = widgets.Button(description="start", icon="play")
        self.pause_button = widgets.Button(description="pause", icon="pause")
        self.stop_button = widgets.Button(description="stop", icon="stop")
        self.follow_button = widgets.Button(
            description="follow", icon="refresh", tooltip="back to the latest data after a zoom"
        )
        self.status = widgets.Label()
        self.status.add_class("pgcloud-chart-status")
        self.errors = ErrorPanel()
        guard = guarded(self.errors)
        self.start_button.on_click(guard(lambda _: self.start()))
        self.pause_button.on_click(guard(lambda _: self.pause()))
        self.stop_button.on_click(guard(lambda _: self.stop()))
        self.follow_button.on_click(guard(lambda _: self.follow()))
        buttons = [self.start_button, self.pause_button, self.stop_button]
        if self.view.interactive:
            buttons.append(self.follow_button)
        # wraps: a long status line goes under the buttons instead of past the right edge
        bar = widgets.HBox([*buttons, self.status], layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([bar, self.view.widget, self.errors])
        self.add_class("pgcloud-live-chart")
        self.state = "stopped"  # from here on close() has everything to close
        self.redraw()
        if autostart and _loop_running():
            self.start()

    # -- control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start scraping on the kernel's loop: resume after pause, a new run after stop."""
        require_loop("LiveChart.start")
        if self.task is not None and not self.task.done():
            return
        if self.state == "stopped" and self.history.n_scrapes:
            self.history = History(max_age=timedelta(seconds=self.window))
            self.redraw()  # colours stay: the book outlives the run
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
        """Stop scraping and keep what is drawn; :meth:`start` resumes with the same data."""
        cancel(self.task)
        self.task = None
        self._set_state("paused")

    def stop(self) -> None:
        """End the run: no more scrapes, the last picture stays; :meth:`start` begins anew."""
        cancel(self.task)
        self.task = None
        self._set_state("stopped")

    def follow(self) -> None:
        """Let the axes follow the data again (after the reader zoomed or panned)."""
        self.panels.follow()
        self.redraw()

    def close(self) -> None:
        """Stop the task and release the figure; the widget disappears."""
        # getattr: close() also runs from Widget.__del__, after an __init__ that may have
        # failed half-way (a bad argument).
        if getattr(self, "state", "closed") == "closed":
            return
        cancel(self.task)
        self.task = None
        self.state = "closed"
        # Possibly at interpreter exit too, when matplotlib can no longer import what
        # clear() needs: then there is nothing to free.
        with contextlib.suppress(Exception):
            self.view.close()
            self.panels.clear()
        close_children(self)
        self.follow_button.close()  # not a child on the PNG path; its callback holds the chart
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

    def redraw(self) -> None:
        """Move every line to the data in the window and show the one figure again."""
        self.panels.draw(self.history, self._select)
        self.view.show()
        self.redraws += 1
        self._show_status()

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
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
