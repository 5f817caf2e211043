"""Who may connect to a sandbox server, and as which role: ``pg_hba.conf`` and ``pg_ident.conf``.

Three roles matter (:mod:`postgres.roles` makes them):

- :data:`SERVICE` (``postgres``), the API's user: the service's credential
  holder logs in with its password, over TLS on loopback only (SCRAM, TLS 1.3),
  as on the real service. It is a managed "superuser" that is not a PostgreSQL
  superuser.
- :data:`ADMIN` (``pgcloud_admin``), the sandbox's internal superuser: password
  changes, settings checks and reloads, promotion, replication and base backups.
- :data:`MONITOR` (``pgcloud_monitor``): statistics and settings reads
  (telemetry, query insights). It holds nothing the service's own user lacks, so
  a function the user planted where the monitor looks (``public``) gains nothing.

The sandbox's roles log in over the server's unix socket only, with ``peer``
authentication: the kernel tells the server which OS user connects
(``SO_PEERCRED``), and :func:`ident` maps only the sandbox's own OS user (and,
for replication, the server's) to them. No secret exists to steal, and no
``trust`` line exists at all: another OS user is refused even if they reached the
socket (which lives in a private folder, :mod:`postgres.private`), and the
service's credential holder only ever arrives over TCP, where these roles are
rejected outright.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
from collections.abc import Iterable, Sequence
from pathlib import Path

from pgcloud_nb.sandbox.postgres.osuser import pg_user, write_if_changed

__all__ = [
    "ADMIN",
    "HBA",
    "IDENT_MAP",
    "LOOPBACK",
    "MONITOR",
    "REPL_MAP",
    "SERVICE",
    "SOURCES",
    "hba",
    "hba_of",
    "ident",
]

SERVICE = "postgres"  # the API's username (ServiceRow.username)
ADMIN = "pgcloud_admin"
MONITOR = "pgcloud_monitor"
IDENT_MAP = "pgcloud"  # sandbox OS user -> the sandbox's roles
REPL_MAP = "pgcloud_repl"  # sandbox or server OS user -> ADMIN, replication only

_HEAD = f"""\
# pgcloud-nb sandbox: who may connect, and as which role. Managed by pgcloud-nb.
#
# The sandbox's own roles: over the unix socket only (a private 0700 folder), identified by
# the kernel (peer) and mapped in pg_ident.conf from the sandbox's OS user alone. Base backups
# and standbys stream as {ADMIN}; the server's own OS user may do that, nothing else.
local     replication  {ADMIN}                          peer map={REPL_MAP}
local     replication  all                              reject
local     all          {ADMIN},{MONITOR},{SERVICE}  peer map={IDENT_MAP}
local     all          all                              reject
# Everyone else: SCRAM over TLS on loopback, never as the sandbox's roles, never replication.
host      all          {ADMIN},{MONITOR}        all           reject
host      replication  all                              all           reject
"""
_TAIL = """\
# Like the real service: no connection without TLS.
hostnossl all          all                              all           reject
"""
LOOPBACK = ("127.0.0.1/32", "::1/128")
# In the data folder: the networks the service's IP access list admits over TCP, as JSON
# (services/access_lists.py). Copies of the folder (standbys, base backups) carry it.
SOURCES = "pgcloud-ip-access.json"


def _tcp(networks: Iterable[str]) -> str:
    return "".join(
        f"hostssl   all          all                              {n:<13} scram-sha-256\n"
        for n in networks
    )


HBA = _HEAD + _tcp(LOOPBACK) + _TAIL  # a server whose service records no access list


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # initdb would have refused already; name the problem anyway
        raise RuntimeError(f"uid {uid} has no user name; peer authentication needs one") from None


def hba(sources: Sequence[str] | None = None) -> str:
    """The ``pg_hba.conf`` of a sandbox server.

    ``sources`` are the networks its service's IP access list admits over TCP (an
    address or CIDR range each; one that is neither is left out); None admits
    loopback only, as before access lists, and ``[]`` admits no TCP client at all.
    """
    if sources is None:
        return HBA
    networks = []
    for source in sources:
        with contextlib.suppress(ValueError):
            networks.append(str(ipaddress.ip_network(source, strict=False)))
    said = "# The service's IP access list: TLS and SCRAM from these networks only.\n"
    return _HEAD + said + _tcp(networks) + _TAIL


def hba_of(pgdata: Path, sources: Sequence[str] | None = None) -> str:
    """The ``pg_hba.conf`` of the server in ``pgdata``, for the ``sources`` given, else for
    those recorded there (:data:`SOURCES`), else for loopback only.

    Given sources are recorded first: a rewrite without them (a resume, the start-up
    hardening) keeps them, and copies of the folder (standbys, base backups) start
    with them. A record that cannot be read admits nobody rather than everybody.
    """
    record = pgdata / SOURCES
    if sources is not None:
        write_if_changed(record, json.dumps(list(sources)))
    try:
        found = json.loads(record.read_text())
    except FileNotFoundError:
        return hba(None)
    except (OSError, ValueError):
        return hba([])
    return hba([s for s in found if isinstance(s, str)] if isinstance(found, list) else [])


def ident() -> str:
    """The ``pg_ident.conf``: which OS users may log in as the sandbox's roles.

    The sandbox's OS user gets :data:`ADMIN`, :data:`MONITOR` and :data:`SERVICE`
    (the last only so that servers made before these roles can be migrated, see
    :mod:`postgres.roles`). The server's OS user (when the sandbox is root, an
    unprivileged one) gets :data:`ADMIN` for replication only: the WAL receivers of
    standbys and pg_basebackup run as that user.
    """
    sandbox, server = _name(os.geteuid()), pg_user().pw_name
    lines = ["# MAPNAME  SYSTEM-USERNAME  PG-USERNAME  (managed by pgcloud-nb)"]
    lines += [f"{IDENT_MAP}  {sandbox}  {role}" for role in (ADMIN, MONITOR, SERVICE)]
    lines += [f"{REPL_MAP}  {user}  {ADMIN}" for user in dict.fromkeys([sandbox, server])]
    return "\n".join(lines) + "\n"
