"""The roles of a sandbox server: the API's ``postgres`` is a managed superuser, not a real one.

Every sandbox server runs as the same OS user, so a PostgreSQL superuser of one
service could reach every other one (``COPY … FROM PROGRAM``, ``pg_read_file``,
untrusted extensions). So, as managed services do:

- :data:`~access.SERVICE` (``postgres``, the API's user) owns the ``postgres``
  database, may create databases (and roles from PostgreSQL 16 on, where
  ``CREATEROLE`` no longer lets a role grant itself ``pg_execute_server_program``;
  on 15 and older it does, so there it may not), create trusted extensions, see
  every statistic (``pg_monitor``), signal other sessions and checkpoint. It can
  neither run programs nor read or write server files.
- :data:`~access.ADMIN` (``pgcloud_admin``) is the bootstrap superuser, the
  sandbox's alone (:mod:`postgres.access`: peer authentication on the private
  socket). Its sessions run with ``search_path=pg_catalog`` and
  ``session_replication_role=replica`` (:data:`HARDENED`), so no function,
  operator or trigger a service's user made ever runs as a superuser.
- :data:`~access.MONITOR` (``pgcloud_monitor``) reads statistics for telemetry
  and query insights with no more rights than ``postgres`` has.

New servers get these roles in their template (:func:`fresh_sql`). A server made
before them, whose bootstrap superuser is ``postgres``, is migrated on first
contact (:func:`ensure`): the bootstrap role becomes ``pgcloud_admin`` (renaming
keeps every catalog reference), a new ``postgres`` takes over its password,
settings, memberships and the objects the service's user made, every other
superuser is demoted, and what reaches files or programs (functions in untrusted
languages, ``file_fdw`` tables, extra grants on the catalog's functions) stays the
internal superuser's, usable by no one else. A marker comment on the bootstrap
role says the work is done; a migration cut short is finished on the next contact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pgcloud_nb.sandbox.postgres.access import ADMIN, MONITOR, SERVICE
from pgcloud_nb.sandbox.postgres.passwords import alter_password

__all__ = ["HARDENED", "MARKER", "ensure", "fresh_sql"]

log = logging.getLogger("pgcloud_nb.sandbox")

Conn = psycopg.Connection[Any]
MARKER = "pgcloud-nb internal superuser; roles r1"
HARDENED = "-c search_path=pg_catalog -c session_replication_role=replica"
# What the service's user gets, from the major that has it (with ADMIN OPTION: from
# 16 on it may hand them to the roles it makes).
SERVICE_ROLES = (("pg_monitor", 10), ("pg_signal_backend", 10), ("pg_checkpoint", 15),
                 ("pg_maintain", 17))  # fmt: skip
# Membership in these is membership in the OS user's powers.
DANGEROUS = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
MIGRATING = "pgcloud_migrating"  # a short-lived superuser the rename runs as
# pg_identify_object()'s type -> the ALTER that changes its owner.
KINDS = {
    "table": "TABLE", "view": "VIEW", "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE", "foreign table": "FOREIGN TABLE", "function": "FUNCTION",
    "procedure": "PROCEDURE", "aggregate": "AGGREGATE", "schema": "SCHEMA", "type": "TYPE",
    "collation": "COLLATION", "conversion": "CONVERSION", "operator": "OPERATOR",
    "operator class": "OPERATOR CLASS", "operator family": "OPERATOR FAMILY",
    "text search configuration": "TEXT SEARCH CONFIGURATION",
    "text search dictionary": "TEXT SEARCH DICTIONARY", "statistics object": "STATISTICS",
    "server": "SERVER", "publication": "PUBLICATION", "large object": "LARGE OBJECT",
}  # fmt: skip


def _attributes(major: int) -> str:
    createrole = "CREATEROLE" if major >= 16 else "NOCREATEROLE"
    return f"LOGIN INHERIT NOSUPERUSER CREATEDB {createrole} NOREPLICATION NOBYPASSRLS"


MONITOR_ATTRIBUTES = "LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _service_roles(major: int) -> str:
    return ", ".join(name for name, since in SERVICE_ROLES if major >= since)


def _self_grant(major: int) -> list[str]:
    # From 16 on, a role's creator may act as it (SET ROLE) only if it grants itself so.
    return [f"ALTER ROLE {SERVICE} SET createrole_self_grant = 'set, inherit';"] * (major >= 16)


def fresh_sql(major: int) -> list[str]:
    """The statements that give a fresh data folder (bootstrap superuser :data:`ADMIN`)
    its roles, one per line: ``postgres --single`` runs them in the template."""
    return [
        f"CREATE ROLE {SERVICE} {_attributes(major)};",
        *_self_grant(major),
        f"CREATE ROLE {MONITOR} {MONITOR_ATTRIBUTES};",
        f"GRANT {_service_roles(major)} TO {SERVICE} WITH ADMIN OPTION;",
        f"GRANT pg_monitor TO {MONITOR};",
        f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO {MONITOR};",
        f"ALTER DATABASE postgres OWNER TO {SERVICE};",
        f"COMMENT ON ROLE {ADMIN} IS '{MARKER}';",
    ]


def ensure(conn: Conn, connect: Callable[[str], Conn]) -> None:
    """Bring a primary's roles to the model above (nothing to do once the marker is there).

    ``conn`` is a superuser session on database ``postgres`` (:data:`HARDENED`), as
    :data:`ADMIN` or, on a server older than these roles, as its bootstrap
    ``postgres``; ``connect(dbname)`` opens an :data:`ADMIN` session on another
    database. A server in recovery is left alone: its catalog follows its primary's.
    """
    row = conn.execute(
        "SELECT pg_is_in_recovery(), rolname::text, shobj_description(10, 'pg_authid') IS"
        " NOT DISTINCT FROM %s FROM pg_authid WHERE oid = 10",
        [MARKER],
    ).fetchone()
    assert row is not None
    recovering, bootstrap, done = row
    if recovering or done:
        return
    log.warning("migrating the roles of a server made before pgcloud_admin existed")
    major = conn.info.server_version // 10000
    with conn.transaction():
        if bootstrap != ADMIN:
            _adopt_bootstrap(conn, bootstrap, major)
        _converge(conn, major)
        _own_objects(conn)
    dbs = conn.execute(
        "SELECT datname::text FROM pg_database WHERE datallowconn AND datname <> current_database()"
    ).fetchall()
    for (dbname,) in dbs:
        with connect(dbname) as other, other.transaction():
            _own_objects(other)
    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(ADMIN), MARKER))


def _run(conn: Conn, statement: sql.Composable | str, *, what: str) -> bool:
    """One step in a savepoint: a step that fails is logged, the others still happen."""
    try:
        with conn.transaction():
            conn.execute(statement)  # type: ignore[arg-type]
        return True
    except psycopg.Error as e:
        log.warning("role migration: %s: %s", what, str(e).strip())
        return False


# A role's plain name (regrole's text form is quoted, ready for SQL, not for sql.Identifier).
_NAME = "(SELECT rolname::text FROM pg_roles WHERE oid = %s)"


def _oid(conn: Conn, role: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    return int(row[0]) if row else None


def _adopt_bootstrap(conn: Conn, bootstrap: str, major: int) -> None:
    """The bootstrap superuser becomes :data:`ADMIN`; a new :data:`SERVICE` takes over
    what belonged to the API's user (password, settings, memberships)."""
    ident = sql.Identifier
    for name in (ADMIN, MONITOR):  # names a user of the old superuser may have taken
        if (oid := _oid(conn, name)) is not None and oid != 10:
            aside = sql.SQL("ALTER ROLE {} RENAME TO {}")
            conn.execute(aside.format(ident(name), ident(f"{name}_old_{oid}")))
    # The session user cannot be renamed; a brief second superuser can rename it.
    conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER NOLOGIN").format(ident(MIGRATING)))
    conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(ident(MIGRATING)))
    conn.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(ident(bootstrap), ident(ADMIN)))
    conn.execute("RESET SESSION AUTHORIZATION")
    conn.execute(sql.SQL("DROP ROLE {}").format(ident(MIGRATING)))
    conn.execute(sql.SQL(f"CREATE ROLE {{}} {_attributes(major)}").format(ident(SERVICE)))
    row = conn.execute("SELECT rolpassword FROM pg_authid WHERE oid = 10").fetchone()
    if row and row[0]:  # the user's password (a SCRAM verifier) moves to the new role
        alter_password(conn, row[0])
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(ident(ADMIN)))
    service = _oid(conn, SERVICE)
    conn.execute("UPDATE pg_db_role_setting SET setrole = %s WHERE setrole = 10", [service])
    granted = conn.execute(
        f"SELECT {_NAME % 'roleid'} FROM pg_auth_members WHERE member = 10"
        f" AND {_NAME % 'roleid'} <> ALL(%s)",
        [[*DANGEROUS, MONITOR]],
    ).fetchall()
    for (role,) in granted:
        _run(conn, sql.SQL("GRANT {} TO {}").format(ident(role), ident(SERVICE)), what=role)


