"""IP access lists: each service's rules, checked, stored, and enforced in ``pg_hba.conf``.

What the live API takes (docs/api-behaviour.md, "IP access lists"): on create,
restore and read replica a list of rules ``{source, description, portRange}``
(``[]`` blocks every address); on PATCH ``{add: [rules], remove: [{id}]}``,
removals first; GET shows each rule with its ``id``. The schema's part is
checked by :mod:`pgcloud_nb.livecontract`; here, what it cannot say:

- ``source`` is an IPv4 or IPv6 address or CIDR range (host bits may be set:
  ``10.1.2.3/8`` admits ``10.0.0.0/8``); a hostname, a zone id or garbage is a 400;
- ``portRange`` is a port or an upward range of ports, each 1–65535; omitted, it
  is ``5432..6432`` (both the PostgreSQL and the PgBouncer port);
- ``description`` holds no control character;
- no two rules admit the same network on the same ports, and a removal names a
  rule the service has. Each 400 names the field.

A service made without a list gets the default rules (:func:`defaults`): every
IPv4 address on 5432 and on 6432, as the docs say when there is no filter and
clickhousectl says the API does. They are not stored (``ServiceRow.ip_access_list``
stays None) but have stable ids, so a user can remove them. A restore or replica
without a list inherits its source's rules, under new ids.

The sandbox's server stands for the service's port 5432 (it runs no PgBouncer),
so it admits over TCP the networks of the rules whose range holds 5432
(:func:`tcp_sources`), and no others: a list that leaves out 127.0.0.1 refuses
``psql`` from this machine, an empty one refuses everyone. The sandbox's own
connections use the unix socket and are untouched. Each node of the service
(its HA standbys too) gets the rules when it is made or resumed (:func:`write`);
a change reloads every running node (:func:`enforce`).
"""

from __future__ import annotations

import ipaddress
import unicodedata
import uuid
from collections.abc import Iterable
from typing import Any

from pgcloud_nb.livecontract import DEFAULT_PORT_RANGE, MAX_RULES
from pgcloud_nb.sandbox.errors import RequestRefused
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.services.context import Context
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = [
    "FIELD",
    "SERVED_PORT",
    "changed",
    "check",
    "defaults",
    "enforce",
    "for_new",
    "rules",
    "tcp_sources",
    "write",
]

FIELD = "ipAccessList"
SERVED_PORT = 5432  # the port a sandbox server stands for
DEFAULT_PORTS = ("5432", "6432")  # PostgreSQL and PgBouncer
DEFAULT_RANGE = DEFAULT_PORT_RANGE
Rule = dict[str, str]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _refused(where: str, why: str) -> RequestRefused:
    return RequestRefused(f"BAD_REQUEST: request body.{where}: {why}")


def _network(source: str, where: str) -> _Network:
    try:
        if "%" in source or source != source.strip():
            raise ValueError(source)
        return ipaddress.ip_network(source, strict=False)
    except ValueError:
        shown = source if len(source) <= 60 else source[:57] + "..."
        raise _refused(
            f"{where}.source", f"{shown!r} is not an IPv4 or IPv6 address or CIDR range"
        ) from None


def _ports(port_range: str, where: str) -> tuple[int, int]:
    low, _, high = port_range.partition("..")
    first, last = int(low), int(high or low)
    if not (1 <= first <= 65535 and 1 <= last <= 65535):
        raise _refused(f"{where}.portRange", f"'{port_range}': ports run from 1 to 65535")
    if first > last:
        raise _refused(f"{where}.portRange", f"'{port_range}' runs downwards")
    return first, last


def _rule(raw: dict[str, Any], where: str) -> tuple[Rule, tuple[_Network, tuple[int, int]]]:
    """One checked rule (a fresh id) and what it admits."""
    network = _network(str(raw["source"]), where)
    port_range = str(raw.get("portRange", DEFAULT_RANGE))
    ports = _ports(port_range, where)
    description = str(raw.get("description", ""))
    # Control characters, line separators and lone surrogates: a description is one line.
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in description):
        raise _refused(f"{where}.description", "holds a control character")
    rule = {
        "id": str(uuid.uuid4()),
        "source": str(raw["source"]),
        "description": description,
        "portRange": port_range,
    }
    return rule, (network, ports)


