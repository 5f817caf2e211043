"""PostgreSQL's own replication, driven for the sandbox: standbys, promotion, catching up.

Every function here blocks (the lifecycle runs them in worker threads) and works
on :class:`~pgcloud_nb.sandbox.postgres.cluster.Cluster` objects only:

- :func:`base_backup` runs ``pg_basebackup`` over the primary's unix socket as
  the internal superuser, authenticated by peer (:mod:`postgres.access`: only
  the sandbox's and the server's OS users may): no password is stored anywhere
  for replication.
- :func:`follow_settings` are a standby's settings: streaming from the primary
  (``primary_conninfo``) with ``restore_command`` from the primary's WAL archive
  as the fallback when the stream has moved past what the primary still keeps,
  and ``recovery_target_timeline = latest`` so standbys follow a switchover.
  The same settings serve HA standbys and read replicas. The real product's
  replicas replay WAL from S3 only (docs/api-behaviour.md §7.3, lag of tens of seconds);
  the sandbox's also stream, so their lag is what PostgreSQL gives.
- :func:`restore_settings` are a point-in-time restore's: WAL from the source's
  archive up to ``recovery_target_time``, then ``promote`` (docs/api-behaviour.md §7.2). It
  replays as a cold standby (no connections until promoted), so none of a hot
  standby's requirements on its settings apply and nothing can pause it.
- :func:`recorded_settings` are the values a hot standby must match at least
  (:data:`STANDBY_MINIMUMS`, as the data folder's WAL last recorded them), and
  :func:`running_settings` what a server runs now; :func:`wait_caught_up` fails
  at once on a replay PostgreSQL paused for want of them.
- :func:`promote`, :func:`wait_streaming`, :func:`wait_caught_up` and
  :func:`shutdown_lsn` are the steps of a switchover and of a replica's start;
  :func:`interrupt` ends a server being made, from any thread.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.postgres.access import ADMIN
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import run_pg
from pgcloud_nb.sandbox.postgres.process import signal_stop

__all__ = [
    "STANDBY_MINIMUMS",
    "base_backup",
    "follow_settings",
    "in_recovery",
    "interrupt",
    "lsn",
    "promote",
    "recorded_settings",
    "restore_settings",
    "running_settings",
    "shutdown_lsn",
    "wait_caught_up",
    "wait_streaming",
]

POLL = 0.05

# A hot standby refuses to start (and pauses its replay) when one of these is lower
# than its primary's (PostgreSQL docs, "Hot Standby", Administrator's Overview); the
# primary records them in its WAL and control file. Name in pg_controldata → setting.
STANDBY_MINIMUMS = {
    "max_connections": "max_connections",
    "max_worker_processes": "max_worker_processes",
    "max_wal_senders": "max_wal_senders",
    "max_prepared_xacts": "max_prepared_transactions",
    "max_locks_per_xact": "max_locks_per_transaction",
}


def lsn(text: str) -> int:
    """``'16/B374D848'`` → a comparable integer."""
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def conninfo(cluster: Cluster, application_name: str = "pgcloud-nb") -> str:
    """libpq keywords reaching ``cluster`` over its unix socket as the internal superuser."""
    return (
        f"host={cluster.socket_dir} port={cluster.port} user={ADMIN} "
        f"application_name={application_name}"
    )


def base_backup(source: Cluster, dest: Path, *, stream: bool = False) -> None:
    """Copy ``source``'s data folder into the new folder ``dest`` with pg_basebackup.

    ``stream`` streams WAL alongside (an HA standby, which starts at once); without
    it the WAL the copy needs is fetched at the end, which makes the copy
    self-contained (an archived base backup).
    """
    run_pg(
        [
            source.bindir / "pg_basebackup",
            "-d",
            conninfo(source, "pg_basebackup"),
            "-D",
            dest,
            "-Fp",
            "-X",
            "stream" if stream else "fetch",
            "--checkpoint=fast",
            "--no-sync",
        ],
        what=f"pg_basebackup of {source.root.name}",
    )


def follow_settings(primary: Cluster, label: str, primary_archive: Path) -> dict[str, str]:
    """Settings of a standby of ``primary`` known to it as ``label`` (application_name)."""
    return {
        "primary_conninfo": conninfo(primary, label),
        "restore_command": f"cp '{primary_archive}/%f' '%p'",
        "recovery_target_timeline": "latest",
        "hot_standby": "on",
    }


def restore_settings(source_archive: Path, target: datetime | None) -> dict[str, str]:
    """Settings of a point-in-time restore from ``source_archive``.

    ``target`` None replays everything archived: used when no commit after the
    target was ever archived, where the end of the archive *is* the state at the
    target ("the closest available recovery point at or before", docs/api-behaviour.md §7.2).
    """
    settings = {
        "restore_command": f"cp '{source_archive}/%f' '%p'",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
        # A cold standby: PostgreSQL checks a hot standby's max_connections & co.
        # against what the WAL recorded and pauses the replay (for good, here) at a
        # primary's restart with larger ones; and default_transaction_isolation =
        # serializable fails every query of one. Without connections until it is
        # promoted, neither applies; the server is "ready" only once promoted.
        "hot_standby": "off",
    }
    if target is not None:
        settings["recovery_target_time"] = target.isoformat()
        settings["recovery_target_inclusive"] = "on"
    return settings


def recorded_settings(cluster: Cluster) -> dict[str, int]:
    """The :data:`STANDBY_MINIMUMS` the data folder's control file records: the
    primary's values as of its last start (on a standby, as of the WAL replayed)."""
    out = run_pg([cluster.bindir / "pg_controldata", "-D", cluster.pgdata], what="pg_controldata")
    found = {}
    for label, name in STANDBY_MINIMUMS.items():
        m = re.search(rf"^{label} setting:\s+(\d+)$", out, re.M)
        if m:
            found[name] = int(m.group(1))
    return found


