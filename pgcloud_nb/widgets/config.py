"""The config editor: running, pending-restart and proposed pgConfig apart, a dry
run, a PATCH of the changed keys only, the API's ``message``, and a restart that
waits for ``running``.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import MUTED_COLOR, WARN_COLOR, Call, Job, Notice, action, wait_job
from ..models import PostgresInstanceConfig, PostgresInstanceUpdateConfigResponse
from ..pgparams import PG_DEFAULTS
from ..spec import FieldError, pg_config_keys, validate_body
from ..waiters import DEFAULT_TIMEOUT
from .inputs import ErrorLabel, body_block, config_value, route_errors
from .service import ServicePicker, ServiceWidget
from .wording import config_problems, in_words

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["ConfigEditor", "pending_restart"]

# What waits for a restart, per service: key → (the value that runs, the value written).
# The API does not say what runs (docs/api-behaviour.md §8.1: GET shows what was set), only
# which written keys need a restart (§8.3); so this process remembers each write's answer
# until a restart of that service by an editor completes.
_PENDING: dict[str, dict[str, tuple[str | None, str]]] = {}
_RESTART_KEYS = re.compile(r"take effect:\s*([\w\s,]+?)\.(?:\s|$)")


def pending_restart(service_id: str) -> dict[str, tuple[str | None, str]]:
    """Keys written to ``service_id`` that wait for a restart: key → (running, written).

    ``running`` is None when the key was at its default before the write.
    """
    return dict(_PENDING.get(service_id, {}))


def _restart_keys(message: str | None) -> list[str]:
    found = _RESTART_KEYS.search(message or "")
    return [k.strip() for k in found[1].split(",") if k.strip()] if found else []


def _hint(err: FieldError, value: Any) -> FieldError:
    # The spec's own examples send special negative values (-1) as strings.
    if "minimum" in err.message and isinstance(value, int | float) and value < 0:
        return FieldError(err.field, f'{err.message}; to send it as text, quote it: "{value}"')
    return err


class ConfigEditor(ServiceWidget):
    """Edit the 31 pgConfig keys of the spec, one row each: key, running, pending
    restart, proposed, error.

    ``running`` is what GET …/config returns (only user-set keys, as strings;
    docs/api-behaviour.md §8.1), PostgreSQL's default in grey where the key is
    unset; a key whose last write asked for a restart shows the value from
    before the write as running and the written one as pending, until the
    editor's restart completes (:func:`pending_restart`). A proposed value that
    differs from the set one is a change; values are read as ``config patch
    --set`` does (``200`` an integer, ``"-1"`` a string, ``64MB`` text), then
    checked by the spec's ``pgConfig`` schema and by the kind of the parameter
    (``max_connections=abc`` is refused). An emptied field is not a change:
    PATCH cannot unset a key.

    ``dry_run`` shows the diff and the exact body; ``apply`` sends a PATCH of
    the changed keys only and shows the API's ``message``; when that asks for a
    restart, ``restart_button`` restarts and follows the service to ``running``.
    Each starts by clearing what the last one showed; after a refused one, every
    edit checks the values again.
    """

    def __init__(
        self, client: Client, service: str | ServicePicker, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, service)
        self.timeout = timeout
        self.current: dict[str, str] = {}  # what GET …/config answered: the keys set
        self.response: PostgresInstanceUpdateConfigResponse | None = None
        self.proposed: dict[str, widgets.Text] = {}
        self.labels: dict[str, ErrorLabel] = {}
        self._checking = False
        self._running_cells: dict[str, widgets.HTML] = {}
        self._pending_cells: dict[str, widgets.HTML] = {}
        heads = ("parameter", "running", "pending restart", "proposed", "")
        cells: list[widgets.Widget] = [widgets.HTML(f"<b>{h}</b>") for h in heads]
        for key, schema in pg_config_keys().items():
            self._running_cells[key] = widgets.HTML("")
            self._pending_cells[key] = widgets.HTML("")
            self.proposed[key] = widgets.Text(
                placeholder=str(schema.get("example", "")), layout=widgets.Layout(width="12em")
            )
            self.proposed[key].observe(self.guard(lambda _: self._edited()), "value")
            self.labels[key] = ErrorLabel()
            hint = schema.get("enum") or schema.get("description", "")
            cells += [
                widgets.HTML(f"<code title='{html.escape(str(hint))}'>{key}</code>"),
                self._running_cells[key],
                self._pending_cells[key],
                self.proposed[key],
                self.labels[key],
            ]
        self.grid = widgets.GridBox(
            cells,
            layout=widgets.Layout(
                grid_template_columns="18em 8em 8em 13em auto", max_height="24em", overflow="auto"
            ),
        )
        self.dry_run_button = widgets.Button(description="Dry run", icon="eye")
        self.apply_button = widgets.Button(
            description="Apply (PATCH)", button_style="primary", icon="check"
        )
        self.restart_button = widgets.Button(
            description="Restart", button_style="warning", icon="refresh", disabled=True
        )
        self.diff = Notice()
        self.message = Notice()
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
        """Read the set keys (one GET, as a job) into the running/pending/proposed columns."""
        self.jobs.call(functools.partial(self.client.get_config, self.service_id), self._show)

    def _show(self, config: PostgresInstanceConfig) -> None:
        self.current = {k: str(v) for k, v in config.pg_config.items()}
        pending = _PENDING.get(self.service_id, {})
        for key, cell in self._running_cells.items():
            running = pending[key][0] if key in pending else self.current.get(key)
            cell.value = self._cell(key, running)
            waiting = pending[key][1] if key in pending else ""
            self._pending_cells[key].value = (
                f"<span style='color:{WARN_COLOR}' title='written; takes effect after a "
                f"restart'>{html.escape(waiting)}</span>"
                if waiting
                else ""
            )
            self.proposed[key].value = self.current.get(key, "")
        self._checking = False
        for label in self.labels.values():
            label.clear()
        self.restart_button.disabled = not pending

    @staticmethod
    def _cell(key: str, running: str | None) -> str:
        if running is not None:
            return html.escape(running)
        default = PG_DEFAULTS.get(key, "")
        return (
            f"<i style='color:{MUTED_COLOR}' title=\"PostgreSQL's default, not a reading of "
            f'the server">{html.escape(default)}</i>'
        )

    def changes(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The changed keys with their typed values, and every problem with them."""
        changed = {
            key: config_value(box.value)
            for key, box in self.proposed.items()
            if box.value.strip() and box.value.strip() != self.current.get(key, "")
        }
        errors = validate_body("pgConfig", changed) if changed else []
        errors = [_hint(err, changed.get(err.field)) for err in errors]
        return changed, in_words(errors, changed, "pgConfig") + config_problems(changed)

    def check(self) -> list[FieldError]:
        """Show each problem beside its key; ``[]`` when the changes may be sent."""
        _, errors = self.changes()
        route_errors(errors, self.labels, self.form_error)
        return self._checked(errors, "invalid value(s)")

    @action()
    def dry_run(self) -> dict[str, Any]:
        """Validate and show the diff and the PATCH body; send nothing. Returns the body."""
        changed, _ = self.changes()
        self._checking = bool(self.check())
        rows = "".join(
            f"<tr><td><code>{k}</code></td><td>{html.escape(self.current.get(k, '(default)'))}"
            f"</td><td>→</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in changed.items()
        )
        body = {"pgConfig": changed, "pgBouncerConfig": {}}
        self.diff.value = (
            f"<table class='pgcloud-diff'>{rows}</table>" if rows else "<i>no changes</i>"
        ) + body_block(body)
        return body

    @action()
    def apply(self) -> None:
        """PATCH only the changed keys (after a dry run), as a job; show the API's message."""
        body = self.dry_run()
        if self._checking:  # the dry run found problems: they are shown, nothing is sent
            return
        if not body["pgConfig"]:
            self.status.set("no changes to send", icon="·")
            return
        self._start(self._apply_job(self.service_id, body["pgConfig"]))

    def _apply_job(self, service_id: str, changed: dict[str, Any]) -> Job[None]:
        self.status.set("sending…", icon="…")
        before = dict(self.current)
        call = functools.partial(self.client.patch_config, service_id, pg_config=changed)
        self.response = yield Call(call)
        assert self.response is not None
        pending = _PENDING.setdefault(service_id, {})
        for key in _restart_keys(self.response.message):
            running = pending[key][0] if key in pending else before.get(key)
            pending[key] = (running, str(self.response.pg_config.get(key, changed.get(key))))
        text = self.response.message or "applied; no restart needed"
        self.message.value = f"<div class='pgcloud-api-message'>{html.escape(text)}</div>"
        self.status.set(f"applied {len(changed)} key(s)", icon="✓")
        self._show((yield Call(functools.partial(self.client.get_config, service_id))))
        self.restart_button.disabled = not (pending or self.response.restart_required)

    @action()
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
            _PENDING.pop(service_id, None)  # what was written now runs
            self._show((yield Call(functools.partial(self.client.get_config, service_id))))
        finally:
            self.restart_button.disabled = ok
