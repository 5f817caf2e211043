"""Settings judged by PostgreSQL itself, without a running server.

Every check runs the service's own binaries: ``postgres -C`` parses settings
with the server's checks and exits, and ``postgres --describe-config`` lists
every parameter with its context. What PostgreSQL leaves to a server's start
is checked too, in its own wording:

- :func:`check_values`: values given on the command line, before any file is
  written (a config write, a create: :func:`check_settings`), with the start-up
  rules a running server would reload without a word (min_wal_size and
  max_wal_size against the WAL segment size, the reserved connections);
- :func:`config_problem`: the files as a start will read them; for a server
  that is down, start-up's own cross-checks included;
- :func:`restart_needed`: what a change needs a restart for, from the
  parameters' contexts; :func:`split_supported`: the API's parameters this
  major lacks.

Split out of :mod:`postgres.conffiles`, which writes the files these check.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import binaries, datadir
from pgcloud_nb.sandbox.postgres.osuser import postmaster_pid, run_pg

__all__ = [
    "check_names",
    "check_settings",
    "check_values",
    "config_problem",
    "known_parameters",
    "restart_needed",
    "split_supported",
    "wal_segment_size",
]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def check_names(settings: dict[str, str]) -> None:
    """ConfigValueError for the first name that cannot be a configuration parameter."""
    for name in settings:
        if not _NAME_RE.match(name):
            raise ConfigValueError(name, f"invalid configuration parameter name {name!r}")


def check_values(bindir: Path, pgdata: Path, settings: dict[str, str]) -> None:
    """ConfigValueError for the first value PostgreSQL refuses, without a server.

    ``postgres -C`` parses ``-c`` options with the server's own checks and exits.
    Rules it leaves to start-up are checked here with PostgreSQL's own wording,
    because a server that cannot start would lose the service on its next restart:
    a running server reloads a min_wal_size it will not start with.
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
    wal = [name for name in ("min_wal_size", "max_wal_size") if name in settings]
    if wal:  # what the control file's WAL segment size asks of them (xlog.c, ReadControlFile)
        segment = wal_segment_size(bindir, pgdata)
        for name in wal:  # `postgres -C` prints them in their unit, MB
            if int(_show(bindir, pgdata, settings, name)) * 2**20 < 2 * segment:
                raise ConfigValueError(name, f'"{name}" must be at least twice "wal_segment_size"')


def _show(bindir: Path, pgdata: Path, settings: dict[str, str], name: str) -> str:
    """The value ``name`` would have with ``settings`` on the command line."""
    args: list[Any] = [bindir / "postgres", "-D", pgdata, "-C", name]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    return run_pg(args, what="check").strip()


def wal_segment_size(bindir: Path, pgdata: Path) -> int:
    """The WAL segment size of ``pgdata`` in bytes, from its control file (pg_controldata
    reads it whether the server runs or not)."""
    out = run_pg([bindir / "pg_controldata", "-D", pgdata], what="pg_controldata")
    found = re.search(r"^Bytes per WAL segment:\s+(\d+)$", out, re.M)
    if not found:
        raise EngineError(f"pg_controldata of {pgdata.parent.name} has no WAL segment size")
    return int(found.group(1))


def check_settings(settings: dict[str, str], template_dir: Path, major: int | None = None) -> None:
    """ConfigValueError for a value this PostgreSQL refuses, before any service exists.

    Checked against the template data folder, so a create, restore or replica with
    a bad pgConfig gets its 400 at once instead of a server that never starts.
    """
    try:
        bindir = binaries.find_bindir(major)
    except PgBinariesNotFound as e:
        raise EngineError(str(e)) from e
    applied, _ = split_supported(bindir, settings)
    if applied:
        check_values(bindir, datadir.template(bindir, template_dir), applied)


def config_problem(
    bindir: Path, pgdata: Path, settings: dict[str, str] | None = None
) -> tuple[str | None, str] | None:
    """(parameter, PostgreSQL's message) for the first error in the files, or None; the
    parameter is the first one the message names, of ``settings`` when given.

    ``postgres -C port`` parses the files and exits before start-up's own checks run
    (min_wal_size against the WAL segment size, the reserved connections, the sum of
    the server processes). A value computed at run time, ``shared_memory_size``
    (PostgreSQL 15 on), is printed only once the control file is read and those checks
    passed, so a server that is down is asked for that: its next start says no more.
    That takes the data folder's lock file for a moment, which a live postmaster holds
    (a running server is asked for ``port``), and which no start may race for: the
    caller holds the service's lock. A lock file left by a server killed and not yet
    reaped still refuses it; the files are then checked as a running server's.
    """
    runtime = postmaster_pid(pgdata) is None and binaries.server_major(bindir) >= 15
    problem = _problem(bindir, pgdata, "shared_memory_size" if runtime else "port", settings)
    if runtime and problem and 'lock file "postmaster.pid" already exists' in problem[1]:
        problem = _problem(bindir, pgdata, "port", settings)
    return problem


def _problem(
    bindir: Path, pgdata: Path, show: str, settings: dict[str, str] | None
) -> tuple[str | None, str] | None:
    try:
        run_pg([bindir / "postgres", "-D", pgdata, "-C", show], what="check")
    except EngineError as e:
        # Lines look like "<time> [pid] LOG:  invalid value for parameter "x": "y"", or
        # "postgres: <message>" for what the postmaster says before its log is set up.
        said = [
            m.group(2)
            for m in re.finditer(r"(LOG|FATAL|DETAIL|HINT|^postgres):\s+(.*)", str(e), re.M)
            if "contains errors" not in m.group(2)
        ]
        message = " ".join(said) or str(e)
        return _named(bindir, message, settings), message
    return None


def _named(bindir: Path, message: str, settings: dict[str, str] | None) -> str | None:
    """The parameter a message is about: ``parameter "x"``, else the first name in it of
    ``settings`` (or, without them, of this build's parameters)."""
    if param := re.search(r'parameter "([^"]+)"', message):
        return param.group(1)
    names = settings.keys() if settings is not None else known_parameters(bindir)
    return next((w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", message) if w in names), None)


def restart_needed(bindir: Path, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The parameters whose value differs between ``before`` and ``after`` (set, changed or
    removed) that only a server start reads (``postmaster`` context), sorted: what a
    running server's ``pg_settings.pending_restart`` would list, without asking one."""
    contexts = _contexts(bindir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return sorted(k for k in changed if contexts.get(k) == "postmaster")


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
