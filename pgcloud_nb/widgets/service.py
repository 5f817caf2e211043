"""Widgets that work on one service: the picker, the tag editor and the delete button.

Each editor takes a service id, or a :class:`ServicePicker` it then follows:
picking another service reloads the editor. Every request runs as a job of the
widget's :class:`~pgcloud_nb.jobs.JobQueue` (off the kernel's loop, one after
another), so a slow or unreachable API never holds the kernel; ``await
widget.finished()`` waits for them in a notebook. Every action starts by
clearing what the last one reported (:func:`~pgcloud_nb.jobs.action`).
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import (
    Call,
    ErrorPanel,
    Job,
    JobQueue,
    Notice,
    StatusLine,
    action,
    clear_messages,
    close_children,
    guarded,
    wait_job,
)
from ..models import PostgresService, PostgresServiceListItem
from ..spec import prepare_in_background, validate_body
from ..waiters import DEFAULT_TIMEOUT
from .inputs import ErrorLabel, TagRows, body_block, route_errors
from .wording import duplicate_tags, in_words

if TYPE_CHECKING:
    import asyncio

    from ..client import Client

__all__ = ["DeleteButton", "ServicePicker", "ServiceWidget", "TagEditor", "tags_diff"]

_PATCH = "PostgresServicePatchRequest"


class ServicePicker(widgets.VBox):
    """A dropdown of the organization's services, refreshed by its button or :meth:`refresh`.

    ``value`` is the picked service id (``None`` when there is none);
    ``services`` maps ids to the list items of the last refresh.
    """

    def __init__(self, client: Client, *, description: str = "service") -> None:
        self.client = client
        self.services: dict[str, PostgresServiceListItem] = {}
        self.dropdown = widgets.Dropdown(
            description=description, layout=widgets.Layout(width="36em")
        )
        self.refresh_button = widgets.Button(
            icon="refresh", tooltip="reload the list", layout=widgets.Layout(width="3em")
        )
        self.errors = ErrorPanel()
        self.jobs = JobQueue(self.errors)
        self.refresh_button.on_click(guarded(self.errors)(lambda _: self.refresh()))
        super().__init__([widgets.HBox([self.dropdown, self.refresh_button]), self.errors])
        guarded(self.errors)(self.refresh)()

    @property
    def value(self) -> str | None:
        value: str | None = self.dropdown.value
        return value

    @value.setter
    def value(self, service_id: str | None) -> None:
        self.dropdown.value = service_id

    @action()
    def refresh(self) -> None:
        """Reload the list (one request, as a job); keep the selection if it still exists."""
        self.jobs.call(self.client.list_services, self.show)

    async def finished(self) -> None:
        """Wait until the last refresh has answered."""
        await self.jobs.finished()

    def show(self, items: list[PostgresServiceListItem]) -> None:
        """Fill the dropdown from a list the caller fetched."""
        self.services = {s.id: s for s in items}
        current = self.dropdown.value
        self.dropdown.options = [(self._label(s), s.id) for s in items]
        self.dropdown.value = (
            current if current in self.services else (items[0].id if items else None)
        )

    def close(self) -> None:
        self.jobs.cancel()
        close_children(self)
        super().close()

    @staticmethod
    def _label(s: PostgresServiceListItem) -> str:
        state = s.state.value if s.state else "?"
        return f"{s.name} · {state} · {s.size} · {s.region} · {s.id[:8]}"


class ServiceWidget(widgets.VBox):
    """Base of the editors: one service, fixed or followed through a picker.

    Subclasses build their children, then call :meth:`_bind`; :meth:`load` is
    called whenever the service changes.
    """

    def __init__(self, client: Client, service: str | ServicePicker, **kwargs: Any) -> None:
        # The checks use jsonschema, whose import takes seconds: begin it now, in a thread,
        # so that the first edit does not hold the kernel while it finishes.
        prepare_in_background()
        self.client = client
        self.picker = service if isinstance(service, ServicePicker) else None
        self._fixed = service if isinstance(service, str) else None
        self.errors = ErrorPanel()
        self.status = StatusLine()
        self.jobs = JobQueue(self.errors)
        self.guard = guarded(self.errors)
        self._checking = False
        super().__init__(**kwargs)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The widget's last job (None when it ran inline, without a loop)."""
        return self.jobs.task

    async def finished(self) -> None:
        """Wait for every job started so far: ``await editor.finished()`` in a notebook."""
        await self.jobs.finished()

    def check(self) -> list[Any]:
        """Show every problem beside its field; ``[]`` when the changes may be sent."""
        raise NotImplementedError

    def _edited(self) -> None:
        # after a refused click (``_checking``), every edit checks again, so a fixed
        # value loses its message at once
        if self._checking:
            self.check()

    def _checked(self, errors: list[Any], what: str) -> list[Any]:
        if errors:
            self.status.set(f"not sent: {len(errors)} {what}", icon="⚠")
        else:
            self.status.clear()
        return errors

    def _bind(self) -> None:
        if self.picker is not None:
            # an emptied picker (its last service deleted) leaves nothing to load
            self.picker.dropdown.observe(self.guard(self._picked), "value")
        if self._fixed is not None or (self.picker is not None and self.picker.value):
            self.guard(self.load)()

    def _picked(self, change: dict[str, Any]) -> None:
        clear_messages(self)  # what was said was about the service picked before
        if change["new"]:
            self.load()

    @property
    def service_id(self) -> str:
        sid = self._fixed if self.picker is None else self.picker.value
        if not sid:
            raise ValueError("no service picked")
        return sid

    def load(self) -> None:
        """Read the service's current state into the widget (as a job)."""

    def _start(self, job: Job[Any]) -> None:
        self.jobs.start(job)

    def close(self) -> None:
        """Stop any running job, and close the widgets."""
        self.jobs.cancel()
        close_children(self)
        super().close()