def _converge(conn: Conn, major: int) -> None:
    """Roles and databases as :func:`fresh_sql` makes them; no other superuser, no way in
    to the OS user's powers or to the internal roles."""
    ident = sql.Identifier
    if _oid(conn, SERVICE) is None:
        conn.execute(sql.SQL("CREATE ROLE {}").format(ident(SERVICE)))
    conn.execute(sql.SQL(f"ALTER ROLE {{}} {_attributes(major)}").format(ident(SERVICE)))
    for statement in _self_grant(major):
        conn.execute(statement)
    if _oid(conn, MONITOR) is None:
        conn.execute(sql.SQL("CREATE ROLE {}").format(ident(MONITOR)))
    conn.execute(
        sql.SQL(f"ALTER ROLE {{}} {MONITOR_ATTRIBUTES} PASSWORD NULL").format(ident(MONITOR))
    )
    others = "FROM pg_roles WHERE oid <> 10 AND rolname NOT LIKE 'pg\\_%%'"
    demote = [("NOSUPERUSER", "rolsuper"), ("NOREPLICATION", "rolreplication")]
    if major < 16:
        demote.append(("NOCREATEROLE", "rolcreaterole"))
    for attribute, column in demote:
        for (role,) in conn.execute(f"SELECT rolname::text {others} AND {column}").fetchall():
            conn.execute(sql.SQL(f"ALTER ROLE {{}} {attribute}").format(ident(role)))
    members = conn.execute(
        f"SELECT {_NAME % 'roleid'}, {_NAME % 'member'}, {_NAME % 'grantor'}"
        " FROM pg_auth_members WHERE member <> 10"
        f" AND (roleid = 10 OR {_NAME % 'roleid'} = ANY(%s))",
        [[*DANGEROUS, MONITOR]],
    ).fetchall()
    for role, member, grantor in members:
        conn.execute(
            sql.SQL("REVOKE {} FROM {} GRANTED BY {}").format(
                ident(role), ident(member), ident(grantor)
            )
        )
    conn.execute(f"GRANT {_service_roles(major)} TO {SERVICE} WITH ADMIN OPTION")
    conn.execute(f"GRANT pg_monitor TO {MONITOR}")
    for (db,) in conn.execute(
        "SELECT datname::text FROM pg_database WHERE datdba = 10"
        " AND datname NOT IN ('template0', 'template1')"
    ).fetchall():
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(db), ident(SERVICE)))


