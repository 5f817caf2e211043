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

import contextlib
import ipaddress
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Required, TypedDict

from .clientbase import ClientBase, KnownCredentials
from .livecontract import DEFAULT_PORT_RANGE, MAX_DESCRIPTION, MAX_RULES, PORT_RANGE_PATTERN
from .models import (
    PostgresService,
    PostgresServiceListItem,
    ServiceState,
    Tags,
    bouncer_payload,
    tags_payload,
)
from .requester import iso_time, parse_model, parse_models

__all__ = [
    "IpAccessRule",
    "Provisioning",
    "access_changes_payload",
    "access_list_payload",
    "changes_not_in_force",
]

# A lost create response is matched to a listed service created at most this long
# before the request began (clock skew between us and the API).
CREATE_SKEW = timedelta(seconds=120)

MAX_RULE_ID = 64  # the live contract's bound on a rule id (pgcloud_nb.livecontract)


class IpAccessRule(TypedDict, total=False):
    """One rule of a service's IP access list (docs/api-behaviour.md §12.2): who may
    connect from ``source`` (an address or CIDR range) to ``portRange`` (``"5432"`` or
    ``"5432..6432"``, every port of the service when left out)."""

    source: Required[str]
    description: str
    portRange: str


def access_list_payload(
    rules: Sequence[str | IpAccessRule] | None, field: str = "ip_access_list"
) -> list[dict[str, str]] | None:
    """``rules`` in the API's form, checked here so that a mistake is a ValueError naming
    the rule (as ``field[i]``) before anything is sent; a bare string is a rule's
    ``source``. ``[]`` stays ``[]`` (no address may connect); None is not sent: a create
    gets the API's default rules, a restore or replica its source's (docs/api-behaviour.md
    §12.2)."""
    if rules is None:
        return None
    if isinstance(rules, str | Mapping) or not isinstance(rules, Sequence):
        raise TypeError(f"{field} is a list of rules (sources or IpAccessRule dicts)")
    if len(rules) > MAX_RULES:
        raise ValueError(f"{field}: at most {MAX_RULES} rules, got {len(rules)}")
    out = [_rule(rule, f"{field}[{i}]") for i, rule in enumerate(rules)]
    seen: dict[tuple[Any, ...], int] = {}
    for i, rule in enumerate(out):  # the API refuses two rules admitting the same
        j = seen.setdefault(_admits(rule), i)
        if j != i:
            raise ValueError(f"{field}[{i}]: admits the same network and ports as {field}[{j}]")
    return out


def access_changes_payload(
    add: Sequence[str | IpAccessRule] | None, remove: Sequence[str | Mapping[str, Any]] | None
) -> dict[str, list[dict[str, str]]] | None:
    """A PATCH's ``ipAccessList``: ``{"remove": [{"id"}], "add": [rules]}`` (removals apply
    first, docs/api-behaviour.md §12.2), checked as :func:`access_list_payload` checks a
    list; a removal is a rule's id or the rule itself as GET shows it. None when neither
    is given (the rules stay as they are)."""
    if add is None and remove is None:
        return None
    out: dict[str, list[dict[str, str]]] = {}
    if remove is not None:
        if isinstance(remove, str | Mapping) or not isinstance(remove, Sequence):
            raise TypeError("ip_access_remove is a list of rule ids (or rules read with their id)")
        if len(remove) > MAX_RULES:
            raise ValueError(f"ip_access_remove: at most {MAX_RULES} rules, got {len(remove)}")
        ids: list[str] = []
        for i, gone in enumerate(remove):
            rid = gone.get("id") if isinstance(gone, Mapping) else gone
            if not isinstance(rid, str) or not 0 < len(rid) <= MAX_RULE_ID:
                raise ValueError(f"ip_access_remove[{i}]: a rule id, not {rid!r}")
            if rid in ids:  # the API knows an id once: a second removal is refused
                raise ValueError(f"ip_access_remove[{i}]: {rid!r} is removed twice")
            ids.append(rid)
        out["remove"] = [{"id": rid} for rid in ids]
    if add is not None:
        out["add"] = access_list_payload(add, "ip_access_add") or []
    return out


def changes_not_in_force(
    change: Mapping[str, Any], shown: Sequence[Mapping[str, Any]]
) -> dict[str, list[dict[str, str]]]:
    """What of a PATCH's ``{remove, add}`` the rules ``shown`` (as GET reads them) do not
    have yet: removals of ids still there, additions of networks and ports no rule admits
    once those removals are done (a rule replaced by one for the same network stays to
    do while the old one is there). Empty when the whole change is in force."""
    ids = {r.get("id") for r in shown}
    remove = [r for r in change.get("remove", []) if r["id"] in ids]
    going = {r["id"] for r in remove}
    admitted = set()
    for rule in shown:
        if rule.get("id") not in going:
            with contextlib.suppress(KeyError, TypeError, ValueError):  # not ours to judge
                admitted.add(_admits(rule))
    add = [r for r in change.get("add", []) if _admits(r) not in admitted]
    return {k: v for k, v in (("remove", remove), ("add", add)) if v}


