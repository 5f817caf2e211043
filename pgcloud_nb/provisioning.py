"""The Client's operations that make a new service: create, read replica, restore.

Each is a POST that is never sent twice when the first may have landed: when
its answer is lost (a 5xx, or a connection dropped after sending), the
requester runs ``recover`` before each resend and before giving up. It lists
the services and looks for one of that name made since the request began (the
list holds a service from its create on, in every state but gone, ``creating``
and ``restoring_backup`` included); the POST is sent again only when there is
none (the rules are in :mod:`pgcloud_nb.requester`'s docstring). The answer to a create carries the
only password the API will ever send; the client keeps it, masked, for
:meth:`~pgcloud_nb.client.Client.connect_service`. A group of
:class:`~pgcloud_nb.client.Client`'s operations (see :mod:`pgcloud_nb.clientbase`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .clientbase import ClientBase, KnownCredentials
from .models import (
    PostgresService,
    PostgresServiceListItem,
    ServiceState,
    Tags,
    bouncer_payload,
    tags_payload,
)
from .requester import iso_time, parse_model, parse_models

__all__ = ["Provisioning"]

# A lost create response is matched to a listed service created at most this long
# before the request began (clock skew between us and the API).
CREATE_SKEW = timedelta(seconds=120)


class Provisioning(ClientBase):
    """Create a service, a read replica of one, or a service restored from one's backups."""

    def create_service(
        self,
        *,
        name: str,
        region: str,
        size: str,
        provider: str = "aws",
        postgres_version: str | None = None,
        ha_type: str | None = None,
        tags: Tags | None = None,
        pg_config: Mapping[str, Any] | None = None,
        pg_bouncer_config: Mapping[str, Any] | None = None,
    ) -> PostgresService:
        """POST /postgres. The answer is in state ``creating``; follow with :meth:`wait`.

        The password and connection string in the answer are the only ones the API
        will ever send; the client keeps them (masked) for :meth:`connect_service`.
        """
        body = {
            "name": name,
            "provider": provider,
            "region": region,
            "size": size,
            "postgresVersion": postgres_version,
            "haType": ha_type,
            **self._extras(tags, pg_config, pg_bouncer_config),
        }
        return self._create_like(self._path(), body, name, kind="service")

    def create_read_replica(
        self,
        service_id: str,
        *,
        name: str,
        tags: Tags | None = None,
        pg_config: Mapping[str, Any] | None = None,
        pg_bouncer_config: Mapping[str, Any] | None = None,
    ) -> PostgresService:
        """POST …/readReplica: a new service (``is_primary=False``) replaying the primary's WAL."""
        body = {"name": name, **self._extras(tags, pg_config, pg_bouncer_config)}
        replica = self._create_like(
            self._path(service_id, "readReplica"), body, name, kind="replica"
        )
        # The replica inherits the primary's superuser (docs/api-behaviour.md §3.4).
        if replica.id not in self._known and service_id in self._known:
            self._known[replica.id] = KnownCredentials(self._known[service_id].password)
        return replica

    def restore_service(
        self,
        service_id: str,
        *,
        name: str,
        restore_target: datetime | str,
        tags: Tags | None = None,
        pg_config: Mapping[str, Any] | None = None,
        pg_bouncer_config: Mapping[str, Any] | None = None,
    ) -> PostgresService:
        """POST …/restoredService: a new service from the source's backups at ``restore_target``."""
        body = {
            "name": name,
            "restoreTarget": iso_time(restore_target),
            **self._extras(tags, pg_config, pg_bouncer_config),
        }
        restored = self._create_like(
            self._path(service_id, "restoredService"), body, name, kind="restore"
        )
        # It keeps the backup's password; ours is a best guess (docs/api-behaviour.md §3.4).
        if restored.id not in self._known and service_id in self._known:
            self._known[restored.id] = KnownCredentials(self._known[service_id].password)
        return restored

    @staticmethod
    def _extras(
        tags: Tags | None, pg_config: Mapping[str, Any] | None, bouncer: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        # Empty config maps are refused on create, restore, replica (docs/api-behaviour.md §4.3).
        out: dict[str, Any] = {"tags": tags_payload(tags)}
        if pg_config:
            out["pgConfig"] = dict(pg_config)
        if bouncer:
            out["pgBouncerConfig"] = bouncer_payload(bouncer)
        return out

    def _create_like(
        self, path: str, body: dict[str, Any], name: str, *, kind: str
    ) -> PostgresService:
        """A POST that makes a new service; never sent twice if the first may have landed."""
        body = {k: v for k, v in body.items() if v is not None}
        began = datetime.now(UTC)
        data = self._req.call(
            "POST", path, json=body, recover=lambda: self._find_created(name, began, kind)
        )
        svc = parse_model(PostgresService, data)
        self._created.add(svc.id)
        self._remember(svc.id, svc.password, svc.connection_string)
        return svc

    def _find_created(self, name: str, began: datetime, kind: str) -> Any:
        """The raw service a lost create made, or None (then the create is sent again)."""
        since = began - CREATE_SKEW
        # The same GET as Client.list_services (this group of operations stands on the base only).
        listed = parse_models(PostgresServiceListItem, self._req.call("GET", self._path()))
        # A replica is listed with isPrimary false, a service or a restore with true
        # (docs/api-behaviour.md §4.5): a same-named service of the other kind is not ours.
        primary = kind != "replica"
        candidates = [
            s
            for s in listed
            if s.name == name
            and s.id not in self._created
            and s.state != ServiceState.DELETING
            and (s.created_at is None or s.created_at >= since)
            and s.is_primary in (None, primary)
        ]
        if not candidates:
            return None
        found = max(candidates, key=lambda s: s.created_at or began)
        note = (
            " Its password was only in that answer: call reset_password() to set a new one."
            if kind == "service"
            else ""
        )
        others = [s.id for s in candidates if s is not found]
        if others:  # made by this call too (or by someone else, under the same name, just now)
            note += f" Also made under that name meanwhile: {', '.join(others)}; check them."
        # Up the stack: here, the lambda, Requester._look and .call, _create_like, the public
        # method, then the caller's own line.
        warnings.warn(
            f"the answer to creating {kind} {name!r} was lost, but the API had created it "
            f"({found.id}); using it instead of creating another.{note}",
            stacklevel=7,
        )
        return self._req.call("GET", self._path(found.id))