# Objects of the bootstrap role (oid 10) made after initdb, not part of an extension and
# not owned through another object (an index, a serial's sequence, a row type), except
# those that reach files or programs (kept back, see _confine).
_MADE = """
WITH made(classid, objid) AS (
  SELECT 'pg_class'::regclass, c.oid FROM pg_class c
   WHERE relowner = 10 AND relkind IN ('r','p','v','m','S','f') AND relpersistence <> 't'
     AND NOT EXISTS (SELECT 1 FROM pg_foreign_table ft JOIN pg_foreign_server s
       ON s.oid = ft.ftserver JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
       WHERE ft.ftrelid = c.oid AND w.fdwname = 'file_fdw')
  UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p JOIN pg_language l
   ON l.oid = p.prolang WHERE proowner = 10 AND l.lanpltrusted
  UNION ALL SELECT 'pg_namespace'::regclass, oid FROM pg_namespace
   WHERE nspowner = 10 AND nspname !~ '^pg_'
  UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typowner = 10
  UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collowner = 10
  UNION ALL SELECT 'pg_conversion'::regclass, oid FROM pg_conversion WHERE conowner = 10
  UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprowner = 10
  UNION ALL SELECT 'pg_opclass'::regclass, oid FROM pg_opclass WHERE opcowner = 10
  UNION ALL SELECT 'pg_opfamily'::regclass, oid FROM pg_opfamily WHERE opfowner = 10
  UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgowner = 10
  UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictowner = 10
  UNION ALL SELECT 'pg_statistic_ext'::regclass, oid FROM pg_statistic_ext WHERE stxowner = 10
  UNION ALL SELECT 'pg_foreign_server'::regclass, s.oid FROM pg_foreign_server s
   JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
   WHERE srvowner = 10 AND w.fdwname <> 'file_fdw'
  UNION ALL SELECT 'pg_publication'::regclass, oid FROM pg_publication WHERE pubowner = 10
  UNION ALL SELECT 'pg_largeobject'::regclass, oid FROM pg_largeobject_metadata
   WHERE lomowner = 10
)
SELECT i.type, i.identity FROM made m, pg_identify_object(m.classid, m.objid, 0) i
WHERE m.objid >= 16384 AND NOT EXISTS (
  SELECT 1 FROM pg_depend d WHERE d.classid = m.classid AND d.objid = m.objid
   AND (d.deptype IN ('e', 'i') OR (d.deptype = 'a' AND m.classid = 'pg_class'::regclass
        AND d.refclassid = 'pg_class'::regclass)))
"""