def _admits(rule: Rule) -> tuple[_Network, tuple[int, int]]:
    return ipaddress.ip_network(rule["source"], strict=False), _ports(rule["portRange"], FIELD)


def _checked(raw: Iterable[dict[str, Any]], where: str, kept: Iterable[Rule] = ()) -> list[Rule]:
    """New rules from ``raw`` (fresh ids), none of them the same as another or as ``kept``."""
    kept = list(kept)
    taken = {_admits(r): r for r in kept}
    out = []
    for i, item in enumerate(raw):
        rule, admits = _rule(item, f"{where}[{i}]")
        if admits in taken:
            other = taken[admits]
            said = f"rule {other['id']}" if other in kept else "an earlier rule"
            raise _refused(f"{where}[{i}]", f"admits the same network and ports as {said}")
        taken[admits] = rule
        out.append(rule)
    return out


# -- what a service has ---------------------------------------------------------------


def defaults(service_id: str) -> list[Rule]:
    """The rules of a service made without a list: every IPv4 address, each port.

    Their ids are derived from the service's, so they stay the same on every GET."""
    base = uuid.UUID(service_id)
    return [
        {
            "id": str(uuid.uuid5(base, f"default-{port}")),
            "source": "0.0.0.0/0",
            "description": f"default: every address ({what})",
            "portRange": port,
        }
        for port, what in zip(DEFAULT_PORTS, ("PostgreSQL", "PgBouncer"), strict=True)
    ]


def rules(row: ServiceRow) -> list[Rule]:
    """The service's rules as GET shows them."""
    return list(row.ip_access_list) if row.ip_access_list is not None else defaults(row.id)


def tcp_sources(found: Iterable[Rule]) -> list[str]:
    """The networks a sandbox server admits over TCP: those of the rules holding its port."""
    out: list[str] = []
    for rule in found:
        network, (first, last) = _admits(rule)
        if first <= SERVED_PORT <= last and str(network) not in out:
            out.append(str(network))
    return out


# -- requests ---------------------------------------------------------------------------


def check(body: dict[str, Any]) -> None:
    """A 400 for a create, restore or replica body whose list is not acceptable."""
    if FIELD in body:
        _checked(body[FIELD], FIELD)


def for_new(body: dict[str, Any], source: ServiceRow | None) -> list[Rule] | None:
    """The rules of a new service: the body's; else a restore's or replica's source's,
    under new ids; else None, the default ones."""
    if FIELD in body:
        return _checked(body[FIELD], FIELD)
    if source is None or source.ip_access_list is None:
        return None
    return [{**r, "id": str(uuid.uuid4())} for r in source.ip_access_list]


def changed(row: ServiceRow, change: dict[str, Any]) -> list[Rule]:
    """The rules after a PATCH's ``{add, remove}``: removals first, then additions."""
    kept = rules(row)
    for i, gone in enumerate(change.get("remove", [])):
        found = [r for r in kept if r["id"] == gone["id"]]
        if not found:
            shown = gone["id"] if len(gone["id"]) <= 64 else gone["id"][:61] + "..."
            raise _refused(f"{FIELD}.remove[{i}].id", f"the service has no rule {shown!r}")
        kept.remove(found[0])
    added = _checked(change.get("add", []), f"{FIELD}.add", kept)
    if len(kept) + len(added) > MAX_RULES:
        raise _refused(FIELD, f"a service has at most {MAX_RULES} rules")
    return kept + added


# -- the servers --------------------------------------------------------------------------


def write(node: Cluster, row: ServiceRow) -> bool:
    """Give one node of ``row`` the service's rules (its pg_hba.conf); True when changed.
    The caller reloads a running node."""
    return node.write_access(tcp_sources(rules(row)))


def _enforce(ctx: Context, row: ServiceRow) -> None:
    for node in [ctx.cluster(row), *ctx.layout.standbys(row)]:
        if node.pgdata.is_dir() and write(node, row) and node.is_running():
            node.reload()


async def enforce(ctx: Context, service_id: str) -> None:
    """Every node of the service gets its stored rules; running ones reload them at once.

    Under the service's lock: a node being made or moved meanwhile is made with the
    stored rules, or gets them here once it is done."""
    async with ctx.lock(service_id):
        row = ctx.store.get(service_id)
        if row is not None:
            await ctx.run(_enforce, ctx, row)
