"""Lines of the sandbox's own in a service's log: what the logs endpoint shows beside PostgreSQL's.

The logs endpoint reads the server's JSON log (``log/postgresql-<date>.json``,
:mod:`~pgcloud_nb.sandbox.insights.logs`). When the sandbox changes what a
service runs, or gives up on one, the user reads why there, in a line that
starts ``pgcloud-nb sandbox:``:

- a **running** server writes the line itself (``RAISE`` in a ``DO`` block), so
  it is a jsonlog line like any other and never interleaves with the server's;
- a server that is **not running** (one that could not start, stopped first) gets
  it appended to the day's file in the very format jsonlog writes, which the
  server appends to again if it ever starts.

A line names no path of this machine: the reason is the sandbox's own sentence,
with any path in it replaced.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import pg_user

__all__ = ["PREFIX", "note", "reason"]

log = logging.getLogger("pgcloud_nb.sandbox")

PREFIX = "pgcloud-nb sandbox: "
NOTE_APP = "pgcloud-nb-sandbox"  # the application_name of a running server's note session
_RAISE = {"LOG": "LOG", "WARNING": "WARNING", "ERROR": "WARNING"}  # RAISE ERROR would abort
_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")


def reason(exc: BaseException) -> str:
    """One line saying why, from an exception: its first line, paths left out."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _PATH.sub("<path>", first)


def note(cluster: Cluster, message: str, severity: str = "LOG") -> None:
    """Add ``PREFIX + message`` to ``cluster``'s JSON log at ``severity`` (LOG, WARNING,
    ERROR); never raises: a note that cannot be written is logged by the sandbox."""
    text = PREFIX + message
    try:
        if cluster.is_running():
            level = sql.SQL(_RAISE.get(severity, "LOG"))
            body = sql.SQL("DO $note$ BEGIN RAISE {} '%', {}; END $note$")
            with cluster.connect(application_name=NOTE_APP) as conn:
                conn.execute(body.format(level, sql.Literal(text)))
        else:
            _append(cluster, severity, text)
    except (OSError, psycopg.Error) as exc:
        log.warning("could not note in the log of %s (%s): %s", cluster.root.name, exc, text)


def _append(cluster: Cluster, severity: str, text: str) -> None:
    """One jsonlog line at the end of today's file (UTC, as log_timezone is)."""
    now = datetime.now(UTC)
    record = {
        # The first key, as jsonlog writes it: the log index reads it from the line's start.
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} UTC",
        "pid": os.getpid(),
        "error_severity": severity,
        "message": text,
        "application_name": NOTE_APP,
        "backend_type": "not initialized",
    }
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    folder = cluster.log_dir
    for made in (cluster.root, folder):  # a server that failed before it had them
        if not made.is_dir():
            made.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(made, pg_user().pw_uid, pg_user().pw_gid, follow_symlinks=False)
    path = folder / f"postgresql-{now:%Y-%m-%d}.json"
    # Never through a link, and the server's user keeps owning what the server writes to.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, pg_user().pw_uid, pg_user().pw_gid)
        os.write(fd, line.encode())
    finally:
        os.close(fd)