def _rule(rule: str | IpAccessRule, where: str) -> dict[str, str]:
    raw: Mapping[str, Any] = {"source": rule} if isinstance(rule, str) else rule
    if not isinstance(raw, Mapping):
        raise TypeError(f"{where}: a source string or an IpAccessRule dict, not {type(rule)}")
    unknown = sorted(set(raw) - set(IpAccessRule.__annotations__))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (source, description, portRange)")
    if not all(isinstance(value, str) for value in raw.values()):
        raise TypeError(f"{where}: every field is a string")
    out = {k: raw[k] for k in IpAccessRule.__annotations__ if k in raw}
    source = out.get("source", "")
    try:  # an address or a CIDR range (host bits may be set); no hostname or zone id
        if "%" in source:
            raise ValueError(source)
        ipaddress.ip_network(source, strict=False)
    except ValueError:
        raise ValueError(
            f"{where}.source: {source!r} is not an IPv4 or IPv6 address or CIDR range"
        ) from None
    if "portRange" in out:
        ports = out["portRange"]
        bounds = (
            [int(p) for p in ports.split("..")] if re.fullmatch(PORT_RANGE_PATTERN, ports) else []
        )
        if not bounds or not all(1 <= p <= 65535 for p in bounds) or bounds != sorted(bounds):
            raise ValueError(
                f"{where}.portRange: {ports!r} is not a port or a range running upwards in 1-65535"
            )
    description = out.get("description", "")
    if len(description) > MAX_DESCRIPTION or any(
        unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in description
    ):
        raise ValueError(f"{where}.description: one line of at most {MAX_DESCRIPTION} characters")
    return out


def _admits(rule: Mapping[str, Any]) -> tuple[Any, ...]:
    """The network and ports a checked rule admits: what makes two rules the same."""
    low, _, high = str(rule.get("portRange", DEFAULT_PORT_RANGE)).partition("..")
    return ipaddress.ip_network(rule["source"], strict=False), int(low), int(high or low)


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
        ip_access_list: Sequence[str | IpAccessRule] | None = None,
    ) -> PostgresService:
        """POST /postgres. The answer is in state ``creating``; follow with :meth:`wait`.

        The password and connection string in the answer are the only ones the API
        will ever send; the client keeps them (masked) for :meth:`connect_service`.
        ``ip_access_list`` says who may connect (:class:`IpAccessRule` dicts, or bare
        sources such as ``"203.0.113.0/24"``); ``[]`` admits no address, and without
        it every address may connect. The answer shows the rules with their ids
        (``svc.model_extra["ipAccessList"]``).
        """
        body = {
            "name": name,
            "provider": provider,
            "region": region,
            "size": size,
            "postgresVersion": postgres_version,
            "haType": ha_type,
            **self._extras(tags, pg_config, pg_bouncer_config),
            "ipAccessList": access_list_payload(ip_access_list),
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
        ip_access_list: Sequence[str | IpAccessRule] | None = None,
    ) -> PostgresService:
        """POST …/readReplica: a new service (``is_primary=False``) replaying the primary's WAL.

        ``ip_access_list`` is the replica's own rules, as for :meth:`create_service`
        (``[]`` admits no address); without it the replica has its primary's.
        """
        body = {
            "name": name,
            **self._extras(tags, pg_config, pg_bouncer_config),
            "ipAccessList": access_list_payload(ip_access_list),
        }
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
        ip_access_list: Sequence[str | IpAccessRule] | None = None,
    ) -> PostgresService:
        """POST …/restoredService: a new service from the source's backups at ``restore_target``.

        ``ip_access_list`` is the new service's rules, as for :meth:`create_service`
        (``[]`` admits no address); without it the new service has the source's.
        """
        body = {
            "name": name,
            "restoreTarget": iso_time(restore_target),
            **self._extras(tags, pg_config, pg_bouncer_config),
            "ipAccessList": access_list_payload(ip_access_list),
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
        # Up the stack: here, the lambda, resend.look and .call, _create_like, the public
        # method, then the caller's own line.
        warnings.warn(
            f"the answer to creating {kind} {name!r} was lost, but the API had created it "
            f"({found.id}); using it instead of creating another.{note}",
            stacklevel=7,
        )
        return self._req.call("GET", self._path(found.id))
