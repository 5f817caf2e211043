"""The sandbox's own sessions on a server: as its monitoring role, or as its internal superuser.

Both go over the server's unix socket, authenticated by ``peer`` (who we are,
as the kernel says: :mod:`postgres.access`), with no password anywhere.

- :func:`monitor` (``pgcloud_monitor``) is what the rest of the sandbox gets
  (``Cluster.connect``): telemetry, query insights, replication progress. It
  resolves names the usual way (``pg_stat_statements`` lives in ``public``),
  which the service's user can shadow; that is harmless, since it holds no
  right the service's own user lacks.
- :func:`superuser` (``pgcloud_admin``) is for the engine alone: passwords,
  settings checks and reloads, promotion. Its sessions see ``pg_catalog`` only
  and fire no trigger (:data:`~postgres.roles.HARDENED`).

A server made before these roles existed has neither: its bootstrap superuser
is still ``postgres``. The first session then signs in as that role (the peer
map allows it for the sandbox's OS user) and migrates the server
(:func:`postgres.roles.ensure`). A copy of such a server still replaying WAL
cannot change its catalog; it gets a hardened session of that old superuser
until the replay brings the roles from its primary.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.postgres import roles
from pgcloud_nb.sandbox.postgres.access import ADMIN, MONITOR, SERVICE

__all__ = ["Conn", "monitor", "open_as", "superuser"]

Conn = psycopg.Connection[Any]


def open_as(socket_dir: Path, port: int, role: str, dbname: str, **kw: Any) -> Conn:
    """An autocommit session of ``role`` over the unix socket in ``socket_dir``."""
    kw.setdefault("autocommit", True)
    kw.setdefault("connect_timeout", 10)
    return psycopg.connect(host=str(socket_dir), port=port, user=role, dbname=dbname, **kw)


def _no_role(error: psycopg.OperationalError, role: str) -> bool:
    return f'role "{role}" does not exist' in str(error)


def superuser(
    socket_dir: Path, port: int, lock: threading.RLock, dbname: str = "postgres", **kw: Any
) -> Conn:
    """A hardened session of the internal superuser (see the module docstring)."""
    kw["options"] = roles.HARDENED
    try:
        return open_as(socket_dir, port, ADMIN, dbname, **kw)
    except psycopg.OperationalError as e:
        if not _no_role(e, ADMIN):
            raise
    with lock:  # one migration at a time; another thread may have just done it
        try:
            return open_as(socket_dir, port, ADMIN, dbname, **kw)
        except psycopg.OperationalError as e:
            if not _no_role(e, ADMIN):
                raise
        legacy = open_as(socket_dir, port, SERVICE, "postgres", **kw)
        try:
            row = legacy.execute("SELECT rolsuper FROM pg_roles WHERE oid = 10").fetchone()
            if not (row and row[0]) or legacy.info.parameter_status("is_superuser") != "on":
                raise EngineError(f"the server on {socket_dir} has no superuser the sandbox knows")
            roles.ensure(legacy, lambda db: open_as(socket_dir, port, ADMIN, db, **kw))
            recovering = legacy.execute("SELECT pg_is_in_recovery()").fetchone()
        except BaseException:
            legacy.close()
            raise
        if recovering and recovering[0]:
            if dbname == "postgres":
                return legacy
            legacy.close()
            return open_as(socket_dir, port, SERVICE, dbname, **kw)
        legacy.close()
        return open_as(socket_dir, port, ADMIN, dbname, **kw)


def monitor(
    socket_dir: Path, port: int, lock: threading.RLock, dbname: str = "postgres", **kw: Any
) -> Conn:
    """A session of the monitoring role (see the module docstring)."""
    try:
        return open_as(socket_dir, port, MONITOR, dbname, **kw)
    except psycopg.OperationalError as e:
        if not _no_role(e, MONITOR):
            raise
    admin = superuser(socket_dir, port, lock, dbname, **kw)  # migrates an older server
    if admin.info.parameter_status("session_authorization") == SERVICE:
        return admin  # a copy of an older server, still replaying: read it hardened
    admin.close()
    return open_as(socket_dir, port, MONITOR, dbname, **kw)
