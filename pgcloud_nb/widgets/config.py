"""The config editor: current against proposed pgConfig, a dry run, a PATCH of the
changed keys only, the API's ``message``, and a restart that waits for ``running``.
"""

from __future__ import annotations

import functools
import html
import json
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import Call, Job, wait_job
from ..models import PostgresInstanceUpdateConfigResponse
from ..spec import FieldError, pg_config_keys, validate_body
from ..waiters import DEFAULT_TIMEOUT
from .inputs import ErrorLabel, body_block, config_value, route_errors
from .service import ServicePicker, ServiceWidget

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["ConfigEditor"]


def _hint(err: FieldError, value: Any) -> FieldError:
    # The spec's own examples send special negative values (-1) as strings.
    if "minimum" in err.message and isinstance(value, int | float) and value < 0:
        return FieldError(err.field, f'{err.message}; to send it as text, quote it: "{value}"')
    return err


class ConfigEditor(ServiceWidget):
    """Edit the 31 pgConfig keys of the spec, one row each: key, current, proposed, error.

    ``current`` is what GET …/config returns (only user-set keys, as strings;
    docs/api-behaviour.md §8.1). A proposed value that differs from the current one is a
    change; values are read as ``config patch --set`` does (``200`` an integer,
    ``"-1"`` a string, ``64MB`` text), then validated by the spec's ``pgConfig``
    schema. An emptied field is not a change: PATCH cannot unset a key.

    ``dry_run`` shows the diff and the exact body; ``apply`` sends a PATCH of
    the changed keys only and shows the API's ``message``; when that asks for a
    restart, ``restart_button`` restarts and follows the service to ``running``.
    """

    def __init__(
        self, client: Client, service: str | ServicePicker, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, service)
        self.timeout = timeout
        self.current: dict[str, str] = {}
        self.response: PostgresInstanceUpdateConfigResponse | None = None
        self.proposed: dict[str, widgets.Text] = {}
        self.labels: dict[str, ErrorLabel] = {}
        self._current_cells: dict[str, widgets.Label] = {}
        cells: list[widgets.Widget] = [
            widgets.HTML(f"<b>{h}</b>") for h in ("parameter", "current", "proposed", "")
        ]
        for key, schema in pg_config_keys().items():
            self._current_cells[key] = widgets.Label("")
            self.proposed[key] = widgets.Text(
                placeholder=str(schema.get("example", "")), layout=widgets.Layout(width="12em")
            )
            self.labels[key] = ErrorLabel()
            hint = schema.get("enum") or schema.get("description", "")
            cells += [
                widgets.HTML(f"<code title='{html.escape(str(hint))}'>{key}</code>"),
                self._current_cells[key],
                self.proposed[key],
                self.labels[key],
            ]
        self.grid = widgets.GridBox(
            cells,
            layout=widgets.Layout(
                grid_template_columns="18em 8em 13em auto", max_height="24em", overflow="auto"
            ),
        )
        self.dry_run_button = widgets.Button(description="Dry run", icon="eye")
        self.apply_button = widgets.Button(
            description="Apply (PATCH)", button_style="primary", icon="check"
        )
        self.restart_button = widgets.Button(
            description="Restart", button_style="warning", icon="refresh", disabled=True
        )
        self.diff = widgets.HTML()
        self.message = widgets.HTML()
        self.form_error = ErrorLabel()
        self.dry_run_button.on_click(self.guard(lambda _: self.dry_run()))
        self.apply_button.on_click(self.guard(lambda _: self.apply()))
        self.restart_button.on_click(self.guard(lambda _: self.restart()))
        self.children = [
            widgets.HTML("<b>pgConfig</b>"),
            self.grid,
            widgets.HBox(
                [self.dry_run_button, self.apply_button, self.restart_button, self.status]
            ),
            self.form_error,
            self.diff,
            self.message,
            self.errors,
        ]
        self.add_class("pgcloud-config-editor")
        self._bind()

    def set(self, **values: Any) -> None:
        """Type proposed values: ``editor.set(max_connections=200, work_mem="8MB")``."""
        for key, value in values.items():
            if key not in self.proposed:
                raise KeyError(f"{key!r} is not a pgConfig key of the spec")
            self.proposed[key].value = value if isinstance(value, str) else json.dumps(value)

    def load(self) -> None:
        config = self.client.get_config(self.service_id)
        self.current = {k: str(v) for k, v in config.pg_config.items()}
        for key, cell in self._current_cells.items():
            cell.value = self.current.get(key, "")
            self.proposed[key].value = self.current.get(key, "")
        for label in self.labels.values():
            label.set([])
        self.diff.value = ""

    def changes(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The changed keys with their typed values, and what the spec says about them."""
        changed = {
            key: config_value(box.value)
            for key, box in self.proposed.items()
            if box.value.strip() and box.value.strip() != self.current.get(key, "")
        }
        errors = validate_body("pgConfig", changed) if changed else []
        return changed, [_hint(err, changed.get(err.field)) for err in errors]

    def dry_run(self) -> dict[str, Any]:
        """Validate and show the diff and the PATCH body; send nothing. Returns the body."""
        changed, errors = self.changes()
        route_errors(errors, self.labels, self.form_error)
        rows = "".join(
            f"<tr><td><code>{k}</code></td><td>{html.escape(self.current.get(k, '(default)'))}"
            f"</td><td>→</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in changed.items()
        )
        body = {"pgConfig": changed, "pgBouncerConfig": {}}
        self.diff.value = (
            f"<table class='pgcloud-diff'>{rows}</table>" if rows else "<i>no changes</i>"
        ) + body_block(body)
        if errors:
            self.status.set(f"{len(errors)} invalid value(s)", icon="⚠")
        return body

    def apply(self) -> None:
        """PATCH only the changed keys (after a dry run); show the API's message."""
        self.errors.clear()
        body = self.dry_run()
        _, errors = self.changes()
        if errors:
            self.status.set(f"not sent: {len(errors)} invalid value(s)", icon="⚠")
            return
        if not body["pgConfig"]:
            self.status.set("no changes to send", icon="·")
            return
        self.response = self.client.patch_config(self.service_id, pg_config=body["pgConfig"])
        text = self.response.message or "applied; no restart needed"
        self.message.value = f"<div class='pgcloud-api-message'>{html.escape(text)}</div>"
        self.restart_button.disabled = not self.response.restart_required
        self.status.set(f"applied {len(body['pgConfig'])} key(s)", icon="✓")
        self.load()

    def restart(self) -> None:
        """Restart the service and follow it to ``running`` (a task on the kernel's loop)."""
        self.restart_button.disabled = True
        self._start(self._restart_job(self.service_id))

    def _restart_job(self, service_id: str) -> Job[None]:
        ok = False
        try:
            self.status.set("restarting…", icon="…")
            yield Call(functools.partial(self.client.restart, service_id))
            yield from wait_job(
                self.client, service_id, "running", status=self.status, timeout=self.timeout
            )
            ok = True
        finally:
            self.restart_button.disabled = ok
