"""Who may reach what, tried for real on a running sandbox (README "Security model").

A service's credential holder gets that service only: from service A's
``postgres`` connection, every known way out (programs, server files, large
objects, foreign data wrappers, ALTER SYSTEM, role escalation, a function the
sandbox's own reads might run) must fail to reach service B's rows, the
sandbox's credentials.json or another service's files. Another OS user gets
nothing at all: no file, no socket, no login. Each attempt is counted; the
figures are printed in the run's summary.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_api import CREATE, org_client, result, wait_state

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.postgres.cluster import Cluster

SECRET_B = "b-secret-" + uuid.uuid4().hex  # a row only service B holds


def _service(api: httpx.Client, name: str) -> dict[str, Any]:
    created = result(api.post("/postgres", json={**CREATE, "name": name}))
    wait_state(api, created["id"], "running")
    return dict(created)


@pytest.fixture(scope="module")
def two(sandbox: SandboxInfo) -> Iterator[tuple[dict[str, Any], dict[str, Any], Cluster]]:
    """Services A and B (B holds SECRET_B), and B's server as the sandbox sees it."""
    with org_client(sandbox) as api:
        a, b = _service(api, "iso-a"), _service(api, "iso-b")
        with psycopg.connect(b["connectionString"], autocommit=True) as conn:
            conn.execute("CREATE TABLE secret (v text)")
            conn.execute("INSERT INTO secret VALUES (%s)", [SECRET_B])
        b_server = Cluster(sandbox.home / "clusters" / b["id"], b["port"])
        yield a, b, b_server
        for svc in (a, b):
            api.delete(f"/postgres/{svc['id']}")


