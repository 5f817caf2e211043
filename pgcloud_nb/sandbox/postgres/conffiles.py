"""The settings files of a sandbox server: what they say, how they are written and checked.

A service's data folder holds these files the sandbox writes:

- ``pg_hba.conf`` and ``pg_ident.conf`` (:mod:`postgres.access`): the sandbox's
  own roles by peer authentication on the private socket, everyone else by
  SCRAM over TLS on loopback, no connection without TLS, no ``trust`` anywhere.
- ``pgcloud-base.conf`` (:data:`BASE_CONF`, :func:`base_settings`): the settings
  the sandbox manages (port, socket, TLS, logging, a small memory footprint).
- ``pgcloud.conf`` (:data:`USER_CONF`): the user's settings (the API's pgConfig).

``postgresql.conf`` includes the last two in that order, so user settings win.
A new user file is checked before the server loads it (:func:`config_problem`)
and then reloaded (:func:`reload_conf`), which reports what still needs a restart.
A server that is down gets the file all the same, checked the way its next start
will read it (:func:`keep_user_conf`); PostgreSQL's own parameter list then says
what a change needs a restart for (:func:`restart_needed`).

Split out of :mod:`postgres.cluster`, whose :class:`~pgcloud_nb.sandbox.postgres.cluster.Cluster`
decides when to write, check and reload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError
from pgcloud_nb.sandbox.postgres.osuser import POLL, run_pg, write_if_changed, write_owned

__all__ = [
    "BASE_CONF",
    "USER_CONF",
    "USER_HEADER",
    "apply_user_conf",
    "base_settings",
    "check_names",
    "config_problem",
    "keep_user_conf",
    "pending_restart",
    "reload_conf",
    "render_conf",
    "restart_needed",
    "sync_user_conf",
]

USER_CONF = "pgcloud.conf"
USER_HEADER = "user settings (the API's pgConfig), managed by pgcloud-nb"
BASE_CONF = "pgcloud-base.conf"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{escaped}'"


def render_conf(settings: dict[str, str], header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{name} = {_conf_quote(str(value))}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


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

    ``settings`` were checked with :func:`check_values`. Should the server still
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
    if problem := config_problem(bindir, pgdata):
        write_owned(path, previous)
        raise ConfigValueError(problem[0] or "", problem[1])


def restart_needed(bindir: Path, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The parameters whose value differs between ``before`` and ``after`` (set, changed or
    removed) that only a server start reads (``postmaster`` context), sorted: what a
    running server's ``pg_settings.pending_restart`` would list, without asking one."""
    contexts = _contexts(bindir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return sorted(k for k in changed if contexts.get(k) == "postmaster")


def sync_user_conf(pgdata: Path, bindir: Path, settings: dict[str, str]) -> bool:
    """Make the user settings file hold ``settings`` (those this server knows, as
    :func:`apply_user_conf` writes them after :func:`split_supported`); True when it
    changed. The caller reloads or starts the server."""
    applied, _ = split_supported(bindir, settings)
    return write_if_changed(pgdata / USER_CONF, render_conf(applied, USER_HEADER))


def check_names(settings: dict[str, str]) -> None:
    """ConfigValueError for the first name that cannot be a configuration parameter."""
    for name in settings:
        if not _NAME_RE.match(name):
            raise ConfigValueError(name, f"invalid configuration parameter name {name!r}")


def config_problem(bindir: Path, pgdata: Path) -> tuple[str | None, str] | None:
    """(parameter, PostgreSQL's message) for the first error in the files, or None."""
    try:
        run_pg([bindir / "postgres", "-D", pgdata, "-C", "port"], what="check")
    except EngineError as e:
        # Lines look like "<time> [pid] LOG:  invalid value for parameter "x": "y"".
        said = [
            m.group(2)
            for m in re.finditer(r"(LOG|FATAL|DETAIL|HINT):\s+(.*)", str(e))
            if "contains errors" not in m.group(2)
        ]
        message = " ".join(said) or str(e)
        param = re.search(r'parameter "([^"]+)"', message)
        return (param.group(1) if param else None), message
    return None


@cache
def _contexts(bindir: Path) -> dict[str, str]:
    """Every parameter this PostgreSQL build knows, with its context (``postmaster``,
    ``sighup``, ``user``…), from ``postgres --describe-config`` (name, context, …)."""
    out = run_pg([bindir / "postgres", "--describe-config"], what="describe-config")
    fields = (line.split("\t", 2) for line in out.splitlines() if line)
    return {f[0]: (f[1] if len(f) > 1 else "") for f in fields}


@cache
def known_parameters(bindir: Path) -> frozenset[str]:
    """Every parameter this PostgreSQL build knows (``postgres --describe-config``)."""
    return frozenset(_contexts(bindir))


def split_supported(bindir: Path, settings: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(settings this server knows, names it lacks).

    The API's pgConfig names PostgreSQL 17/18 parameters (``transaction_timeout``);
    the sandbox may run an older major. Such a setting is accepted and stored, as
    the API would, but cannot be applied: the server has no such knob.
    """
    from pgcloud_nb.spec import pg_config_keys

    known, api_keys = known_parameters(bindir), pg_config_keys()
    # Only the API's own keys are skipped; any other unknown name is PostgreSQL's to refuse.
    lacking = sorted(k for k in settings if k not in known and k in api_keys)
    return {k: v for k, v in settings.items() if k not in lacking}, lacking


def _show(bindir: Path, pgdata: Path, settings: dict[str, str], name: str) -> str:
    """The value ``name`` would have with ``settings`` on the command line."""
    args: list[Any] = [bindir / "postgres", "-D", pgdata, "-C", name]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    return run_pg(args, what="check").strip()


def check_values(bindir: Path, pgdata: Path, settings: dict[str, str]) -> None:
    """ConfigValueError for the first value PostgreSQL refuses, without a server.

    ``postgres -C`` parses ``-c`` options with the server's own checks and exits.
    One rule it leaves to start-up is checked here with PostgreSQL's own wording,
    because a server that cannot start would lose the service on its next restart.
    """
    check_names(settings)
    try:
        _show(bindir, pgdata, settings, "port")
    except EngineError as e:
        said = re.finditer(r"(FATAL|DETAIL|HINT):\s+(.*)", str(e))
        message = " ".join(m.group(2) for m in said) or str(e)
        param = re.search(r'parameter "([^"]+)"', message)
        raise ConfigValueError(param.group(1) if param else "", message) from None
    if "max_connections" in settings:
        reserved = int(_show(bindir, pgdata, settings, "superuser_reserved_connections"))
        wanted = int(_show(bindir, pgdata, settings, "max_connections"))
        if reserved >= wanted:
            raise ConfigValueError(
                "max_connections",
                f"superuser_reserved_connections ({reserved}) must be less than "
                f"max_connections ({wanted})",
            )


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
