"""The settings files of a sandbox server: what they say, how they are written and checked.

A service's data folder holds these files the sandbox writes:

- ``pg_hba.conf`` and ``pg_ident.conf`` (:mod:`postgres.access`): the sandbox's
  own roles by peer authentication on the private socket, everyone else by
  SCRAM over TLS on loopback, no connection without TLS, no ``trust`` anywhere.
- ``pgcloud-base.conf`` (:data:`BASE_CONF`, :func:`base_settings`): the settings
  the sandbox manages (port, socket, TLS, logging, a small memory footprint).
- ``pgcloud.conf`` (:data:`USER_CONF`): the user's settings (the API's pgConfig).

``postgresql.conf`` includes the last two in that order, so user settings win.
A new user file is checked before the server loads it
(:func:`~.confcheck.config_problem`) and then reloaded (:func:`reload_conf`),
which reports what still needs a restart. A server that is down gets the file
all the same, checked the way its next start will read it, start-up's
cross-checks included (:func:`keep_user_conf`); PostgreSQL's own parameter list
then says what a change needs a restart for (:func:`~.confcheck.restart_needed`).

Each start that succeeds keeps a copy of the user file it read,
:data:`STARTED_CONF` beside the data folder (:func:`starting`, so copies of the
data folder never carry it): what the server runs until its next start. A server
that is down needs a restart for what differs from it, and a start that fails
after a configuration change can go back to it (docs/api-behaviour.md §8.6).

Split out of :mod:`postgres.cluster`, whose :class:`~pgcloud_nb.sandbox.postgres.cluster.Cluster`
decides when to write, check and reload; the checks are :mod:`postgres.confcheck`'s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError
from pgcloud_nb.sandbox.postgres.confcheck import config_problem, split_supported
from pgcloud_nb.sandbox.postgres.osuser import POLL, write_if_changed, write_owned

__all__ = [
    "BASE_CONF",
    "STARTED_CONF",
    "USER_CONF",
    "USER_HEADER",
    "apply_user_conf",
    "base_settings",
    "keep_user_conf",
    "parse_conf",
    "pending_restart",
    "reload_conf",
    "render_conf",
    "started_settings",
    "starting",
    "sync_user_conf",
    "user_settings",
]

USER_CONF = "pgcloud.conf"
USER_HEADER = "user settings (the API's pgConfig), managed by pgcloud-nb"
BASE_CONF = "pgcloud-base.conf"
STARTED_CONF = "pgcloud.started.conf"  # in the service folder, beside pgdata/
# A line render_conf writes: name = 'value', the value quoted by _conf_quote.
_LINE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*) = '((?:[^'\\]|''|\\.)*)'$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{escaped}'"


def render_conf(settings: dict[str, str], header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{name} = {_conf_quote(str(value))}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def parse_conf(text: str) -> dict[str, str]:
    """The settings of a file :func:`render_conf` wrote (its header and any other line
    left out)."""

    def unquote(m: re.Match[str]) -> str:
        return "'" if m.group(0) == "''" else _ESCAPES.get(m.group(1), m.group(1))

    found = (_LINE_RE.match(line) for line in text.split("\n"))
    return {m.group(1): re.sub(r"''|\\(.)", unquote, m.group(2)) for m in found if m}


def user_settings(pgdata: Path) -> dict[str, str]:
    """What the user settings file of ``pgdata`` says now (nothing when it is missing)."""
    path = pgdata / USER_CONF
    return parse_conf(path.read_text()) if path.exists() else {}


@contextmanager
def starting(pgdata: Path) -> Iterator[None]:
    """Around a start of the server of ``pgdata``: once it is up, the user settings file
    it read is kept as :data:`STARTED_CONF` (:func:`started_settings`). A failed start
    keeps the record of the last one that worked."""
    path = pgdata / USER_CONF
    read = path.read_text() if path.exists() else render_conf({}, USER_HEADER)
    yield
    write_if_changed(pgdata.parent / STARTED_CONF, read)


def started_settings(pgdata: Path) -> dict[str, str] | None:
    """The user settings the server of ``pgdata`` last started with, or None when no
    start was recorded (a server started by an older sandbox, and not since)."""
    path = pgdata.parent / STARTED_CONF
    return parse_conf(path.read_text()) if path.exists() else None


def base_settings(port: int, socket_dir: Path, log_dir: Path) -> dict[str, str]:
    """The sandbox-managed settings of a server (the contents of :data:`BASE_CONF`)."""
    return {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "unix_socket_permissions": "0700",  # its folder is private too; peer says who
        "ssl": "on",
        "ssl_cert_file": "server.crt",
        "ssl_key_file": "server.key",
        "ssl_min_protocol_version": "TLSv1.3",  # the real minimum (docs/api-behaviour.md §11.3)
        "password_encryption": "scram-sha-256",
        "shared_preload_libraries": "pg_stat_statements,auto_explain",
        "compute_query_id": "on",
        "track_io_timing": "on",
        "logging_collector": "on",
        "log_destination": "jsonlog",
        "log_timezone": "UTC",  # the logs API reads jsonlog timestamps as UTC
        # Executions slower than this reach the JSON log with their buffers and WAL:
        # the slow query patterns' recent executions (insights.py). Per-node timing
        # is off, as it is the costly part of instrumenting every query.
        "auto_explain.log_min_duration": "100ms",
        "auto_explain.log_analyze": "on",
        "auto_explain.log_buffers": "on",
        "auto_explain.log_wal": "on",
        "auto_explain.log_timing": "off",
        "auto_explain.log_format": "json",
        # The plan then names its statement ("Query Identifier"): the line's own query_id
        # is the statement running when the executor ended, which for a portal closed by
        # the next Bind or by COMMIT is that next statement (insights/logs.py).
        "auto_explain.log_verbose": "on",
        "log_directory": str(log_dir),
        "log_filename": "postgresql-%Y-%m-%d.log",  # jsonlog writes postgresql-<date>.json
        "log_rotation_size": "10MB",
        # Many servers share a 2-core box: keep each one small.
        "shared_buffers": "32MB",
        "max_connections": "100",
        "max_wal_size": "256MB",
    }


def apply_user_conf(
    pgdata: Path,
    bindir: Path,
    settings: dict[str, str],
    superuser: Callable[[], psycopg.Connection[Any]],
    step: Callable[[str], object] = lambda name: None,
) -> list[str]:
    """Replace the user settings file, reload, and return the names still needing a restart.

    ``settings`` were checked with :func:`~.confcheck.check_values`. Should the server still
    find a problem, the previous file is put back before it is ever loaded
    (:class:`ConfigValueError`); an unreachable server also gets the old file back.
    ``step`` is told "file-staged" (the new file on disk, not yet in place) and
    "file-replaced" (in place, not yet loaded): the crash hook of the services'
    configuration write (``services.configs``).
    """
    path = pgdata / USER_CONF
    previous = path.read_text() if path.exists() else render_conf({}, USER_HEADER)
    write_owned(
        path, render_conf(settings, USER_HEADER), before_replace=lambda: step("file-staged")
    )
    step("file-replaced")
    try:
        with superuser() as conn:
            # pg_file_settings parses the files afresh in this session, so errors show
            # before the server loads them. A setting that merely needs a restart also
            # reads "could not be applied" there; `postgres -C` tells the two apart.
            flagged = conn.execute(
                "SELECT name FROM pg_file_settings WHERE error IS NOT NULL AND sourcefile = %s",
                [str(path)],
            ).fetchall()
            if flagged and (problem := config_problem(bindir, pgdata)):
                write_owned(path, previous)
                raise ConfigValueError(problem[0] or flagged[0][0] or "", problem[1])
            return reload_conf(conn)
    except psycopg.OperationalError as e:
        write_owned(path, previous)
        raise EngineError(f"server in {pgdata.parent} is not reachable: {e}") from e


def keep_user_conf(
    pgdata: Path,
    bindir: Path,
    settings: dict[str, str],
    step: Callable[[str], object] = lambda name: None,
) -> None:
    """Replace the user settings file of a server that is not running (or not taking
    connections): its next start loads it. ``postgres -C`` reads the files as that
    start will, so a file it refuses is put back at once (:class:`ConfigValueError`)
    rather than leaving a server that cannot start. ``step`` as in :func:`apply_user_conf`.
    """
    path = pgdata / USER_CONF
    previous = path.read_text() if path.exists() else render_conf({}, USER_HEADER)
    write_owned(
        path, render_conf(settings, USER_HEADER), before_replace=lambda: step("file-staged")
    )
    step("file-replaced")
    if problem := config_problem(bindir, pgdata, settings):
        write_owned(path, previous)
        raise ConfigValueError(problem[0] or "", problem[1])


def sync_user_conf(pgdata: Path, bindir: Path, settings: dict[str, str]) -> bool:
    """Make the user settings file hold ``settings`` (those this server knows, as
    :func:`apply_user_conf` writes them after :func:`~.confcheck.split_supported`); True when it
    changed. The caller reloads or starts the server."""
    applied, _ = split_supported(bindir, settings)
    return write_if_changed(pgdata / USER_CONF, render_conf(applied, USER_HEADER))


def reload_conf(conn: psycopg.Connection[Any]) -> list[str]:
    """Reload the server's settings; return the names still needing a restart."""
    row = conn.execute("SELECT pg_conf_load_time(), pg_reload_conf()").fetchone()
    assert row is not None
    before = row[0]
    # The postmaster re-reads, then signals backends; each statement boundary lets this
    # session catch up, after which pg_settings.pending_restart is current.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = conn.execute("SELECT pg_conf_load_time()").fetchone()
        if now and now[0] != before:
            break
        time.sleep(POLL)
    return pending_restart(conn)


def pending_restart(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT name FROM pg_settings WHERE pending_restart ORDER BY name")
    return [r[0] for r in rows]
