"""LiveChart: Prometheus metrics of one or more services, redrawn as they come in.

>>> from pgcloud_nb.charts import LiveChart
>>> chart = LiveChart(pg, [svc.id], ["PostgresServer_ActiveConnections",
...                                  "PostgresServer_TransactionsCommitted_Total"])
>>> chart                      # start / pause / stop; chart.close() removes it

How it runs, and why:

- **An asyncio task on the kernel's loop**, not a thread: output from threads
  is lost under ipykernel 7. Only the blocking HTTP read goes to the loop's
  executor (see :mod:`pgcloud_nb.jobs`); parsing and drawing run on the loop.
  Without a running loop (a plain test or script), call
  :meth:`LiveChart.update` for one beat.
- **One figure, reused**: lines are created once per series, then moved with
  ``set_data``. The figure is a plain :class:`matplotlib.figure.Figure`
  outside pyplot, shown through ipympl's canvas widget (zoom, pan, a hover
  label with the value) when ipympl is installed, else as PNG frames in an
  ``ipywidgets.Image`` (:mod:`~pgcloud_nb.charts.views`).
- **Readable**: a panel per metric titled in words, with its unit on the
  y-axis (MiB, %, per second…; :mod:`~pgcloud_nb.charts.catalogue`) and the
  Prometheus name beside the title; a colour per service that never changes
  while the chart lives; no background, so both JupyterLab themes show it
  (:mod:`~pgcloud_nb.charts.style`). The time axis starts at the first sample
  and grows until it spans the window.
- **Stop keeps the picture**: :meth:`LiveChart.pause` and
  :meth:`LiveChart.stop` end the scraping and leave the last frame showing
  (start after stop begins a new run, with the same colours); only
  :meth:`LiveChart.close` removes the widget.
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

from .catalogue import CATALOGUE, MetricInfo
from .live import BUDGET_SHARE, DEFAULT_INTERVAL, SANDBOX_INTERVAL, LiveChart

__all__ = [
    "BUDGET_SHARE",
    "CATALOGUE",
    "DEFAULT_INTERVAL",
    "SANDBOX_INTERVAL",
    "LiveChart",
    "MetricInfo",
]
