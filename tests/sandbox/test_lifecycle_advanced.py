"""Backups, point-in-time restore, read replicas, HA standbys and switchover, over real
HTTP and real SQL (docs/api-behaviour.md §5, §6, §7)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_api import CREATE, error, org_client, result, wait_state

from pgcloud_nb.sandbox import Sandbox, Settings
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.services.backups import Archive

pytestmark = pytest.mark.slow


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except psycopg.OperationalError:  # a server restarting under us
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def dsn_of(created: dict[str, Any], other: dict[str, Any] | None = None) -> str:
    """The service's connection string; for ``other`` (a restore or replica, whose
    answer has none), the same credentials at its own host and port."""
    dsn = str(created["connectionString"])
    if other is not None:
        dsn = dsn.replace(created["hostname"], other["hostname"])
        dsn = dsn.replace(f":{created['port']}/", f":{other['port']}/")
    return dsn


def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def backed_up(api: httpx.Client, sid: str) -> dict[str, Any]:
    """The service once running with its first base backup (earliestRestoreTime)."""
    wait_state(api, sid, "running")
    return dict(
        eventually(
            lambda: (svc := result(api.get(f"/postgres/{sid}"))).get("earliestRestoreTime") and svc,
            what="the first base backup",
        )
    )


def states_until_running(api: httpx.Client, sid: str, timeout: float = 120) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = result(api.get(f"/postgres/{sid}"))["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "running":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{sid} never ran; states seen {seen}")


def test_restore_to_a_point_in_time(api: httpx.Client, make: Any) -> None:
    src = make()
    source = backed_up(api, src["id"])
    dsn = dsn_of(src)
    sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    sql(dsn, "INSERT INTO t VALUES (1)")
    # The target comes from the server's clock, between the two commits.
    target: datetime = sql(dsn, "SELECT clock_timestamp()")[0][0]
    time.sleep(0.5)
    sql(dsn, "INSERT INTO t VALUES (2)")

    path = f"/postgres/{src['id']}/restoredService"
    early = datetime.fromisoformat(source["earliestRestoreTime"]) - timedelta(minutes=1)
    said = error(
        api.post(path, json={"name": "too early", "restoreTarget": early.isoformat()}), 400
    )
    assert "earliest restore time" in said
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert "future" in error(api.post(path, json={"name": "later", "restoreTarget": future}), 400)

    body = {"name": "restored", "restoreTarget": target.astimezone(UTC).isoformat()}
    restored = result(api.post(path, json=body))
    made_ids = {s["id"] for s in result(api.get("/postgres"))}
    assert restored["id"] in made_ids and restored["id"] != src["id"]
    assert "password" not in restored and "connectionString" not in restored
    assert restored["state"] == "restoring_backup" and restored["isPrimary"] is True
    for key in ("provider", "region", "postgresVersion", "size"):
        assert restored[key] == src[key]
    seen = states_until_running(api, restored["id"])
    order = ["restoring_backup", "replaying_wal", "finalizing_restore", "running"]
    assert seen == sorted(seen, key=order.index), seen

    # The restored service has the source's password at the target (docs/api-behaviour.md §13.4).
    rdsn = dsn_of(src, restored)
    assert sql(rdsn, "SELECT id FROM t ORDER BY id") == [(1,)]
    sql(rdsn, "INSERT INTO t VALUES (3)")  # a writable primary of its own
    assert sql(dsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]  # the source is unchanged
    backed_up(api, restored["id"])  # and it has backups of its own
    assert api.delete(f"/postgres/{restored['id']}").status_code == 200


def test_read_replica_follows_then_promotes(api: httpx.Client, make: Any) -> None:
    prim = make()
    early = api.post(f"/postgres/{prim['id']}/readReplica", json={"name": "too soon"})
    assert error(early, 400) == (
        "Parent server is not ready for read replicas. There are no backups, yet."
    )
    backed_up(api, prim["id"])
    dsn = dsn_of(prim)
    sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    sql(dsn, "INSERT INTO t VALUES (1)")

    rep = result(api.post(f"/postgres/{prim['id']}/readReplica", json={"name": "replica"}))
    assert rep["isPrimary"] is False and "password" not in rep
    assert rep["size"] == prim["size"] and rep["region"] == prim["region"]
    assert states_until_running(api, rep["id"])[-1] == "running"
    listed = {s["id"]: s for s in result(api.get("/postgres"))}
    assert listed[rep["id"]]["isPrimary"] is False

    rdsn = dsn_of(prim, rep)  # the primary's superuser and password
    assert sql(rdsn, "SELECT id FROM t") == [(1,)]
    sql(dsn, "INSERT INTO t VALUES (2)")
    eventually(lambda: sql(rdsn, "SELECT count(*) FROM t")[0][0] == 2, 30, "replication")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(rdsn, "INSERT INTO t VALUES (3)")

    replica_path = f"/postgres/{rep['id']}"
    assert "read replicas" in error(api.patch(replica_path, json={"tags": []}), 400)
    assert "replica" in error(api.delete(f"/postgres/{prim['id']}"), 409)
    switch = api.patch(f"{replica_path}/state", json={"command": "switchover"})
    assert "promote" in error(switch, 400)
    promote_primary = api.patch(f"/postgres/{prim['id']}/state", json={"command": "promote"})
    assert "primary" in error(promote_primary, 400)

    promoted = result(api.patch(f"{replica_path}/state", json={"command": "promote"}))
    assert promoted["isPrimary"] is True
    sql(rdsn, "INSERT INTO t VALUES (3)")
    assert sql(rdsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    assert sql(dsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def standbys(dsn: str) -> list[tuple[str, str]]:
    return sql(
        dsn,
        "SELECT application_name, sync_state FROM pg_stat_replication"
        " WHERE state = 'streaming' AND application_name !~ '^replica_' ORDER BY 1",
    )


def test_ha_standbys_and_switchover(api: httpx.Client, make: Any) -> None:
    svc = make(haType="async")
    wait_state(api, svc["id"], "running")
    dsn = dsn_of(svc)
    one = eventually(lambda: len(standbys(dsn)) == 1 and standbys(dsn), 90, "one standby")
    assert one[0][1] == "async"

    path = f"/postgres/{svc['id']}"
    assert result(api.patch(path, json={"haType": "sync"}))["state"] == "running"
    # ANY 1 (…): both are candidates, one acknowledgement is enough.
    two = [("s1", "quorum"), ("s2", "quorum")]
    eventually(lambda: standbys(dsn) == two, 90, "two synchronous standbys")
    assert sql(dsn, "SHOW synchronous_standby_names")[0][0].startswith("ANY 1")
    assert [r["id"] for r in result(api.get("/postgres"))].count(svc["id"]) == 1

    sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    sql(dsn, "INSERT INTO t SELECT generate_series(1, 100)")
    started = sql(dsn, "SELECT pg_postmaster_start_time()")[0][0]
    assert result(api.patch(f"{path}/state", json={"command": "switchover"}))["state"] == "running"
    # The same connection string reaches the new primary after a reconnect.
    eventually(lambda: sql(dsn, "SELECT pg_postmaster_start_time()")[0][0] != started, 60, "moved")
    eventually(lambda: not sql(dsn, "SELECT pg_is_in_recovery()")[0][0], 30, "a writable primary")
    assert sql(dsn, "SELECT count(*) FROM t")[0][0] == 100
    sql(dsn, "INSERT INTO t VALUES (101)")
    eventually(lambda: len(standbys(dsn)) == 2, 90, "both standbys following the new primary")
    assert wait_state(api, svc["id"], "running")["haType"] == "sync"

    result(api.patch(path, json={"haType": "none"}))
    eventually(lambda: standbys(dsn) == [], 60, "no standbys")
    assert sql(dsn, "SHOW synchronous_standby_names")[0][0] == ""
    sql(dsn, "INSERT INTO t VALUES (102)")  # commits no longer wait for anyone


def test_kill_9_and_stop_resume_restores_replicas_and_standbys(tmp_path: Path) -> None:
    """kill -9 the API server right after a restore and a replica were asked for: on
    start both finish, and the HA standby streams again. `sandbox stop` stops every
    server, standbys included, and a start brings them back."""
    home = tmp_path / "home"
    sb = Sandbox(home, Settings(home=home, rate_limit=0, sample_interval=60))
    info = sb.start()
    try:
        with org_client(info) as api:
            svc = result(api.post("/postgres", json={**CREATE, "haType": "async"}))
            backed_up(api, svc["id"])
            dsn = dsn_of(svc)
            eventually(lambda: len(standbys(dsn)) == 1, 90, "a standby")
            sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
            target = sql(dsn, "SELECT clock_timestamp()")[0][0].astimezone(UTC).isoformat()
            sql(dsn, "INSERT INTO t VALUES (2)")
            base = f"/postgres/{svc['id']}"
            body = {"name": "restored", "restoreTarget": target}
            restored = result(api.post(f"{base}/restoredService", json=body))
            replica = result(api.post(f"{base}/readReplica", json={"name": "replica"}))
        os.kill(info.pid, signal.SIGKILL)

        info = sb.start()
        with org_client(info) as api:
            ids = [s["id"] for s in result(api.get("/postgres"))]
            assert sorted(ids) == sorted([svc["id"], restored["id"], replica["id"]])
            wait_state(api, restored["id"], "running", timeout=120)
            wait_state(api, replica["id"], "running", timeout=120)
        assert sql(dsn_of(svc, restored), "SELECT id FROM t ORDER BY id") == [(1,)]
        rdsn = dsn_of(svc, replica)
        eventually(lambda: sql(rdsn, "SELECT count(*) FROM t")[0][0] == 2, 30, "replication")
        eventually(lambda: len(standbys(dsn)) == 1, 90, "the standby back")

        sb.stop()
        assert not list((home / "clusters").glob("*/pgdata/postmaster.pid"))
        info = sb.start()
        with org_client(info) as api:
            wait_state(api, svc["id"], "running")
        eventually(lambda: len(standbys(dsn)) == 1, 90, "the standby back after a stop")
    finally:
        sb.stop()
        shutil.rmtree((home / "clusters").resolve(), ignore_errors=True)


def test_archive_prunes_old_backups_and_wal(tmp_path: Path) -> None:
    base = usable_clusters_dir(tmp_path / "clusters")  # reachable by the server's user
    root = base / "svc"
    archive = Archive(base / "archive")
    archive.ensure()
    cluster = Cluster(root, free_port())
    cluster.init("Passw0rdPassw0rd", hostnames=["localhost"], extra=archive.settings())
    cluster.start()
    try:
        first = archive.take(cluster)
        with cluster.connect() as conn:
            for _ in range(3):
                conn.execute("SELECT txid_current(), pg_switch_wal()")
        archive.flush(cluster)
        second = archive.take(cluster)
        wal_before = sorted(p.name for p in archive.wal_dir.iterdir())
        assert archive.earliest() == first.ended
        archive.prune(retention=3600)  # both within the window
        assert len(archive.backups()) == 2
        archive.prune(retention=0)  # the newest is always kept
        assert [b.path for b in archive.backups()] == [second.path]
        assert archive.earliest() == second.ended
        wal_after = sorted(p.name for p in archive.wal_dir.iterdir())
        assert len(wal_after) < len(wal_before)
        assert all(w[8:] >= second.start_wal[8:] for w in wal_after if len(w) == 24)
    finally:
        cluster.remove()
        shutil.rmtree(base.resolve(), ignore_errors=True)
