"""The create form: fields from the spec's enums, validated by the spec, progress to
``running``, and credentials that are written to private files but never shown.

Problems are said in a person's words (:mod:`pgcloud_nb.widgets.wording`) and
checked again at every edit once a click has found one, so a fixed field loses
its error at once. A form that created its service stays done: its button is
disabled until :meth:`CreateForm.reset`, so a second click cannot make a second
service of the same name.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import (
    Call,
    ErrorPanel,
    Job,
    JobQueue,
    StatusLine,
    action,
    close_children,
    guarded,
    wait_job,
)
from ..models import PostgresService, PostgresServiceListItem
from ..regions import REGIONS, known
from ..spec import FieldError, enum_values, prepare_in_background, validate_body
from ..waiters import DEFAULT_TIMEOUT
from .credentials import CredentialsBox
from .inputs import (
    ErrorLabel,
    TagRows,
    beside,
    config_placeholder,
    families,
    family_label,
    parse_config_text,
    route_errors,
)
from .wording import config_problems, duplicate_tags, in_words, region_problems

if TYPE_CHECKING:
    import asyncio

    import psycopg

    from ..client import Client

__all__ = ["REGION_SUGGESTIONS", "CreateForm"]

# The regions offered, per provider: the package's one list (pgcloud_nb.regions), which the
# sandbox enforces too. The form refuses others, as the API does with a 400
# (docs/api-behaviour.md §11.2); ``regions=`` adds more (a region the list lacks).
REGION_SUGGESTIONS: dict[str, tuple[str, ...]] = REGIONS
_POST = "PostgresServicePostRequest"
_PREFERRED_FAMILY = {"aws": "r8gd"}  # the docs' own examples use r8gd.large
_WIDE = widgets.Layout(width="30em")
_AUTO = widgets.Layout(width="auto")


class CreateForm(widgets.VBox):
    """A form that creates a service and follows it to ``running``.

    Fill it by setting ``.value`` on its fields (``name``, ``provider``,
    ``region``, ``family``, ``size``, ``version``, ``ha_type``, ``tags``,
    ``pg_config``) or by hand, then click ``submit``. The body is validated
    against the spec (and the known regions, and each ``pgConfig`` value against
    its parameter's kind) first; errors appear beside their fields and nothing
    is sent. A taken name is warned about, and sent only on a second click.
    Then ``status`` follows the service to ``running`` (a task on the kernel's
    loop; see :mod:`pgcloud_nb.jobs`); the form stays done until :meth:`reset`.

    ``tags`` are the rows the form starts with (and returns to on reset): a
    notebook passes its run's tags, so its clean-up cell finds what the form made.

    The create response holds the only copy of the password the API will ever
    send. The form keeps it in :attr:`service` (masked ``SecretStr``) and never
    displays it: instead it offers to write it to a mode-0600 file or to
    ``.env``, or to open a psycopg connection (:attr:`connection`). Files written
    are listed in :attr:`credential_files`; :meth:`remove_credentials` takes them back.
    """

    def __init__(
        self,
        client: Client,
        *,
        provider: str = "aws",
        env_file: str | os.PathLike[str] = ".env",
        timeout: float = DEFAULT_TIMEOUT,
        tags: Mapping[str, str] | None = None,
        regions: Iterable[str] = (),
    ) -> None:
        # The checks use jsonschema, whose import takes seconds: begin it now, in a thread,
        # so that the first edit does not hold the kernel while it finishes.
        prepare_in_background()
        self.client = client
        self.env_file = env_file
        self.timeout = timeout
        self.default_tags = dict(tags or {})
        self.extra_regions = tuple(regions)
        self.service: PostgresService | None = None  # the create response: secrets inside
        self.result: PostgresService | None = None  # the running service (no secrets)
        self.existing: dict[str, PostgresServiceListItem] = {}  # name → a service of that name
        self._checking = False  # after a refused click, every edit checks the form again
        self._confirmed_name: str | None = None  # a taken name the person chose to reuse

        style = {"description_width": "8em"}
        self.name = widgets.Text(
            description="name", placeholder="my postgres", style=style, layout=_WIDE
        )
        self.provider = widgets.Dropdown(
            description="provider", style=style, options=enum_values("pgProvider"), value=provider
        )
        self.region = widgets.Combobox(
            description="region",
            style=style,
            layout=_WIDE,
            ensure_option=False,
            placeholder="pick a region",
        )
        self.family = widgets.Dropdown(description="size family", style=style, layout=_WIDE)
        self.size = widgets.Dropdown(description="size", style=style, layout=_WIDE)
        self.version = widgets.Dropdown(
            description="postgres", style=style, options=enum_values("pgVersion")
        )
        self.ha_type = widgets.ToggleButtons(
            description="HA", style=style, options=enum_values("pgHaType"), value="none"
        )
        self.tags = TagRows(self.default_tags)
        self.pg_config = widgets.Textarea(
            description="pgConfig",
            style=style,
            layout=widgets.Layout(width="32em", height="5em"),
            placeholder=f"optional, key=value per line, e.g.\n{config_placeholder()}",
        )
        self.submit = widgets.Button(
            description="Create service", button_style="primary", icon="plus", layout=_AUTO
        )
        self.reset_button = widgets.Button(
            description="New form", icon="undo", layout=widgets.Layout(width="auto", display="none")
        )
        self.status = StatusLine()
        self.errors = ErrorPanel()
        self.jobs = JobQueue(self.errors)

        fields = "name provider region size postgresVersion haType tags pgConfig"
        self.labels = {k: ErrorLabel() for k in fields.split()}
        self.form_error = ErrorLabel()
        self.after = CredentialsBox(self._created, client.connect_service, env_file, self.errors)
        box = self.after  # its fields, as the form's own (they sit in the form)
        self.credentials_path, self.credentials_status = box.path, box.status
        self.write_file, self.write_env = box.write_file, box.write_env
        self.open_connection = box.open_connection
        # Files the form wrote credentials to: path → the variable names written.
        self.credential_files: dict[Path, list[str]] = box.files

        guard = guarded(self.errors)
        self.provider.observe(guard(lambda _: self._provider_changed()), "value")
        self.family.observe(guard(lambda _: self._family_changed()), "value")
        for field in (self.name, self.region, self.size, self.version, self.ha_type):
            field.observe(guard(lambda _: self._edited()), "value")
        self.pg_config.observe(guard(lambda _: self._edited()), "value")
        self.tags.on_change(guard(self._edited))
        self.submit.on_click(guard(lambda _: self.create()))
        self.reset_button.on_click(guard(lambda _: self.reset()))
        self._provider_changed()

        lab = self.labels
        super().__init__(
            [
                widgets.HTML("<h4 style='margin:0'>New Postgres service</h4>"),
                beside(self.name, lab["name"]),
                beside(self.provider, lab["provider"]),
                beside(self.region, lab["region"]),
                self.family,
                beside(self.size, lab["size"]),
                beside(self.version, lab["postgresVersion"]),
                beside(self.ha_type, lab["haType"]),
                widgets.HBox(
                    [
                        widgets.Label("tags", layout=widgets.Layout(width="8em")),
                        self.tags,
                        lab["tags"],
                    ]
                ),
                beside(self.pg_config, lab["pgConfig"]),
                widgets.HBox([self.submit, self.reset_button, self.status]),
                self.form_error,
                self.after,
                self.errors,
            ]
        )
        self.add_class("pgcloud-create-form")
        self.load_names()

    # -- what the form knows --

    def load_names(self) -> None:
        """Read the organization's services (one request, as a job): their names are taken."""
        self.jobs.call(self.client.list_services, self._names_loaded)

    def _names_loaded(self, items: list[PostgresServiceListItem]) -> None:
        self.existing = {s.name: s for s in items if s.name and s.state != "deleting"}
        self._edited()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The form's last job (a create and its wait), None when it ran inline."""
        return self.jobs.task

    async def finished(self) -> None:
        """Wait for the form's jobs: ``await form.finished()`` in a notebook cell."""
        await self.jobs.finished()

    # -- dependent fields --

    def _provider_changed(self) -> None:
        provider = self.provider.value
        self.region.options = (*known(provider), *self.extra_regions)
        groups = families(provider)
        self.family.options = [(family_label(f, s), f) for f, s in groups.items()]
        preferred = _PREFERRED_FAMILY.get(provider)
        if groups:
            self.family.value = preferred if preferred in groups else next(iter(groups))
        self._family_changed()

    def _family_changed(self) -> None:
        sizes = families(self.provider.value).get(self.family.value or "", [])
        self.size.options = [(s.label, s.name) for s in sizes]
        if sizes:
            # the smallest size with 2+ vCPU is a sensible first service
            self.size.value = next((s.name for s in sizes if s.vcpus >= 2), sizes[0].name)

    def _edited(self) -> None:
        if self._checking and self.service is None:
            self.validate()

    # -- the body --

    def body(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The POST body as the form stands, and every problem with it, in a person's words."""
        body: dict[str, Any] = {
            "name": self.name.value.strip(),
            "provider": self.provider.value,
            "size": self.size.value,
            "postgresVersion": self.version.value,
            "haType": self.ha_type.value,
        }
        if region := self.region.value.strip():  # empty: the spec says "is required"
            body["region"] = region
        if tags := self.tags.payload():
            body["tags"] = tags
        config, errors = parse_config_text(self.pg_config.value)
        if config:
            body["pgConfig"] = config
        if body["size"] is None:
            del body["size"]
        found = in_words(validate_body("PostgresServicePostRequest", body), body, _POST)
        found += region_problems(body, self.extra_regions) + duplicate_tags(body.get("tags", []))
        found += config_problems(config, prefix="pgConfig.")
        return body, errors + found

    def validate(self) -> list[FieldError]:
        """Check the form and show each error beside its field; ``[]`` when it may be sent.

        A name that an existing service has is shown too, as a warning that does
        not stop the send.
        """
        _, errors = self.body()
        route_errors(errors, {**self.labels, **self.tags.error_labels()}, self.form_error)
        taken = self.existing.get(self.name.value.strip())
        if taken is not None and not self.labels["name"].text:
            state = taken.state.value if taken.state else "?"
            self.labels["name"].set(
                [f"a service named {taken.name!r} exists ({state}, id {taken.id})"], tone="warn"
            )
        if not errors and self._checking:
            self.status.clear()
        elif errors:
            self.status.set(f"not sent: {len(errors)} field(s) to fix", icon="⚠")
        return errors

    # -- actions --

    @action()
    def create(self) -> None:
        """Validate, then create and follow the service to ``running`` (the submit button)."""
        if self.service is not None:
            self.status.set(
                f"this form made {self.service.name!r} already: click “New form” for another",
                icon="⚠",
            )
            return
        if self.validate():
            self._checking = True
            return
        self._checking = False
        body, _ = self.body()
        if body["name"] in self.existing and self._confirmed_name != body["name"]:
            self._confirmed_name = body["name"]
            self.status.set(
                "not sent: that name is taken; click Create again to make a second service "
                "with the same name",
                icon="⚠",
            )
            return
        self.submit.disabled = True
        self.jobs.start(self._create_job(body))

    def _create_job(self, body: dict[str, Any]) -> Job[None]:
        created = False
        try:
            self.status.set(f"creating {body['name']!r}…", icon="…")
            call = functools.partial(
                self.client.create_service,
                name=body["name"],
                region=body["region"],
                size=body["size"],
                provider=body["provider"],
                postgres_version=body.get("postgresVersion"),
                ha_type=body.get("haType"),
                tags=body.get("tags"),
                pg_config=body.get("pgConfig"),
            )
            self.service = yield Call(call)
            assert self.service is not None
            created = True
            self.submit.description = "Created"
            self.reset_button.layout.display = None
            self.after.offer(self.service)  # the password is in memory: offer to keep it
            self.result = yield from wait_job(
                self.client,
                self.service.id,
                "running",
                status=self.status,
                timeout=self.timeout,
                name=body["name"],
            )
        finally:
            # Once the API has made the service, the form is done, whatever the wait says.
            self.submit.disabled = created

    @action()
    def reset(self) -> None:
        """Empty the form for another service (the tags return to the form's defaults).

        The service made before stays; its credentials stay in
        :attr:`credential_files` until :meth:`remove_credentials`.
        """
        self.jobs.cancel()
        self.service = self.result = None
        self._checking, self._confirmed_name = False, None
        self.name.value = ""
        self.pg_config.value = ""
        self.tags.set_tags(self.default_tags)
        self.submit.description, self.submit.disabled = "Create service", False
        self.reset_button.layout.display = "none"
        self.after.hide()
        self.load_names()

    def _created(self) -> PostgresService:
        if self.service is None:
            raise RuntimeError("no service created yet: fill the form and click Create")
        return self.service

    # -- credentials (the box below the form) --

    @property
    def connection(self) -> psycopg.Connection[Any] | None:
        return self.after.connection

    def save_credentials(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write libpq's ``PG*`` variables and ``DATABASE_URL`` to a mode-0600 file."""
        return self.after.save(path)

    def save_to_env(self) -> str:
        """Merge ``PGCLOUD_<NAME>_*`` variables into the ``.env`` file (mode 0600)."""
        return self.after.save_to_env()

    def connect(self) -> psycopg.Connection[Any]:
        """Open a psycopg connection with the credentials from the create response."""
        return self.after.connect()

    def remove_credentials(self) -> list[Path]:
        """Delete the files the form wrote (only its own lines of a file it merged into)."""
        return self.after.remove()

    def close(self) -> None:
        """Stop a running create/wait task, and close the widgets."""
        self.jobs.cancel()
        close_children(self)
        super().close()
