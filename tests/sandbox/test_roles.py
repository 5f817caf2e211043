"""The API's ``postgres`` is a managed superuser, not a PostgreSQL one; the sandbox keeps its own.

New servers are made that way; a server an older sandbox made (bootstrap
superuser ``postgres``, ``trust`` on the socket), still running and holding the
user's objects, is migrated when a new sandbox starts, without losing data, and
so is a copy of one taken before (a restore from an old backup).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcloud_nb.sandbox.postgres import process
from pgcloud_nb.sandbox.postgres.cluster import Cluster, find_bindir, free_port
from pgcloud_nb.sandbox.postgres.conffiles import BASE_CONF, USER_CONF, USER_HEADER, render_conf
from pgcloud_nb.sandbox.postgres.datadir import copy
from pgcloud_nb.sandbox.postgres.hardening import harden_clusters
from pgcloud_nb.sandbox.postgres.osuser import chown_tree, run_pg, write_owned
from pgcloud_nb.sandbox.postgres.passwords import alter_password, scram_verifier
from pgcloud_nb.sandbox.postgres.sessions import open_as

OLD_HBA = """\
local     all          all                 trust
local     replication  all                 trust
hostssl   all          all   127.0.0.1/32  scram-sha-256
hostnossl all          all   0.0.0.0/0     reject
"""
# What the service's user made while it was a superuser, and would now use to escape.
OLD_OBJECTS = [
    "CREATE TABLE t (id serial PRIMARY KEY, v text)",
    "INSERT INTO t (v) VALUES ('kept')",
    "CREATE VIEW tv AS SELECT v FROM t",
    "CREATE SCHEMA app",
    "CREATE TABLE app.x (n int)",
    "CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE DATABASE other",
    "ALTER ROLE postgres SET work_mem = '5MB'",
    "CREATE ROLE evil SUPERUSER LOGIN",
    "CREATE ROLE friend LOGIN",
    "GRANT postgres TO friend",
    "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO PUBLIC",
    "CREATE FUNCTION rf(text) RETURNS text LANGUAGE internal STRICT AS 'pg_read_file_all'",
    "CREATE FUNCTION sd() RETURNS text SECURITY DEFINER LANGUAGE sql"
    " AS $$SELECT pg_read_file('/etc/hostname')$$",
    "CREATE EXTENSION file_fdw",
    "CREATE SERVER fs FOREIGN DATA WRAPPER file_fdw",
    "CREATE FOREIGN TABLE ft (l text) SERVER fs OPTIONS (program 'id')",
]
ESCAPES = [
    "SELECT rf('/etc/hostname')",
    "SELECT sd()",
    "SELECT * FROM ft",
    "SELECT pg_read_file('/etc/hostname')",
    "COPY (SELECT 1) TO PROGRAM 'true'",
    "SET ROLE pgcloud_admin",
    "ALTER ROLE evil PASSWORD 'x'",
]


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Path]:
    from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir

    made = usable_clusters_dir(tmp_path / "clusters")
    yield made
    for pgdata in made.glob("*/pgdata"):
        Cluster(pgdata.parent, 0).stop("immediate")
    shutil.rmtree(made.resolve(), ignore_errors=True)


def _old_initdb(pgdata: Path) -> None:
    """A data folder as the sandbox made them before it had its own roles."""
    bindir = find_bindir()
    pgdata.mkdir(mode=0o700)
    chown_tree(pgdata)
    initdb = [bindir / "initdb", "-D", pgdata, "-U", "postgres", "-E", "UTF8", "--locale=C"]
    run_pg([*initdb, "--auth-local=trust", "--no-sync", "--no-instructions"], what="initdb")
    single = [bindir / "postgres", "--single", "-D", pgdata, "postgres"]
    run_pg(single, input="CREATE EXTENSION pg_stat_statements;\n", what="single")


def _old_server(clusters: Path, password: str) -> Cluster:
    """Made and started the old way (no migration), holding OLD_OBJECTS."""
    c = Cluster(clusters / f"old-{secrets.token_hex(3)}", free_port())
    c.init_from(_old_initdb, {})
    c.install_certificates(["localhost"])
    main = c.pgdata / "postgresql.conf"
    write_owned(main, main.read_text() + f"\ninclude '{BASE_CONF}'\n")
    write_owned(c.pgdata / USER_CONF, render_conf({}, USER_HEADER))
    write_owned(c.pgdata / "pg_hba.conf", OLD_HBA)
    process.wait_ready(c.pgdata, c.log_dir, 30, process.launch(c.bindir, c.pgdata, c.log_dir))
    with open_as(c.socket_dir, c.port, "postgres", "postgres") as conn:
        alter_password(conn, scram_verifier(password))
        for statement in OLD_OBJECTS:
            conn.execute(statement)  # type: ignore[arg-type]
    with open_as(c.socket_dir, c.port, "postgres", "other") as conn:
        conn.execute("CREATE TABLE o (n int)")
    return c


def _tls(c: Cluster, password: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(
        f"host=127.0.0.1 port={c.port} user=postgres password={password} dbname={dbname}"
        " sslmode=require",
        autocommit=True,
    )


def _escapes(c: Cluster, password: str) -> list[str]:
    worked = []
    for statement in ESCAPES:
        try:
            with _tls(c, password) as conn:
                conn.execute(statement)  # type: ignore[arg-type]
            worked.append(statement)
        except psycopg.Error:
            pass
    return worked


def _check_migrated(c: Cluster, password: str) -> None:
    assert "trust" not in (c.pgdata / "pg_hba.conf").read_text()
    with c.superuser() as conn:
        roles = dict(conn.execute("SELECT rolname, rolsuper FROM pg_roles").fetchall())
        assert conn.execute("SELECT rolname FROM pg_authid WHERE oid = 10").fetchone() == (
            "pgcloud_admin",
        )
        friends = conn.execute("SELECT count(*) FROM pg_auth_members WHERE roleid = 10").fetchone()
    assert roles["pgcloud_admin"] and not roles["postgres"] and not roles["evil"]
    assert [r for r, superuser in roles.items() if superuser] == ["pgcloud_admin"]
    assert friends == (0,)  # friend was a member of the old superuser
    with _tls(c, password) as conn:  # the user's password, settings and data are all there
        assert conn.execute("SHOW work_mem").fetchone() == ("5MB",)
        assert ("kept",) in conn.execute("SELECT v FROM tv").fetchall()
        conn.execute("INSERT INTO t (v) VALUES ('new')")
        conn.execute("INSERT INTO app.x VALUES (1)")
        assert conn.execute("SELECT one()").fetchone() == (1,)
        conn.execute("COMMENT ON VIEW tv IS 'mine'")  # the user owns it now
    with _tls(c, password, "other") as conn:
        conn.execute("INSERT INTO o VALUES (1)")
    assert _escapes(c, password) == []
    with c.connect() as conn:  # the sandbox's own reads
        assert conn.execute("SELECT count(*) >= 0 FROM pg_stat_statements").fetchone() == (True,)


def test_a_new_server_has_the_managed_roles(clusters: Path) -> None:
    password = "Pw1" + secrets.token_urlsafe(12)
    c = Cluster(clusters / "new", free_port())
    c.init(password, hostnames=["localhost"])
    c.start()
    try:
        with c.superuser() as conn:
            assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
            row = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
                " pg_has_role(oid, 'pg_monitor', 'MEMBER'),"
                " pg_has_role(oid, 'pg_signal_backend', 'MEMBER'),"
                " (SELECT datdba FROM pg_database WHERE datname = 'postgres') = oid"
                " FROM pg_roles WHERE rolname = 'postgres'"
            ).fetchone()
            major = conn.info.server_version // 10000
        assert row == (False, True, major >= 16, False, True, True, True)
        with _tls(c, password) as conn:
            conn.execute("CREATE EXTENSION pgcrypto")  # trusted extensions: yes
            conn.execute("CREATE DATABASE mine")
        assert _escapes(c, password) == []
    finally:
        c.remove()


def test_an_older_server_is_migrated_without_losing_data(clusters: Path) -> None:
    password = "Pw1" + secrets.token_urlsafe(12)
    old = _old_server(clusters, password)
    assert len(_escapes(old, password)) >= 5  # what the old layout let through
    backup = clusters.resolve() / "backup"  # a base backup an older sandbox took
    backup.mkdir(mode=0o700)
    chown_tree(backup)
    source = f"host={old.socket_dir} port={old.port} user=postgres"
    basebackup = [old.bindir / "pg_basebackup", "-d", source, "-D", backup, "-X", "fetch"]
    run_pg([*basebackup, "--checkpoint=fast", "--no-sync"], what="pg_basebackup")

    harden_clusters(clusters)  # what a new sandbox does first: no trust from now on
    deadline = time.monotonic() + 10  # the server re-reads pg_hba.conf on SIGHUP, soon
    while time.monotonic() < deadline:  # and then not even the sandbox's OS user gets in
        try:
            open_as(old.socket_dir, old.port, "evil", "postgres").close()
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("trust still let a role in after the access files were rewritten")
    old.start()  # it runs: adopted, migrated
    _check_migrated(old, password)
    old.restart()  # and again: nothing left to do, nothing lost
    _check_migrated(old, password)

    restored = Cluster(clusters / "restored", free_port())
    restored.init_from(lambda pgdata: copy(backup, pgdata), {})
    restored.start()
    with _tls(restored, password) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]
    assert _escapes(restored, password) == []
