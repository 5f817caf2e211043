"""The lifecycle's helpers: what steps hand on, waits, sessions, and reading answers.

Waits poll the CLI itself (``get --json``), paced like every other command;
sessions go to 127.0.0.1 and the service's own port (the CLI prints 5432, the
real service's; docs/api-behaviour.md, "Addresses"). Passwords travel as
:class:`~foreign.ctl.Secret`, so a failing test's traceback never shows one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from foreign.ctl import Ctl, Secret

from pgcloud_nb.redaction import redact


@dataclass
class Fleet:
    """What the steps learn and hand on: ids, the password, the restore point, the files."""

    main: str = ""
    password: Secret = field(default_factory=Secret)
    port: int = 0
    plain: str = ""
    target: str = ""
    replicas: list[str] = field(default_factory=list)
    files: Path = Path()

    def file(self, name: str) -> str:
        return str(self.files / f"{name}.json")


def window(minutes: float = 15) -> str:
    """The last ``minutes`` and the next one: a window that surely holds what just ran."""
    now = datetime.now(UTC)
    start, end = now - timedelta(minutes=minutes), now + timedelta(minutes=1)
    return f"--from-date {stamp(start)} --to-date {stamp(end)}"


def age(timestamp: str) -> float:
    """Seconds since an RFC 3339 time."""
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait(
    ctl: Ctl, sid: str, check: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    """Poll ``get <sid> --json`` (paced like every command) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, Any] = ctl(f"get {sid} --json", cost=1).json()
        if check(got):
            return got
        assert time.monotonic() < deadline, f"{sid} never got there: {got}"
        time.sleep(1.0)


def running(service: dict[str, Any]) -> bool:
    return bool(service["state"] == "running")


def connect(port: int, password: str, **kw: Any) -> psycopg.Connection[Any]:
    """A session as ``postgres``; a refusal is re-raised with the password masked."""
    try:
        return psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
            connect_timeout=10, **kw,
        )  # fmt: skip
    except psycopg.OperationalError as e:
        raise psycopg.OperationalError(redact(str(e))) from None


def new_primary_serves(port: int, password: str, before: datetime, timeout: float = 60) -> None:
    """Wait until another server, a primary, answers on ``port`` than the one started at
    ``before``: neither state nor readiness says when a switchover is over (the CLI's own
    advice is to watch the clients' connections), and the old primary answers for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(port, password) as conn:
                row = conn.execute("SELECT pg_is_in_recovery(), pg_postmaster_start_time()")
                standby, since = row.fetchone() or (True, before)
            if not standby and since != before:
                return
        except psycopg.OperationalError:  # refused, or cut off by the old primary's shutdown
            pass
        assert time.monotonic() < deadline, "no new primary took the service's address"
        time.sleep(0.5)


def rules(service: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """A service's access rules by (source, ports); each carries the id that removes it."""
    found = {(rule["source"], rule["portRange"]): rule for rule in service["ipAccessList"]}
    assert all(rule.get("id") for rule in found.values()), service["ipAccessList"]
    return found


def refused(ctl: Ctl, command: str) -> str:
    """Run a create the server must refuse (deleting what it made if it did not); the error."""
    got = ctl(command + " --json", cost=1, rc=None)
    if got.rc == 0:  # made anyway: not left running for the rest of the module
        ctl(f"delete {got.json()['id']}", cost=2)
    assert got.rc == 1, str(got)
    message: str = json.loads(got.err)["error"]["message"]
    return message


def marks(port: int, password: str) -> list[str]:
    with connect(port, password) as conn:
        return [r[0] for r in conn.execute("SELECT mark FROM ctl_marks ORDER BY mark")]


def started(fleet: Fleet) -> datetime:
    """When the service's server last started (``pg_postmaster_start_time()``)."""
    with connect(fleet.port, fleet.password) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row
    started: datetime = row[0]
    return started


def run_slowly(port: int, password: str, app: str, marker: str, cast: str) -> None:
    """Three runs of a statement slower than auto_explain's threshold, so each one is logged.

    ``cast`` tells statements apart: pg_stat_statements ignores the ``marker`` alias.
    """
    with connect(port, password, application_name=app) as conn:
        for n in range(3):
            conn.execute(f"SELECT pg_sleep(0.15), %s::{cast} AS {marker}", (n,))


def pattern_of(ctl: Ctl, sid: str, marker: str, filters: str) -> dict[str, Any]:
    """The one slow query pattern of the statements marked ``marker`` (its log may lag)."""
    deadline = time.monotonic() + 60
    while True:
        listed = ctl(f"slow-queries list {sid} {window()} {filters} --json", cost=1)
        mine = [p for p in listed.json() if marker in p["queryText"]]
        if mine or time.monotonic() > deadline:
            assert len(mine) == 1, listed
            found: dict[str, Any] = mine[0]
            return found
        time.sleep(2)
