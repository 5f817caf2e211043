"""The fleet table: the services frame, filtered, sorted and refreshed within budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..frames import services_frame
from ..jobs import (
    ErrorPanel,
    Job,
    StatusLine,
    cancel,
    close_children,
    guarded,
    poll_job,
    require_loop,
    run_job,
)
from ..spec import enum_values

if TYPE_CHECKING:
    import asyncio

    from ..client import Client

__all__ = ["FleetTable"]

ALL = "(all)"
# One list request per refresh; an auto-refresh alone never takes more than this
# share of the key's budget (1 request per 10 s on the real API's 10 per 10 s).
BUDGET_SHARE = 0.1


class FleetTable(widgets.VBox):
    """Every service as a table (:func:`pgcloud_nb.frames.services_frame`).

    ``filter`` matches a substring of any text column (name, region, size, tags
    …); ``state`` keeps one state; ``sort_by``/``ascending`` order the rows.
    ``auto`` refreshes every ``interval`` seconds as a task on the kernel's
    loop, lengthened to stay within :data:`BUDGET_SHARE` of the key's budget,
    and a beat is skipped when the budget runs low (waits and your own calls
    come first). :attr:`frame` is the whole fleet, :meth:`view` what is shown.
    """

    def __init__(self, client: Client, *, interval: float = 30.0, auto: bool = False) -> None:
        self.client = client
        self.interval = interval
        self.frame: pd.DataFrame = services_frame([])
        self.refreshes = 0
        self.task: asyncio.Task[None] | None = None
        self.filter = widgets.Text(
            placeholder="filter: name, region, size, tag…", layout=widgets.Layout(width="18em")
        )
        self.state = widgets.Dropdown(
            options=[ALL, *enum_values("pgStateProperty")],
            value=ALL,
            description="state",
            layout=widgets.Layout(width="14em"),
        )
        self.sort_by = widgets.Dropdown(
            options=list(self.frame.columns),
            value="name",
            description="sort by",
            layout=widgets.Layout(width="16em"),
        )
        self.ascending = widgets.Checkbox(
            value=True, description="ascending", indent=False, layout=widgets.Layout(width="7em")
        )
        self.refresh_button = widgets.Button(
            icon="refresh", tooltip="reload now", layout=widgets.Layout(width="3em")
        )
        self.auto = widgets.ToggleButton(value=False, description="auto-refresh", icon="clock-o")
        self.table = widgets.HTML()
        self.status = StatusLine()
        self.errors = ErrorPanel()
        guard = guarded(self.errors)
        for w in (self.filter, self.state, self.sort_by, self.ascending):
            w.observe(guard(lambda _: self.render()), "value")
        self.refresh_button.on_click(guard(lambda _: self.refresh()))
        self.auto.observe(guard(lambda ch: self._auto_changed(ch["new"])), "value")
        super().__init__(
            [
                widgets.HBox(
                    [
                        self.filter,
                        self.state,
                        self.sort_by,
                        self.ascending,
                        self.refresh_button,
                        self.auto,
                    ]
                ),
                self.status,
                self.table,
                self.errors,
            ]
        )
        self.add_class("pgcloud-fleet-table")
        guard(self.refresh)()
        self.auto.value = auto

    def refresh(self) -> None:
        """Reload the fleet now (one request)."""
        self.show(self.client.list_services())

    def show(self, services: list[Any]) -> None:
        """Replace the fleet with ``services`` (list items or dicts) and redraw."""
        self.frame = services_frame(services)
        self.refreshes += 1
        columns = list(self.frame.columns)
        if list(self.sort_by.options) != columns:
            keep = self.sort_by.value if self.sort_by.value in columns else "name"
            self.sort_by.options = columns
            self.sort_by.value = keep
        self.render()

    def view(self) -> pd.DataFrame:
        """The fleet as shown: filtered, then sorted."""
        frame = self.frame
        if self.state.value != ALL:
            frame = frame[frame["state"].astype("string") == self.state.value]
        needle = self.filter.value.strip().lower()
        if needle:
            text = frame.astype("string").fillna("")
            hit = text.apply(lambda col: col.str.lower().str.contains(needle, regex=False))
            frame = frame[hit.any(axis=1)]
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
        html = shown.drop(columns=["id"]).to_html(
            index=False, na_rep="", border=0, classes="pgcloud-fleet", max_rows=500
        )
        self.table.value = html
        self.status.set(f"{len(shown)} of {len(self.frame)} services · refresh #{self.refreshes}")

    # -- auto-refresh --

    def _auto_changed(self, on: bool) -> None:
        cancel(self.task)
        self.task = None
        if not on:
            return
        try:
            require_loop("auto-refresh")
        except RuntimeError:
            self.auto.value = False
            raise
        self.task = run_job(self._auto_job(), self.errors)

    def _auto_job(self) -> Job[None]:
        yield self.client.budget.paced(self.interval, BUDGET_SHARE)  # refresh() just ran
        yield from poll_job(
            self.client.list_services,
            self.show,
            interval=lambda: self.client.budget.paced(self.interval, BUDGET_SHARE),
            room=self.client.budget.has_room,
            panel=self.errors,
        )

    def close(self) -> None:
        """Stop the auto-refresh, and close the widgets."""
        cancel(self.task)
        close_children(self)
        super().close()