def _try(dsn: str, statements: list[str]) -> str | None:
    """Run ``statements`` in one fresh session; their last output, or None on any error."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            rows: list[Any] = []
            for statement in statements:
                cur = conn.execute(statement)  # type: ignore[arg-type]
                rows = cur.fetchall() if cur.description else []
            return repr(rows)
    except psycopg.Error:
        return None


def test_a_service_reaches_only_itself(
    sandbox: SandboxInfo, two: tuple[dict[str, Any], dict[str, Any], Cluster], figures: Any
) -> None:
    a, b, b_server = two
    dsn = a["connectionString"]
    creds = sandbox.home.resolve() / "credentials.json"
    key_secret = sandbox.key_secret
    b_sock, b_port, b_data = b_server.socket_dir, b_server.port, b_server.pgdata
    to_b = f"host={b_sock} port={b_port} dbname=postgres"
    psql = f"psql -X -At -c ''select v from secret'' ''{to_b} user=%s''"
    marker = Path(f"/tmp/pgcloud-nb-iso-{uuid.uuid4().hex}")
    # name -> (statements, what a success would show in the output)
    attempts: dict[str, tuple[list[str], str]] = {
        "COPY FROM PROGRAM psql to B as postgres": (
            [
                "CREATE TEMP TABLE o (l text)",
                f"COPY o FROM PROGRAM '{psql % 'postgres'}'",
                "SELECT * FROM o",
            ],
            SECRET_B,
        ),
        "COPY FROM PROGRAM psql to B as pgcloud_admin": (
            [
                "CREATE TEMP TABLE o (l text)",
                f"COPY o FROM PROGRAM '{psql % 'pgcloud_admin'}'",
                "SELECT * FROM o",
            ],
            SECRET_B,
        ),
        "COPY TO PROGRAM": ([f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"], "[]"),
        "pg_read_file credentials.json": ([f"SELECT pg_read_file('{creds}')"], key_secret),
        "pg_read_file B's server key": (
            [f"SELECT pg_read_file('{b_data}/server.key')"],
            "PRIVATE KEY",
        ),
        "pg_read_binary_file credentials.json": (
            [f"SELECT convert_from(pg_read_binary_file('{creds}'), 'UTF8')"],
            key_secret,
        ),
        "pg_read_binary_file B's settings": (
            [f"SELECT convert_from(pg_read_binary_file('{b_data}/pgcloud-base.conf'), 'UTF8')"],
            "unix_socket",
        ),
        "pg_ls_dir of the home": ([f"SELECT pg_ls_dir('{creds.parent}')"], "credentials"),
        "server-side lo_import": (
            [f"SELECT convert_from(lo_get(lo_import('{creds}')), 'UTF8')"],
            key_secret,
        ),
        "COPY TO a server file": ([f"COPY (SELECT 1) TO '{marker}'"], "[]"),
        "file_fdw over credentials.json": (
            [
                "CREATE EXTENSION IF NOT EXISTS file_fdw",
                "CREATE SERVER IF NOT EXISTS f FOREIGN DATA WRAPPER file_fdw",
                f"CREATE FOREIGN TABLE c (l text) SERVER f OPTIONS (filename '{creds}')",
                "SELECT * FROM c",
            ],
            key_secret,
        ),
        "ALTER SYSTEM": (["ALTER SYSTEM SET archive_command = 'true'"], "[]"),
        "dblink to B": (
            [
                "CREATE EXTENSION IF NOT EXISTS dblink",
                f"SELECT * FROM dblink('{to_b} user=pgcloud_admin', 'select v from secret')"
                " AS t(v text)",
            ],
            SECRET_B,
        ),
        "postgres_fdw to B": (
            [
                "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
                f"CREATE SERVER b FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{b_sock}',"
                f" port '{b_port}', dbname 'postgres')",
                "CREATE USER MAPPING FOR postgres SERVER b OPTIONS (user 'pgcloud_admin')",
                "CREATE FOREIGN TABLE s (v text) SERVER b OPTIONS (table_name 'secret')",
                "SELECT * FROM s",
            ],
            SECRET_B,
        ),
        "grant itself pg_execute_server_program": (
            ["GRANT pg_execute_server_program TO postgres"],
            "[]",
        ),
        "grant itself pg_read_server_files": (["GRANT pg_read_server_files TO postgres"], "[]"),
        "ALTER ROLE postgres SUPERUSER": (["ALTER ROLE postgres SUPERUSER"], "[]"),
        "a new superuser role": (["CREATE ROLE x SUPERUSER LOGIN"], "[]"),
        "SET ROLE pgcloud_admin": (["SET ROLE pgcloud_admin", "SELECT 1"], "[(1,)]"),
        "SET SESSION AUTHORIZATION": (
            ["SET SESSION AUTHORIZATION pgcloud_admin", "SELECT 1"],
            "[(1,)]",
        ),
        "a function in an untrusted language": (
            [
                "CREATE FUNCTION rf(text) RETURNS text LANGUAGE internal STRICT"
                " AS 'pg_read_file_all'",
                f"SELECT rf('{creds}')",
            ],
            key_secret,
        ),
    }
    outcomes = {name: _try(dsn, stmts) for name, (stmts, _) in attempts.items()}
    reached = [
        name
        for name, (_, shows) in attempts.items()
        if outcomes[name] is not None and shows in (outcomes[name] or "")
    ]
    # The sandbox's own logins are refused over TCP, to A and to B, with or without TLS.
    for role in ("pgcloud_admin", "pgcloud_monitor"):
        for svc in (a, b):
            name = f"TCP login to {svc['name']} as {role}"
            outcomes[name] = _try(
                f"host=127.0.0.1 port={svc['port']} user={role} dbname=postgres sslmode=require",
                ["SELECT 1"],
            )
            if outcomes[name] is not None:
                reached.append(name)
    if _hijack_the_sandboxs_reads(sandbox, a, marker):
        reached.append("a function the sandbox's reads would run")
    if marker.exists():
        reached.append("a program wrote a file")
        marker.unlink()
    tried = len(outcomes) + 1
    figure = f"cross-service and server-file access attempts: {tried}, successes: {len(reached)}"
    print(figure)
    figures["cross-service and server-file access attempts"] = f"{tried}, successes {len(reached)}"
    assert reached == [], figure
    with psycopg.connect(b["connectionString"]) as conn:  # B is untouched and still serves
        assert conn.execute("SELECT v FROM secret").fetchall() == [(SECRET_B,)]


def _hijack_the_sandboxs_reads(sandbox: SandboxInfo, a: dict[str, Any], marker: Path) -> bool:
    """A's user replaces pg_stat_statements with its own function (the owner of a
    database may drop schema public, extension included), then lets the sandbox read
    its query statistics. True if that function ran with more than the user's rights."""
    body = (
        "BEGIN BEGIN ALTER ROLE postgres SUPERUSER; EXCEPTION WHEN others THEN NULL; END;"
        f" BEGIN COPY (SELECT 1) TO PROGRAM 'touch {marker}'; EXCEPTION WHEN others THEN NULL;"
        " END; RETURN; END"
    )
    planted = _try(
        a["connectionString"],
        [
            "DROP SCHEMA public CASCADE",
            "CREATE SCHEMA public",
            "CREATE FUNCTION public.pg_stat_statements(showtext boolean) RETURNS TABLE"
            f" (userid oid, dbid oid, queryid bigint) LANGUAGE plpgsql AS $${body}$$",
        ],
    )
    assert planted is not None, "the service's user may reshape its own database"
    with org_client(sandbox) as api:
        api.get(f"/postgres/{a['id']}/slowQueryPatterns")
    time.sleep(0.5)
    mine = _try(
        a["connectionString"], ["SELECT rolsuper FROM pg_roles WHERE rolname = current_user"]
    )
    return marker.exists() or mine != "[(False,)]"


