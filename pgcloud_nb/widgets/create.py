"""The create form: fields from the spec's enums, validated by the spec, progress to
``running``, and credentials that are written to private files but never shown.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..jobs import (
    Call,
    ErrorPanel,
    Job,
    StatusLine,
    cancel,
    close_children,
    guarded,
    run_job,
    wait_job,
)
from ..models import PostgresService
from ..regions import REGIONS
from ..sizes import SizeSpec, all_sizes
from ..spec import FieldError, enum_values, validate_body
from ..waiters import DEFAULT_TIMEOUT
from .inputs import (
    ErrorLabel,
    TagRows,
    beside,
    config_placeholder,
    env_prefix,
    parse_config_text,
    route_errors,
    write_connection_details,
)

if TYPE_CHECKING:
    import asyncio

    import psycopg

    from ..client import Client

__all__ = ["REGION_SUGGESTIONS", "CreateForm"]

# Suggestions only: the field is a combobox, free text wins, and a region the API does
# not serve gets its own 400. The list is the package's one (pgcloud_nb.regions).
REGION_SUGGESTIONS: dict[str, tuple[str, ...]] = REGIONS
_PREFERRED_FAMILY = {"aws": "r8gd"}  # the docs' own examples use r8gd.large
_WIDE = widgets.Layout(width="30em")
_AUTO = widgets.Layout(width="auto")


def _families(provider: str) -> dict[str, list[SizeSpec]]:
    groups: dict[str, list[SizeSpec]] = {}
    for spec in all_sizes():
        if spec.provider == provider:
            groups.setdefault(spec.family, []).append(spec)
    return groups


def _family_label(family: str, sizes: Sequence[SizeSpec]) -> str:
    per_cpu = sizes[0].memory_gib / sizes[0].vcpus
    cpus = f"{sizes[0].vcpus}–{sizes[-1].vcpus}"
    return f"{family} · {per_cpu:g} GiB/vCPU · {cpus} vCPU"


class CreateForm(widgets.VBox):
    """A form that creates a service and follows it to ``running``.

    Fill it by setting ``.value`` on its fields (``name``, ``provider``,
    ``region``, ``family``, ``size``, ``version``, ``ha_type``, ``tags``,
    ``pg_config``) or by hand, then click ``submit``. The body is validated
    against the spec's ``PostgresServicePostRequest`` first; errors appear beside
    their fields and nothing is sent. After the create, ``status`` follows the
    state until ``running`` (a task on the kernel's loop; see :mod:`pgcloud_nb.jobs`).

    The create response holds the only copy of the password the API will ever
    send. The form keeps it in :attr:`service` (masked ``SecretStr``) and never
    displays it: instead it offers to write it to a mode-0600 file or to
    ``.env``, or to open a psycopg connection (:attr:`connection`).
    """

    def __init__(
        self,
        client: Client,
        *,
        provider: str = "aws",
        env_file: str | os.PathLike[str] = ".env",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = client
        self.env_file = env_file
        self.timeout = timeout
        self.service: PostgresService | None = None  # the create response: secrets inside
        self.result: PostgresService | None = None  # the running service (no secrets)
        self.connection: psycopg.Connection[Any] | None = None
        self.task: asyncio.Task[None] | None = None

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
            placeholder="us-east-1",
        )
        self.family = widgets.Dropdown(description="size family", style=style, layout=_WIDE)
        self.size = widgets.Dropdown(description="size", style=style, layout=_WIDE)
        self.version = widgets.Dropdown(
            description="postgres", style=style, options=enum_values("pgVersion")
        )
        self.ha_type = widgets.ToggleButtons(
            description="HA", style=style, options=enum_values("pgHaType"), value="none"
        )
        self.tags = TagRows()
        self.pg_config = widgets.Textarea(
            description="pgConfig",
            style=style,
            layout=widgets.Layout(width="32em", height="5em"),
            placeholder=f"optional, key=value per line, e.g.\n{config_placeholder()}",
        )
        self.submit = widgets.Button(
            description="Create service", button_style="primary", icon="plus", layout=_AUTO
        )
        self.status = StatusLine()
        self.errors = ErrorPanel()

        self.labels = {
            k: ErrorLabel()
            for k in (
                "name",
                "provider",
                "region",
                "size",
                "postgresVersion",
                "haType",
                "tags",
                "pgConfig",
            )
        }
        self.form_error = ErrorLabel()

        # After the create: what to do with the credentials (never shown).
        self.credentials_path = widgets.Text(description="file", style=style, layout=_WIDE)
        self.write_file = widgets.Button(
            description="Write to 0600 file", icon="lock", layout=_AUTO
        )
        self.write_env = widgets.Button(
            description=f"Add to {os.fspath(env_file)}", icon="file", layout=_AUTO
        )
        self.open_connection = widgets.Button(
            description="Open psycopg connection", icon="plug", layout=_AUTO
        )
        self.credentials_status = StatusLine()
        self.after = widgets.VBox(
            [
                widgets.HTML(
                    "<b>Connection details</b> (the API sends the password once; "
                    "it is kept, masked, and never displayed)"
                ),
                widgets.HBox([self.credentials_path, self.write_file]),
                widgets.HBox([self.write_env, self.open_connection]),
                self.credentials_status,
            ],
            layout=widgets.Layout(display="none"),
        )

        guard = guarded(self.errors)
        self.provider.observe(guard(lambda _: self._provider_changed()), "value")
        self.family.observe(guard(lambda _: self._family_changed()), "value")
        self.submit.on_click(guard(lambda _: self.create()))
        self.write_file.on_click(guard(lambda _: self.save_credentials()))
        self.write_env.on_click(guard(lambda _: self.save_to_env()))
        self.open_connection.on_click(guard(lambda _: self.connect()))
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
                widgets.HBox([self.submit, self.status]),
                self.form_error,
                self.after,
                self.errors,
            ]
        )
        self.add_class("pgcloud-create-form")

    # -- dependent fields --

    def _provider_changed(self) -> None:
        provider = self.provider.value
        self.region.options = REGION_SUGGESTIONS.get(provider, ())
        groups = _families(provider)
        self.family.options = [(_family_label(f, s), f) for f, s in groups.items()]
        preferred = _PREFERRED_FAMILY.get(provider)
        if groups:
            self.family.value = preferred if preferred in groups else next(iter(groups))
        self._family_changed()

    def _family_changed(self) -> None:
        sizes = _families(self.provider.value).get(self.family.value or "", [])
        self.size.options = [(s.label, s.name) for s in sizes]
        if sizes:
            # the smallest size with 2+ vCPU is a sensible first service
            self.size.value = next((s.name for s in sizes if s.vcpus >= 2), sizes[0].name)

    # -- the body --

    def body(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The POST body as the form stands, and every problem with it (by the spec)."""
        body: dict[str, Any] = {
            "name": self.name.value.strip(),
            "provider": self.provider.value,
            "size": self.size.value,
            "postgresVersion": self.version.value,
            "haType": self.ha_type.value,
        }
        if region := self.region.value.strip():  # empty: let the spec say "is required"
            body["region"] = region
        if tags := self.tags.payload():
            body["tags"] = tags
        config, errors = parse_config_text(self.pg_config.value)
        if config:
            body["pgConfig"] = config
        if body["size"] is None:
            del body["size"]
        return body, errors + validate_body("PostgresServicePostRequest", body)

    def validate(self) -> list[FieldError]:
        """Check the form and show each error beside its field; ``[]`` when it may be sent."""
        _, errors = self.body()
        route_errors(errors, {**self.labels, **self.tags.error_labels()}, self.form_error)
        return errors

    # -- actions --

    def create(self) -> None:
        """Validate, then create and follow the service to ``running`` (the submit button)."""
        self.errors.clear()
        if errors := self.validate():
            self.status.set(f"not sent: {len(errors)} field(s) to fix", icon="⚠")
            return
        body, _ = self.body()
        self.submit.disabled = True
        self.task = run_job(self._create_job(body), self.errors)

    def _create_job(self, body: dict[str, Any]) -> Job[None]:
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
            self.credentials_path.value = f"{env_prefix(body['name']).lower()[:-1]}.env"
            self.after.layout.display = None  # the password is in memory: offer to keep it
            self.result = yield from wait_job(
                self.client, self.service.id, "running", status=self.status, timeout=self.timeout
            )
        finally:
            self.submit.disabled = False

    def _created(self) -> PostgresService:
        if self.service is None:
            raise RuntimeError("no service created yet: fill the form and click Create")
        return self.service

    def save_credentials(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write libpq's ``PG*`` variables and ``DATABASE_URL`` to a mode-0600 file."""
        target = os.fspath(path if path is not None else self.credentials_path.value.strip())
        if not target:
            raise ValueError("give a file name for the connection details")
        names = write_connection_details(self._created(), target)
        self.credentials_status.set(f"wrote {', '.join(names)} to {target} (mode 0600)", icon="✓")
        return target

    def save_to_env(self) -> str:
        """Merge ``PGCLOUD_<NAME>_*`` variables into the ``.env`` file (mode 0600)."""
        svc = self._created()
        names = write_connection_details(svc, self.env_file, prefix=env_prefix(svc.name or svc.id))
        target = os.fspath(self.env_file)
        self.credentials_status.set(f"wrote {', '.join(names)} to {target} (mode 0600)", icon="✓")
        return target

    def connect(self) -> psycopg.Connection[Any]:
        """Open a psycopg connection with the credentials from the create response."""
        svc = self._created()
        self.connection = self.client.connect_service(svc)
        info = self.connection.info
        self.credentials_status.set(
            f"connected as {info.user}@{info.host}:{info.port}/{info.dbname} "
            f"(PostgreSQL {info.server_version // 10000}); use form.connection",
            icon="✓",
        )
        return self.connection

    def close(self) -> None:
        """Stop a running create/wait task, and close the widgets."""
        cancel(self.task)
        close_children(self)
        super().close()