def running_settings(cluster: Cluster) -> dict[str, int]:
    """The :data:`STANDBY_MINIMUMS` a running server runs now."""
    with cluster.connect() as conn:
        rows = conn.execute(
            "SELECT name, setting::int FROM pg_settings WHERE name = ANY(%s)",
            [list(STANDBY_MINIMUMS.values())],
        ).fetchall()
    return {str(name): int(value) for name, value in rows}


def interrupt(cluster: Cluster) -> None:
    """Stop a server at once without waiting for the cluster's lock, so that a
    thread blocked starting it (a replay) fails now: a delete of a service being made."""
    signal_stop(cluster.pgdata, "immediate")


def in_recovery(cluster: Cluster) -> bool:
    with cluster.connect() as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def promote(cluster: Cluster, timeout: int = 60) -> None:
    """End recovery on a standby (pg_promote waits until it accepts writes)."""
    with cluster.superuser() as conn:
        row = conn.execute("SELECT pg_promote(true, %s)", [timeout]).fetchone()
    if not (row and row[0]):
        raise EngineError(f"{cluster.root.name} was not promoted within {timeout}s")


def shutdown_lsn(cluster: Cluster) -> int:
    """The checkpoint location of a stopped server (its shutdown checkpoint)."""
    out = run_pg([cluster.bindir / "pg_controldata", "-D", cluster.pgdata], what="pg_controldata")
    found = re.search(r"^Latest checkpoint location:\s+(\S+)", out, re.M)
    if not found:
        raise EngineError(f"pg_controldata of {cluster.root.name} has no checkpoint location")
    return lsn(found.group(1))


def received_lsn(standby: Cluster) -> int:
    """How far a standby has WAL: streamed or replayed, whichever is further. (The
    receive position alone goes back to a segment start when the stream restarts,
    as it does once the primary has stopped.)"""
    with standby.connect() as conn:
        row = conn.execute(
            "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"
        ).fetchone()
    return lsn(row[0]) if row and row[0] else 0


def wait_received(standby: Cluster, target: int, timeout: float) -> bool:
    """Wait until the standby holds WAL past ``target``; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if received_lsn(standby) > target:
            return True
        time.sleep(POLL)
    return False


def wait_caught_up(primary: Cluster, standby: Cluster, timeout: float) -> bool:
    """Wait until ``standby`` has replayed what ``primary`` had written when called;
    False on timeout. A replay PostgreSQL paused will not go on by itself: an
    EngineError at once, saying why (the server's log has its own words too)."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    wanted = lsn(row[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with standby.connect() as conn:
            got = conn.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused()"
            ).fetchone()
        if got and got[0] and lsn(got[0]) >= wanted:
            return True
        if got and got[1]:
            raise EngineError(
                "replay paused: the primary runs larger max_connections, max_worker_processes,"
                " max_wal_senders, max_prepared_transactions or max_locks_per_transaction"
                " than this standby can (see the server's own log lines)"
            )
        time.sleep(POLL)
    return False


def wait_streaming(primary: Cluster, label: str, timeout: float) -> bool:
    """Wait until the standby called ``label`` streams from ``primary``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s"
                " AND state = 'streaming'",
                [label],
            ).fetchone()
        if row:
            return True
        time.sleep(POLL)
    return False