def test_no_trust_in_any_pg_hba(sandbox: SandboxInfo, two: Any) -> None:
    """Every pg_hba.conf below the home (servers, base backups, templates)."""
    clusters = (sandbox.home / "clusters").resolve()
    found = sorted(clusters.rglob("pg_hba.conf"))
    assert len(found) >= 2
    for hba in found:
        try:
            text = hba.read_text()
        except FileNotFoundError:
            continue  # a base backup finished (its temporary folder renamed) while we looked
        lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
        assert not [ln for ln in lines if "trust" in ln], hba


def _private(path: Path) -> list[str]:
    """What below ``path`` is open to the group or others (symlinks and sockets aside)."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if (p.is_dir() or p.is_file()) and not p.is_symlink() and st.st_mode & 0o077:
                loose.append(f"{p} {st.st_mode & 0o777:o}")
    return loose


def test_the_home_is_private(sandbox: SandboxInfo, two: Any) -> None:
    home = sandbox.home.resolve()
    assert home.stat().st_mode & 0o777 == 0o700
    assert _private(home) == []
    clusters = (home / "clusters").resolve()
    assert (clusters / ".backups").is_dir()
    # As root the clusters live elsewhere; that folder is crossable by the server's group only.
    top = clusters.stat().st_mode & 0o777
    assert top in (0o700, 0o710), oct(top)
    inside = [p for p in _private(clusters) if not p.startswith(f"{clusters}/.template ")]
    assert inside == []


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another OS user")
def test_another_os_user_gets_nothing(
    sandbox: SandboxInfo, two: tuple[dict[str, Any], dict[str, Any], Cluster], figures: Any
) -> None:
    pwd.getpwnam("nobody")
    a, b, b_server = two
    home, clusters = sandbox.home.resolve(), (sandbox.home / "clusters").resolve()
    tries: dict[str, Callable[[], bool]] = {
        "read credentials.json": lambda: _as_nobody("cat", str(home / "credentials.json"))
        .returncode == 0,
        "list the home": lambda: _as_nobody("ls", str(home)).returncode == 0,
        "list the clusters": lambda: _as_nobody("ls", str(clusters)).returncode == 0,
        "read B's settings": lambda: _as_nobody("cat", str(b_server.pgdata / "pg_hba.conf"))
        .returncode == 0,
    }  # fmt: skip
    for role in ("pgcloud_admin", "pgcloud_monitor", "postgres"):
        for svc, server in ((b, b_server), (a, Cluster(clusters / a["id"], a["port"]))):
            conninfo = f"host={server.socket_dir} port={svc['port']} user={role} dbname=postgres"
            tries[f"socket login to {svc['name']} as {role}"] = lambda c=conninfo: (
                _as_nobody("psql", "-X", "-Atc", "select 1", c).returncode == 0
            )
    got = [name for name, attempt in tries.items() if attempt()]
    figures["another OS user's attempts"] = f"{len(tries)}, successes {len(got)}"
    assert got == []