def tags_diff(old: dict[str, str | None], new: dict[str, str]) -> list[str]:
    """Lines ``+ k=v`` (added), ``~ k: a → b`` (changed), ``- k=v`` (removed)."""
    lines = [f"+ {k}={v}" for k, v in new.items() if k not in old]
    lines += [f"~ {k}: {old[k]} → {v}" for k, v in new.items() if k in old and old[k] != v]
    lines += [f"- {k}={v}" for k, v in old.items() if k not in new]
    return lines


class TagEditor(ServiceWidget):
    """Add, edit and remove tags, see the merge-patch diff, then send it.

    Tags are a list in the API: a PATCH replaces the whole list (RFC 7396 merge
    patch; docs/api-behaviour.md §4.6), so the body is every tag you keep. ``preview``
    shows the body and the diff; ``apply`` shows them again, validates the body
    against ``PostgresServicePatchRequest`` and sends it. After a refused apply,
    every edit checks the rows again, so a fixed problem loses its message at once.
    """

    def __init__(self, client: Client, service: str | ServicePicker) -> None:
        super().__init__(client, service)
        self.current: dict[str, str | None] = {}
        self._checking = False
        self.rows = TagRows()
        self.rows.on_change(self.guard(self._edited))
        self.preview_button = widgets.Button(description="Preview diff", icon="eye")
        self.apply_button = widgets.Button(
            description="Apply tags", button_style="primary", icon="check"
        )
        self.diff = Notice()
        self.form_error = ErrorLabel()
        self.preview_button.on_click(self.guard(lambda _: self.preview()))
        self.apply_button.on_click(self.guard(lambda _: self.apply()))
        self.children = [
            widgets.HTML("<b>Tags</b>"),
            self.rows,
            widgets.HBox([self.preview_button, self.apply_button, self.status]),
            self.form_error,
            self.diff,
            self.errors,
        ]
        self._bind()

    def load(self) -> None:
        self.jobs.call(functools.partial(self.client.get_service, self.service_id), self._show)

    def _show(self, svc: PostgresService) -> None:
        self.current = svc.tags_dict
        self._checking = False
        self.rows.set_tags(self.current)
        self.diff.value = ""

    def patch(self) -> dict[str, Any]:
        """The merge-patch body for the tags as edited."""
        return {"tags": self.rows.payload()}

    @action()
    def preview(self) -> list[str]:
        """Show (and return) the diff; ``[]`` when nothing changed."""
        body = self.patch()
        lines = tags_diff(self.current, self.rows.as_dict())
        shown = "\n".join(lines) or "(no changes)"
        self.diff.value = f"<pre class='pgcloud-diff'>{html.escape(shown)}</pre>" + body_block(body)
        return lines

    def check(self) -> list[Any]:
        """Show every problem with the rows beside it (the spec's, and keys given twice)."""
        body = self.patch()
        errors = in_words(validate_body(_PATCH, body), body, _PATCH) + duplicate_tags(body["tags"])
        route_errors(errors, {"tags": self.form_error, **self.rows.error_labels()}, self.form_error)
        return self._checked(errors, "problem(s)")

    @action()
    def apply(self) -> None:
        """Validate and send the tags (one PATCH, as a job)."""
        lines = self.preview()
        if self.check():
            self._checking = True
            return
        self._checking = False
        if not lines:
            self.status.set("no changes to send", icon="·")
            return
        self._start(self._apply_job(self.service_id, self.patch()["tags"], len(lines)))

    def _apply_job(self, service_id: str, tags: list[dict[str, str]], changes: int) -> Job[None]:
        self.status.set("sending…", icon="…")
        call = functools.partial(self.client.update_service, service_id, tags=tags)
        svc: PostgresService = yield Call(call)
        self.current = svc.tags_dict
        self.status.set(f"tags updated ({changes} change(s))", icon="✓")


