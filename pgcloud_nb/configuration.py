"""The Client's config operations: read, patch and replace a service's configuration.

A configuration has two sections, ``pgConfig`` (PostgreSQL's parameters) and
``pgBouncerConfig``. The API reports only what the user set, numbers as
strings; :func:`pgcloud_nb.frames.config_frame` types them and adds
PostgreSQL's defaults. A group of :class:`~pgcloud_nb.client.Client`'s
operations (see :mod:`pgcloud_nb.clientbase`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .clientbase import ClientBase
from .models import PostgresInstanceConfig, PostgresInstanceUpdateConfigResponse, bouncer_payload
from .requester import parse_model

__all__ = ["Configuration"]


class Configuration(ClientBase):
    """Get, patch (merge) and replace (whole) a service's pgConfig and pgBouncerConfig."""

    def get_config(self, service_id: str) -> PostgresInstanceConfig:
        """Only the parameters set by the user; numbers come back as strings."""
        data = self._req.call("GET", self._path(service_id, "config"))
        return parse_model(PostgresInstanceConfig, data)

    def patch_config(
        self,
        service_id: str,
        *,
        pg_config: Mapping[str, Any] | None = None,
        pg_bouncer_config: Mapping[str, Any] | None = None,
    ) -> PostgresInstanceUpdateConfigResponse:
        """PATCH …/config: change only the given keys. ``message`` tells if a restart is needed."""
        if not pg_config and not pg_bouncer_config:
            raise ValueError("patch_config needs pg_config or pg_bouncer_config")
        # The API wants both sections; {} leaves a section untouched (docs/api-behaviour.md §8.2).
        body = {
            "pgConfig": dict(pg_config or {}),
            "pgBouncerConfig": bouncer_payload(pg_bouncer_config or {}),
        }
        data = self._req.call("PATCH", self._path(service_id, "config"), json=body)
        return parse_model(PostgresInstanceUpdateConfigResponse, data)

    def replace_config(
        self,
        service_id: str,
        *,
        pg_config: Mapping[str, Any],
        pg_bouncer_config: Mapping[str, Any],
        allow_empty: bool = False,
    ) -> PostgresInstanceUpdateConfigResponse:
        """POST …/config: the two sections become exactly what is given.

        An empty section resets that part of the server's config, so it is refused
        unless ``allow_empty=True``.
        """
        sections = {"pg_config": pg_config, "pg_bouncer_config": pg_bouncer_config}
        empty = [name for name, section in sections.items() if not section]
        if empty and not allow_empty:
            raise ValueError(
                f"replace_config with an empty {' and '.join(empty)} would remove every "
                "parameter set there; pass allow_empty=True if intended, or use patch_config"
            )
        body = {"pgConfig": dict(pg_config), "pgBouncerConfig": bouncer_payload(pg_bouncer_config)}
        data = self._req.call("POST", self._path(service_id, "config"), json=body)
        return parse_model(PostgresInstanceUpdateConfigResponse, data)
