"""Setting the service user's password without the password ever reaching the server.

Passwords reach the server only as SCRAM verifiers computed client-side
(:func:`scram_verifier`), sent by :func:`alter_password` in a session with
statement logging and pg_stat_statements' utility tracking off, so the clear
password is in no log or statistics view (and the verifier in none either).

Split out of :mod:`postgres.cluster`, which re-exports :func:`scram_verifier`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq, sql

from pgcloud_nb.sandbox.postgres.access import SERVICE

__all__ = ["alter_password", "scram_verifier"]


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password``, computed locally.

    libpq computes it (SASLprep included) without a server when the algorithm is
    given, so a never-connected PGconn is enough.
    """
    conn = pq.PGconn.connect_start(b"host=/nonexistent port=1")
    try:
        verifier: bytes = conn.encrypt_password(
            password.encode(), SERVICE.encode(), b"scram-sha-256"
        )
        return verifier.decode()
    finally:
        conn.finish()


def alter_password(conn: psycopg.Connection[Any], verifier: str) -> None:
    """Make ``verifier`` the password of the API's user (``postgres``), over a superuser
    session ``conn``."""
    # Belt and braces: even the verifier stays out of statistics and logs.
    conn.execute("SET pg_stat_statements.track_utility = off")
    conn.execute("SET log_statement = 'none'")
    conn.execute("SET log_min_duration_statement = -1")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SERVICE), sql.Literal(verifier))
    )
