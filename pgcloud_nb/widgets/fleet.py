"""The fleet table: every service with its key metrics, filtered, sorted, refreshed, exported."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..frames import services_frame
from ..history import History
from ..jobs import (
    SKIP_RETRY,
    Call,
    ErrorPanel,
    Job,
    StatusLine,
    cancel,
    close_children,
    guarded,
    require_loop,
    run_job,
)
from ..metrics import fleet_snapshot
from ..spec import enum_values
from .fleetview import COLUMNS, TAG_PREFIX, fleet_html, matches, shown_path, write_export

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["FleetTable"]

ALL = "(all)"
# A refresh is one fleet snapshot: the list and the org Prometheus endpoint, 2 requests.
REQUESTS_PER_REFRESH = 2
# An auto-refresh alone never takes more than this share of the key's budget
# (2 requests per 20 s on the real API's 10 per 10 s).
BUDGET_SHARE = 0.1
# Long enough to keep the two scrapes CPU % needs across a pause in the refreshing.
HISTORY_AGE = timedelta(hours=1)


def _clock(stamp: datetime | None) -> str:
    return stamp.strftime("%H:%M:%S UTC") if stamp else "never"


class FleetTable(widgets.VBox):
    """Every service with CPU %, connections, memory % and storage % beside it.

    A refresh is one :func:`~pgcloud_nb.metrics.fleet_snapshot`: 2 requests
    (the list and the org Prometheus endpoint), whatever the size of the fleet,
    run as a job (:func:`pgcloud_nb.jobs.run_job`), so the kernel stays free
    while the API answers, or fails to. A failure shows on one line in
    :attr:`errors`; the table keeps showing the last fleet it had. CPU % needs
    two scrapes: it is blank until the second refresh.

    ``filter`` keeps the rows where a text column (name, id, region, size, tags
    …) holds it; ``state`` keeps one state; ``sort_by``/``ascending`` order the
    rows. ``auto`` refreshes every ``interval`` seconds as a task on the
    kernel's loop, lengthened to stay within :data:`BUDGET_SHARE` of the key's
    budget, skipping a beat when the budget runs low. :meth:`stop` ends the
    auto-refresh and leaves the table showing; :meth:`close` removes it.
    The CSV and Parquet buttons write the current :meth:`view` to ``folder``.
    :attr:`frame` is the whole fleet, numbers as numbers.
    """

    def __init__(self, client: Client, *, interval: float = 30.0, auto: bool = False) -> None:
        self.client = client
        self.interval = interval
        self.history = History(max_age=HISTORY_AGE)
        self.frame: pd.DataFrame = services_frame([])
        self.refreshes = 0
        self.refreshed_at: datetime | None = None
        self.exported: Path | None = None
        self.task: asyncio.Task[None] | None = None  # the auto-refresh
        self.refresh_task: asyncio.Task[None] | None = None
        self._busy = False
        self.filter = widgets.Text(
            placeholder="filter: name, id, region, size, tag…",
            layout=widgets.Layout(width="16em"),
        )
        self.state = widgets.Dropdown(
            options=[ALL, *enum_values("pgStateProperty")],
            value=ALL,
            description="state",
            layout=widgets.Layout(width="12em"),
            style={"description_width": "initial"},
        )
        self.sort_by = widgets.Dropdown(
            options=self._sort_options(),
            value="name",
            description="sort",
            layout=widgets.Layout(width="11em"),
            style={"description_width": "initial"},
        )
        self.ascending = widgets.Checkbox(
            value=True, description="ascending", indent=False, layout=widgets.Layout(width="7em")
        )
        self.refresh_button = widgets.Button(
            icon="refresh", tooltip="reload now (2 requests)", layout=widgets.Layout(width="3em")
        )
        self.auto = widgets.ToggleButton(
            value=False, description="auto", icon="clock-o", layout=widgets.Layout(width="6em")
        )
        # Empty means the notebook's own folder: the field shows that in words, and a
        # folder typed in reads relative to it; the whole path is in the tooltip.
        self.folder = widgets.Text(
            value="",
            placeholder="this notebook's folder",
            description="export to",
            layout=widgets.Layout(width="18em"),
            style={"description_width": "initial"},
        )
        self.folder.observe(lambda _: self._folder_tooltip(), "value")
        self._folder_tooltip()
        self.csv_button = widgets.Button(
            description="CSV", icon="download", tooltip="write the rows shown as CSV"
        )
        self.parquet_button = widgets.Button(
            description="Parquet", icon="download", tooltip="write the rows shown as Parquet"
        )
        for button in (self.csv_button, self.parquet_button):
            button.layout = widgets.Layout(width="7em")
        self.table = widgets.HTML(fleet_html(self.frame, empty="Loading the fleet…"))
        self.status = StatusLine()
        self.errors = ErrorPanel()
        guard = guarded(self.errors)
        for w in (self.filter, self.state, self.sort_by, self.ascending):
            w.observe(guard(lambda _: self.render()), "value")
        self.refresh_button.on_click(guard(lambda _: self.refresh()))
        self.csv_button.on_click(guard(lambda _: self._export_clicked("csv")))
        self.parquet_button.on_click(guard(lambda _: self._export_clicked("parquet")))
        self.auto.observe(guard(lambda ch: self._auto_changed(ch["new"])), "value")
        controls = [self.filter, self.state, self.sort_by, self.ascending]
        actions = [self.refresh_button, self.auto, self.folder, self.csv_button]
        wrap = widgets.Layout(flex_flow="row wrap")
        super().__init__(
            [
                widgets.HBox(controls, layout=wrap),
                widgets.HBox([*actions, self.parquet_button], layout=wrap),
                self.status,
                self.table,
                self.errors,
            ]
        )
        self.add_class("pgcloud-fleet-table")
        self.refresh()
        self.auto.value = auto

    # -- data --

    def refresh(self) -> asyncio.Task[None] | None:
        """Reload the fleet (2 requests) as a job; the task, or None when it already ran.

        Without a running loop (a script, a kernel-less test) it runs to the end
        before returning. A refresh asked for while one runs is not doubled.
        """
        if self.refresh_task is not None and not self.refresh_task.done():
            return self.refresh_task
        self.refresh_task = run_job(self._refresh_job(), self.errors)
        return self.refresh_task

    def _snapshot(self) -> pd.DataFrame:
        return fleet_snapshot(self.client, history=self.history)

    def _refresh_job(self) -> Job[None]:
        if self._busy:  # the auto-refresh and a click met
            return
        self._busy = True
        self.status.set(f"refreshing… · {self._shown_line()}", icon="…")
        try:
            snapshot = yield Call(self._snapshot)
            self.show(snapshot)
        except Exception as exc:  # shown, and the table keeps its last fleet
            self.errors.clear()
            self.errors.show(exc)
            self.status.set(
                f"refresh failed at {_clock(datetime.now(UTC))} · {self._shown_line()}", icon="⚠"
            )
        finally:
            self._busy = False

    def show(self, fleet: pd.DataFrame | list[Any]) -> None:
        """Show ``fleet``: a fleet snapshot frame, or services (list items or dicts)."""
        self.frame = fleet if isinstance(fleet, pd.DataFrame) else services_frame(fleet)
        self.refreshes += 1
        self.refreshed_at = datetime.now(UTC)
        self.errors.clear()  # a good refresh clears the failure before it
        options = self._sort_options()
        if list(self.sort_by.options) != options:
            keep = self.sort_by.value if self.sort_by.value in dict(options).values() else "name"
            self.sort_by.options = options
            self.sort_by.value = keep
        self.render()

    def _sort_options(self) -> list[tuple[str, str]]:
        fixed = [(label, column) for label, column, _ in COLUMNS if column]
        tags = [(f"tag {c.removeprefix(TAG_PREFIX)}", c) for c in self.frame.columns
                if str(c).startswith(TAG_PREFIX)]  # fmt: skip
        return [*fixed, ("created", "createdAt"), *tags]

    def view(self) -> pd.DataFrame:
        """The fleet as shown: filtered, then sorted (every column of :attr:`frame`)."""
        frame = self.frame
        if self.state.value != ALL:
            frame = frame[(frame["state"].astype("string") == self.state.value).fillna(False)]
        needle = self.filter.value.strip()
        if needle:
            frame = frame[matches(frame, needle)]
        if self.sort_by.value in frame.columns:
            frame = frame.sort_values(
                self.sort_by.value,
                ascending=self.ascending.value,
                na_position="last",
                kind="stable",
            )
        return frame

    def render(self) -> None:
        shown = self.view()
        empty = "No service matches." if len(self.frame) else "No services in this organization."
        self.table.value = fleet_html(shown, empty=empty)
        self.status.set(self._shown_line(len(shown)))

    def _shown_line(self, shown: int | None = None) -> str:
        n = len(self.view()) if shown is None else shown
        auto = " · auto-refresh on" if self.auto.value else ""
        return (
            f"{n} of {len(self.frame)} services · as of {_clock(self.refreshed_at)} "
            f"(refresh #{self.refreshes}){auto}"
        )

    # -- export --

    def export(self, fmt: str = "csv", folder: str | Path | None = None) -> Path:
        """Write the rows shown (:meth:`view`, every column) as ``csv`` or ``parquet``.

        The file is ``fleet-<UTC time>.<fmt>`` in ``folder`` (default: the
        ``export to`` field, the notebook's folder when empty); the whole path
        is returned, and shown relative to the notebook's folder. No secret is
        written, no CSV cell runs as a spreadsheet formula, and the file is 0600 (see
        :func:`~pgcloud_nb.widgets.fleetview.export_frame`).
        """
        return self._write(self.view(), fmt, folder)

    def _write(self, rows: pd.DataFrame, fmt: str, folder: str | Path | None) -> Path:
        where = folder if folder is not None else self._folder()
        path = write_export(rows, where, fmt, now=datetime.now(UTC))
        self.exported = path
        return path

    def _folder(self) -> Path:
        return Path(self.folder.value.strip() or ".").expanduser()

    def _folder_tooltip(self) -> None:
        where = self._folder().absolute()
        self.folder.tooltip = f"CSV and Parquet files go to {where} (made if missing)"

    def _export_clicked(self, fmt: str) -> None:
        self.errors.clear()
        rows = self.view()  # once: the count said is the file's, even if a refresh lands
        path = self._write(rows, fmt, None)
        self.status.set(f"wrote {len(rows)} services to {shown_path(path)}", icon="✓")

    # -- auto-refresh --

    def _auto_changed(self, on: bool) -> None:
        cancel(self.task)
        self.task = None
        if not on:
            self.status.set(f"auto-refresh off · {self._shown_line()}")
            return
        try:
            require_loop("auto-refresh")
        except RuntimeError:
            self.auto.value = False
            raise
        self.task = run_job(self._auto_job(), self.errors)

    def _pause(self) -> float:
        return self.client.budget.paced(self.interval, BUDGET_SHARE / REQUESTS_PER_REFRESH)

    def _auto_job(self) -> Job[None]:
        while True:
            yield self._pause()  # a refresh has just run (at the start, or the last beat)
            while not self.client.budget.has_room():
                yield SKIP_RETRY  # waits and the user's own calls come first
            yield from self._refresh_job()

    def stop(self) -> None:
        """Stop the auto-refresh; the table stays, showing the last fleet it had."""
        self.auto.value = False
        cancel(self.task)
        self.task = None

    def close(self) -> None:
        """Stop every refresh, and remove the table and its widgets."""
        cancel(self.task)
        cancel(self.refresh_task)
        close_children(self)
        super().close()
