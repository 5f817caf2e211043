"""The Client: one method per API operation (all 19), plus waiters and psycopg connections.

Every method goes through one :class:`~pgcloud_nb.requester.Requester`, which
owns the key's shared request budget, the retries and the status → error
mapping. Results come back as the models of :mod:`pgcloud_nb.models`.

The operations come in groups, one module each (see :mod:`pgcloud_nb.clientbase`):
services are made in :mod:`~pgcloud_nb.provisioning`, configured in
:mod:`~pgcloud_nb.configuration` and watched in :mod:`~pgcloud_nb.observability`;
reading, changing, deleting, waiting for and connecting to them are here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .clientbase import KnownCredentials
from .configuration import Configuration
from .errors import CredentialsUnknownError, UnexpectedResponseError
from .models import (
    PostgresService,
    PostgresServiceListItem,
    PostgresServicePasswordResource,
    Tags,
    tags_payload,
)
from .observability import Observability
from .provisioning import IpAccessRule, Provisioning, access_changes_payload, changes_not_in_force
from .redaction import redact, remember_secret
from .requester import parse_model, parse_models
from .resend import UnderWay
from .waiters import DEFAULT_TIMEOUT, wait_for_gone, wait_for_state

if TYPE_CHECKING:
    import psycopg

__all__ = ["Client"]


class _SendInstead(Exception):
    """Raised by a lookup after a lost PATCH: send ``body``, what is left of it, instead.
    Not a PgCloudError, so the requester lets it through as it is (its lookup rules)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("part of the change was in force")
        self.body = body


class Client(Provisioning, Configuration, Observability):
    """A synchronous client for one organization. Use :func:`pgcloud_nb.connect` to make one.

    ``source`` says where the key came from ("sandbox", "environment", ".env"
    or "arguments"). Safe to share between threads.
    """

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

    def update_service(
        self,
        service_id: str,
        *,
        name: str | None = None,
        size: str | None = None,
        ha_type: str | None = None,
        tags: Tags | None = None,
        ip_access_add: Sequence[str | IpAccessRule] | None = None,
        ip_access_remove: Sequence[str | Mapping[str, Any]] | None = None,
    ) -> PostgresService:
        """PATCH as an RFC 7396 merge patch: only the given fields are sent.

        ``tags`` replaces the whole tag list (``{}`` clears it). Size and HA changes
        land later: ``wait(id, settle={"size": size})`` waits until they read back.
        ``ip_access_remove`` (rule ids, or rules as ``svc.model_extra["ipAccessList"]``
        shows them) and ``ip_access_add`` (as ``create_service``'s ``ip_access_list``)
        change the IP access rules; removals apply first. After a lost answer the rules
        are read back, and only what is not in force yet is sent again.
        """
        body = {
            "name": name,
            "size": size,
            "haType": ha_type,
            "tags": tags_payload(tags),
            "ipAccessList": access_changes_payload(ip_access_add, ip_access_remove),
        }
        body = {k: v for k, v in body.items() if v is not None}
        if not body:
            raise ValueError(
                "update_service needs at least one of name, size, ha_type, tags, "
                "ip_access_add, ip_access_remove"
            )
        while True:
            try:
                return parse_model(PostgresService, self._patch(service_id, body))
            except _SendInstead as left:  # part of it was in force: the rest, as a new call
                body = left.body

    def _patch(self, service_id: str, body: dict[str, Any]) -> Any:
        """One PATCH of the service. Its merge-patch fields are idempotent, a rules
        change is not (a rule added twice, an id removed twice: 400), so a lost answer
        is followed by :meth:`_not_in_force` (docs/api-behaviour.md §2.3)."""
        path = self._path(service_id)
        if "ipAccessList" not in body:
            return self._req.call("PATCH", path, json=body)
        return self._req.call(
            "PATCH", path, json=body, recover=lambda: self._not_in_force(service_id, body)
        )

    def _not_in_force(self, service_id: str, body: dict[str, Any]) -> Any:
        """After a PATCH of the rules whose answer was lost: the service as read when the
        whole change is in force; None (send it again as it is) when none of it is; else
        :class:`_SendInstead` with the body's other fields and the part not in force."""
        data = self._req.call("GET", self._path(service_id))
        shown = data.get("ipAccessList") if isinstance(data, dict) else None
        if not isinstance(shown, list):
            raise UnexpectedResponseError(
                "the service read back shows no ipAccessList, so whether the change is in"
                " force cannot be told"
            )
        change = body["ipAccessList"]
        left = changes_not_in_force(change, shown)
        if left == {k: v for k, v in change.items() if v}:
            return None
        rest = {k: v for k, v in body.items() if k != "ipAccessList"}
        if left:
            rest["ipAccessList"] = left
        if not rest:
            return data
        raise _SendInstead(rest)

    def delete_service(self, service_id: str) -> None:
        """DELETE; the service goes to ``deleting``, then 404 (see :meth:`wait_gone`)."""
        path = self._path(service_id)
        self._req.call("DELETE", path, result=False, gone_ok=True, under_way="deleting")
        self._known.pop(service_id, None)

    # -- state, password, certificate --------------------------------------------------------

    def _state(self, service_id: str, command: str) -> PostgresService:
        """PATCH …/state; a resend after a lost answer follows :mod:`pgcloud_nb.resend`'s rules."""
        how: dict[str, Any] = {"once": True}  # switchover: a second would move the primary back
        if command == "restart":  # a second restart is harmless
            how = {"under_way": "restarting"}
        elif command == "promote":
            # Read first: only a replica before and a primary after proves that a lost promote
            # landed (docs/api-behaviour.md §2.3). A primary's promote is resent as it is, for
            # the API to answer (its 400, §5.5), not taken as done by the read after.
            before = self._req.call("GET", self._path(service_id))
            shown = before.get("isPrimary") if isinstance(before, dict) else None
            how = {}  # a primary: nothing a lost attempt could have done
            if shown is not True:
                was_replica = shown is False
                how = {"recover": lambda: self._promoted(service_id, was_replica)}
        path = self._path(service_id, "state")
        data = self._req.call("PATCH", path, json={"command": command}, **how)
        if isinstance(data, UnderWay):  # maybe the earlier attempt's restart, maybe another's
            data.warn(service_id, stacklevel=3)  # _state, restart, the caller's line
            data = self._req.call("GET", self._path(service_id))
        return parse_model(PostgresService, data)

    def _promoted(self, service_id: str, was_replica: bool) -> Any:
        """The service, if a lost promote made it a primary (else None: promote again).
        Without a replica read before it, a primary read now proves nothing."""
        if not was_replica:
            return None
        data = self._req.call("GET", self._path(service_id))
        return data if isinstance(data, dict) and data.get("isPrimary") is True else None

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
        # With a password sent, the answer carries none; its envelope may lack a result too.
        data = self._req.call("PATCH", self._path(service_id, "password"), json=body, result=False)
        result = parse_model(PostgresServicePasswordResource, data or {})
        new = result.password or (SecretStr(given) if given else None)
        if new is not None:
            old = self._known.get(service_id)
            self._known[service_id] = KnownCredentials(new, old.connection_string if old else None)
        return result

    def ca_certificate(self, service_id: str) -> str:
        """The service's CA bundle (PEM text), for ``sslrootcert``."""
        return str(self._req.call("GET", self._path(service_id, "caCertificates")))

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