# Functions in untrusted languages (C, internal, plpython3u…) and file_fdw tables the
# service's user made: whoever owns or may call them runs a program or reads a file.
_CONFINED = """
SELECT 'FUNCTION', p.oid::regprocedure::text, ARRAY(SELECT r.rolname::text FROM
  aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee WHERE a.grantee <> 10)
 FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid >= 16384 AND NOT l.lanpltrusted AND NOT EXISTS (SELECT 1 FROM pg_depend d
   WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'FOREIGN TABLE', c.oid::regclass::text, ARRAY(SELECT r.rolname::text FROM
  aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee WHERE a.grantee <> 10)
 FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
 JOIN pg_foreign_server s ON s.oid = ft.ftserver
 JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE w.fdwname = 'file_fdw'
"""

# Grants on the internal superuser's functions and relations (the catalog's, the
# extensions') beyond their initial privileges: the old superuser may have handed out
# pg_read_file or lo_import. PUBLIC's default EXECUTE (no initial privileges) stays.
_EXTRA_GRANTS = """
SELECT o.kind, o.object, a.privilege_type,
       (SELECT rolname::text FROM pg_roles WHERE oid = a.grantee),
       (SELECT rolname::text FROM pg_roles WHERE oid = a.grantor)
FROM (
  SELECT 'FUNCTION' AS kind, oid::regprocedure::text AS object, 'pg_proc'::regclass AS cls,
         oid, proacl AS acl FROM pg_proc WHERE proowner = 10 AND proacl IS NOT NULL
  UNION ALL
  SELECT 'TABLE', oid::regclass::text, 'pg_class'::regclass, oid, relacl FROM pg_class
   WHERE relowner = 10 AND relacl IS NOT NULL AND relkind IN ('r','v','m','p','f','S')
) o CROSS JOIN LATERAL aclexplode(o.acl) a
WHERE a.grantee <> 10 AND NOT EXISTS (
  SELECT 1 FROM pg_init_privs ip CROSS JOIN LATERAL aclexplode(ip.initprivs) b
   WHERE ip.classoid = o.cls AND ip.objoid = o.oid AND ip.objsubid = 0
     AND b.grantee = a.grantee AND b.privilege_type = a.privilege_type)
AND NOT (a.grantee = 0 AND o.kind = 'FUNCTION' AND NOT EXISTS (
  SELECT 1 FROM pg_init_privs ip WHERE ip.classoid = o.cls AND ip.objoid = o.oid))
"""


def _own_objects(conn: Conn) -> None:
    """In one database: the user's objects to :data:`SERVICE`, the dangerous ones confined.

    Identities come from the catalog (pg_identify_object, regprocedure), already quoted.
    """
    to = sql.Identifier(SERVICE)
    for kind, identity in conn.execute(_MADE).fetchall():
        if keyword := KINDS.get(kind):
            alter = sql.SQL(f"ALTER {keyword} {identity} OWNER TO {{}}").format(to)
            _run(conn, alter, what=f"{kind} {identity}")
    for keyword, identity, grantees in conn.execute(_CONFINED).fetchall():
        admin = sql.Identifier(ADMIN)
        alter = sql.SQL(f"ALTER {keyword} {identity} OWNER TO {{}}").format(admin)
        _run(conn, alter, what=identity)
        on = "TABLE" if keyword == "FOREIGN TABLE" else keyword  # GRANT's word for it
        revoke = sql.SQL(f"REVOKE ALL ON {on} {identity} FROM {{}}")
        for who in [sql.SQL("PUBLIC"), *map(sql.Identifier, grantees)]:
            _run(conn, revoke.format(who), what=f"grants on {identity}")
    for kind, identity, privilege, grantee, grantor in conn.execute(_EXTRA_GRANTS).fetchall():
        who = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
        revoke = sql.SQL(f"REVOKE {privilege} ON {kind} {identity} FROM {{}} GRANTED BY {{}}")
        _run(conn, revoke.format(who, sql.Identifier(grantor)), what=f"{privilege} on {identity}")
