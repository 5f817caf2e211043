"""The Client: one method per API operation (all 19), plus waiters and psycopg connections.

Every method goes through one :class:`~pgcloud_nb.requester.Requester`, which
owns the key's shared request budget, the retries and the status → error
mapping. Results come back as the models of :mod:`pgcloud_nb.models`.

Passwords arrive only in the create and password-reset responses (API-NOTES
§7). The client keeps the ones it sees in memory, per service id and as
:class:`~pydantic.SecretStr`, so that :meth:`Client.connect_service` can open a
psycopg connection later without the notebook ever printing them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr

from .errors import CredentialsUnknownError, UnexpectedResponseError
from .models import (
    PostgresInstanceConfig,
    PostgresInstanceUpdateConfigResponse,
    PostgresService,
    PostgresServiceListItem,
    PostgresServicePasswordResource,
    ResourceTagsV1,
    ServiceState,
    tags_payload,
)
from .observability import Observability
from .ratelimit import Budget, RetryPolicy
from .redaction import redact, remember_secret
from .requester import Requester, iso_time, parse_model, parse_models
from .waiters import DEFAULT_TIMEOUT, wait_for_gone, wait_for_state

if TYPE_CHECKING:
    import psycopg

__all__ = ["Client"]

log = logging.getLogger("pgcloud_nb")
M = TypeVar("M", bound=BaseModel)
Tags = Mapping[str, str] | list[ResourceTagsV1] | list[dict[str, str]]
When = datetime | str | timedelta
# A lost create response is matched to a listed service created at most this long
# before the request began (clock skew between us and the API).
CREATE_SKEW = timedelta(seconds=120)


@dataclass
class _Known:
    """Credentials seen for one service (never printed: SecretStr)."""

    password: SecretStr
    connection_string: SecretStr | None = None


def _bouncer(config: Mapping[str, Any]) -> dict[str, str]:
    # PgBouncer values are strings on the wire; accept numbers from users.
    return {k: str(v) for k, v in config.items()}


class Client(Observability):
    """A synchronous client for one organization. Use :func:`pgcloud_nb.connect` to make one.

    ``source`` says where the key came from ("sandbox", "environment", ".env"
    or "arguments"). Safe to share between threads.
    """

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str | SecretStr,
        org_id: str,
        base_url: str,
        source: str = "arguments",
        budget: Budget,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        secret = key_secret.get_secret_value() if isinstance(key_secret, SecretStr) else key_secret
        remember_secret(secret)
        self.org_id = org_id
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.key_id = key_id
        self._req = Requester(
            base_url=self.base_url,
            key_id=key_id,
            key_secret=secret,
            budget=budget,
            policy=retry,
            transport=transport,
            timeout=timeout,
        )
        self._known: dict[str, _Known] = {}
        self._created: set[str] = set()  # ids this client created: never "found" by dedup

    # -- plumbing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<pgcloud_nb.Client org={self.org_id} url={self.base_url} "
            f"key={self.key_id[:8]}… from {self.source}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._req.close()

    @property
    def budget(self) -> Budget:
        """The request budget shared by every client using this key."""
        return self._req.budget

    @property
    def request_count(self) -> int:
        """Requests actually sent by this client (retries included)."""
        return self._req.request_count

    @property
    def last_request_id(self) -> str | None:
        return self._req.last_request_id

    @property
    def requester(self) -> Requester:
        return self._req

    def _path(self, service_id: str | None = None, *tail: str) -> str:
        path = f"/v1/organizations/{quote(self.org_id, safe='')}/postgres"
        if service_id is not None:
            path += "/" + quote(service_id, safe="")
        return "/".join([path, *(quote(t, safe="-") for t in tail)])

    def _remember(self, service_id: str, password: SecretStr | None, cs: SecretStr | None) -> None:
        if password is not None:
            self._known[service_id] = _Known(password, cs)

    # -- organizations and services ----------------------------------------------------------

    def list_organizations(self) -> list[dict[str, Any]]:
        """GET /v1/organizations: the organizations this key sees."""
        result = self._req.call("GET", "/v1/organizations")
        if not isinstance(result, list):
            raise UnexpectedResponseError("organizations: expected a list", body=str(result))
        return result

    def list_services(self) -> list[PostgresServiceListItem]:
        return parse_models(PostgresServiceListItem, self._req.call("GET", self._path()))

    def get_service(self, service_id: str) -> PostgresService:
        return parse_model(PostgresService, self._req.call("GET", self._path(service_id)))

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

    def update_service(
        self,
        service_id: str,
        *,
        name: str | None = None,
        size: str | None = None,
        ha_type: str | None = None,
        tags: Tags | None = None,
    ) -> PostgresService:
        """PATCH as an RFC 7396 merge patch: only the given fields are sent.

        ``tags`` replaces the whole tag list (``{}`` clears it). Size and HA changes
        land later: ``wait(id, settle={"size": size})`` waits until they read back.
        """
        body = {
            "name": name,
            "size": size,
            "haType": ha_type,
            "tags": tags_payload(_tag_list(tags)),
        }
        body = {k: v for k, v in body.items() if v is not None}
        if not body:
            raise ValueError("update_service needs at least one of name, size, ha_type, tags")
        return parse_model(
            PostgresService, self._req.call("PATCH", self._path(service_id), json=body)
        )

    def delete_service(self, service_id: str) -> None:
        """DELETE; the service goes to ``deleting``, then 404 (see :meth:`wait_gone`)."""
        self._req.call("DELETE", self._path(service_id), result=False, gone_ok=True)
        self._known.pop(service_id, None)

    # -- config ------------------------------------------------------------------------------

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
        # The API wants both sections; {} leaves a section untouched (API-NOTES §5.9).
        body = {
            "pgConfig": dict(pg_config or {}),
            "pgBouncerConfig": _bouncer(pg_bouncer_config or {}),
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
        body = {"pgConfig": dict(pg_config), "pgBouncerConfig": _bouncer(pg_bouncer_config)}
        data = self._req.call("POST", self._path(service_id, "config"), json=body)
        return parse_model(PostgresInstanceUpdateConfigResponse, data)

    # -- state, password, certificate --------------------------------------------------------

    def _state(self, service_id: str, command: str) -> PostgresService:
        data = self._req.call("PATCH", self._path(service_id, "state"), json={"command": command})
        return parse_model(PostgresService, data)

    def restart(self, service_id: str) -> PostgresService:
        return self._state(service_id, "restart")

    def promote(self, service_id: str) -> PostgresService:
        """Turn a read replica into a primary."""
        return self._state(service_id, "promote")

    def switchover(self, service_id: str) -> PostgresService:
        """Fail over to a standby (or a freshly provisioned server)."""
        return self._state(service_id, "switchover")

    def reset_password(
        self, service_id: str, password: str | SecretStr | None = None
    ) -> PostgresServicePasswordResource:
        """PATCH …/password. Without ``password`` the API generates one and returns it (masked)."""
        given = password.get_secret_value() if isinstance(password, SecretStr) else password
        body = {"password": given} if given is not None else {}
        if given:
            remember_secret(given)
        data = self._req.call("PATCH", self._path(service_id, "password"), json=body)
        result = parse_model(PostgresServicePasswordResource, data or {})
        new = result.password or (SecretStr(given) if given else None)
        if new is not None:
            old = self._known.get(service_id)
            self._known[service_id] = _Known(new, old.connection_string if old else None)
        return result

    def ca_certificate(self, service_id: str) -> str:
        """The service's CA bundle (PEM text), for ``sslrootcert``."""
        return str(self._req.call("GET", self._path(service_id, "caCertificates"), text=True))

    # -- new services from old ones ----------------------------------------------------------

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
        # The replica inherits the primary's superuser (API-NOTES §5.7).
        if replica.id not in self._known and service_id in self._known:
            self._known[replica.id] = _Known(self._known[service_id].password)
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
        # It keeps the backup's password; the current one is our best guess [U] (API-NOTES §5.6).
        if restored.id not in self._known and service_id in self._known:
            self._known[restored.id] = _Known(self._known[service_id].password)
        return restored

    @staticmethod
    def _extras(
        tags: Tags | None, pg_config: Mapping[str, Any] | None, bouncer: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        # Empty config maps are rejected on create/restore/replica (API-NOTES §5.1): omit them.
        out: dict[str, Any] = {"tags": tags_payload(_tag_list(tags))}
        if pg_config:
            out["pgConfig"] = dict(pg_config)
        if bouncer:
            out["pgBouncerConfig"] = _bouncer(bouncer)
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
        candidates = [
            s
            for s in self.list_services()
            if s.name == name
            and s.id not in self._created
            and s.state != ServiceState.DELETING
            and (s.created_at is None or s.created_at >= since)
        ]
        if not candidates:
            return None
        found = max(candidates, key=lambda s: s.created_at or began)
        note = (
            " Its password was only in that answer: call reset_password() to set a new one."
            if kind == "service"
            else ""
        )
        warnings.warn(
            f"the answer to creating {kind} {name!r} was lost, but the API had created it "
            f"({found.id}); using it instead of creating another.{note}",
            stacklevel=4,
        )
        return self._req.call("GET", self._path(found.id))

    # -- waiting and connecting --------------------------------------------------------------

    def wait(
        self,
        service_id: str,
        state: str = "running",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        settle: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> PostgresService:
        """Block until the service is in ``state`` (and ``settle`` fields read back)."""
        return wait_for_state(
            self, service_id, state, timeout=timeout, settle=settle, progress=progress
        )

    def wait_gone(
        self, service_id: str, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True
    ) -> None:
        """Block until the service answers 404 (after :meth:`delete_service`)."""
        wait_for_gone(self, service_id, timeout=timeout, progress=progress)

    def knows_password(self, service_id: str) -> bool:
        """Whether :meth:`connect_service` has credentials for this service."""
        return service_id in self._known

    def connect_service(
        self, service_or_id: str | PostgresService | PostgresServiceListItem, **psycopg_kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A psycopg connection to the service, with the credentials this client saw.

        The password never appears in an output. ``psycopg_kwargs`` (``dbname``,
        ``autocommit``, ``sslrootcert``, ``password``…) override the defaults.
        """
        import psycopg  # heavy; only needed here

        sid = service_or_id if isinstance(service_or_id, str) else service_or_id.id
        known = self._known.get(sid)
        if known is None and "password" not in psycopg_kwargs:
            raise CredentialsUnknownError(
                f"no password known for service {sid}: the API returns it only when a service "
                "is created or its password is reset. Call reset_password() (and keep the result "
                "in this client), or pass password=..."
            )
        if known is not None and known.connection_string is not None:
            conninfo = known.connection_string.get_secret_value()
            params: dict[str, Any] = {}
        else:
            svc = (
                service_or_id
                if isinstance(service_or_id, PostgresService)
                else self.get_service(sid)
            )
            extra = svc.model_extra or {}
            conninfo = ""
            # Port 5432 on the real API; the sandbox may name another one.
            params = {
                "host": svc.hostname,
                "user": svc.username or "postgres",
                "dbname": "postgres",
                "port": extra.get("port", 5432),
            }
            if (svc.hostname or "").endswith(".localhost"):
                # RFC 6761: *.localhost is loopback, but not every resolver maps it.
                params["hostaddr"] = "127.0.0.1"
        if known is not None:
            params["password"] = known.password.get_secret_value()
        params.update(psycopg_kwargs)
        try:
            return psycopg.connect(conninfo, **params)
        except psycopg.Error as exc:
            # psycopg messages can quote the conninfo; redact before re-raising.
            raise type(exc)(redact(str(exc))) from None


def _tag_list(tags: Tags | None) -> dict[str, str] | list[Any] | None:
    if tags is None or isinstance(tags, list):
        return tags
    return dict(tags)