class DeleteButton(ServiceWidget):
    """Delete a service after its name is typed into ``confirm``; waits until it is gone.

    A wrong name sends nothing. After the delete, ``status`` follows the service
    to its 404 (as a task on the kernel's loop) and the picker, if any, reloads.
    """

    def __init__(
        self, client: Client, service: str | ServicePicker, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, service)
        self.timeout = timeout
        self.name: str | None = None
        self.prompt = widgets.HTML()
        self.confirm = widgets.Text(placeholder="type the service name to confirm")
        self.button = widgets.Button(description="Delete", button_style="danger", icon="trash")
        self.button.on_click(self.guard(lambda _: self.delete()))
        self.children = [
            self.prompt,
            widgets.HBox([self.confirm, self.button]),
            self.status,
            self.errors,
        ]
        self._bind()

    def load(self) -> None:
        cached = self.picker.services.get(self.service_id) if self.picker else None
        if cached is not None:
            self._named(self.service_id, cached.name)
        else:
            sid = self.service_id
            call = functools.partial(self.client.get_service, sid)
            self.jobs.call(call, lambda svc: self._named(sid, svc.name))

    def _named(self, service_id: str, name: str | None) -> None:
        self.name = name
        self.prompt.value = (
            f"Delete <b>{html.escape(name or '')}</b> "
            f"(<code>{service_id}</code>)? Type its name to confirm."
        )
        self.confirm.value = ""

    @action()
    def delete(self) -> None:
        """Delete if the confirmation matches the name; otherwise do nothing but say so."""
        if self.name is None:
            self.load()  # a job: the delete below waits for it
        self.button.disabled = True
        self._start(self._delete_job(self.service_id, self.confirm.value.strip()))

    def _delete_job(self, service_id: str, typed: str) -> Job[None]:
        try:
            if typed != self.name:
                self.errors.note(f"the name does not match {self.name!r}: nothing was deleted")
                self.status.set("not deleted", icon="⚠")
                return
            self.status.set("deleting…", icon="…")
            yield Call(functools.partial(self.client.delete_service, service_id))
            yield from wait_job(
                self.client,
                service_id,
                None,
                status=self.status,
                timeout=self.timeout,
                name=self.name,
            )
            if self.picker is not None:
                said = self.status.value  # the picker moves on: keep saying what was done
                self.picker.show((yield Call(self.client.list_services)))
                self.status.value = said
        finally:
            self.button.disabled = False
