"""Replicas, restores and HA standbys of primaries whose settings a hot standby cannot
simply copy (a raised max_connections, serializable as the default), and new services
that fail or are deleted while being made: over real HTTP and real SQL
(docs/api-behaviour.md, "Replicas and standbys follow their primary's settings")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import CREATE, error, result, wait_gone, wait_state
from test_lifecycle_advanced import (
    backed_up,
    dsn_of,
    eventually,
    sql,
    standbys,
    states_until_running,
)

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.insights.logs import LogIndex, LogQuery
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.services.hotstandby import (
    NODE_DEFAULTS,
    for_standby,
    needed,
    pg_int,
    standby_config,
)
from pgcloud_nb.sandbox.services.notes import note, reason

slow = pytest.mark.slow  # the tests over a real sandbox; the rules' own tests are fast

Make = Callable[..., dict[str, Any]]
NOTE = "pgcloud-nb sandbox:"


@pytest.fixture
def made(api: httpx.Client) -> Iterator[list[str]]:
    """Every service a test makes (primaries, replicas, restores), deleted afterwards,
    the newest first (a primary waits for its replicas)."""
    ids: list[str] = []
    yield ids
    for sid in reversed(ids):
        deadline = time.monotonic() + 120
        while api.delete(f"/postgres/{sid}").status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.5)
        wait_gone(api, sid, timeout=120)


@pytest.fixture
def make(api: httpx.Client, made: list[str]) -> Make:
    def create(**extra: Any) -> dict[str, Any]:
        body = {**CREATE, "name": f"rs-{uuid.uuid4().hex[:6]}", **extra}
        created = dict(result(api.post("/postgres", json=body)))
        made.append(created["id"])
        return created

    return create


@pytest.fixture
def replica_of(api: httpx.Client, made: list[str]) -> Make:
    def replicate(primary: dict[str, Any], **body: Any) -> dict[str, Any]:
        path = f"/postgres/{primary['id']}/readReplica"
        created = dict(result(api.post(path, json={"name": "replica", **body})))
        made.append(created["id"])
        return created

    return replicate


def show(dsn: str, name: str) -> str:
    return str(sql(dsn, f"SHOW {name}")[0][0])


def config(api: httpx.Client, sid: str) -> dict[str, str]:
    return dict(result(api.get(f"/postgres/{sid}/config"))["pgConfig"])


def log_lines(api: httpx.Client, sid: str, contains: str = NOTE) -> list[dict[str, Any]]:
    """The service's log entries (the logs endpoint) holding ``contains``."""
    now = datetime.now(UTC)
    params = {
        "from_date": (now - timedelta(hours=1)).isoformat(timespec="milliseconds"),
        "to_date": (now + timedelta(minutes=1)).isoformat(timespec="milliseconds"),
        "body_contains": contains,
        "limit": "2000",
    }
    return list(result(api.get(f"/postgres/{sid}/logs", params=params)))


def settled(api: httpx.Client, sid: str, timeout: float = 180) -> dict[str, Any]:
    """The service once it stops changing state on its own (running or unavailable);
    a 404 here is the old failure: a new service that vanished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = api.get(f"/postgres/{sid}")
        assert resp.status_code == 200, f"{sid} vanished: {resp.status_code} {resp.text}"
        svc = dict(resp.json()["result"])
        if svc["state"] in ("running", "unavailable"):
            return svc
        time.sleep(0.1)
    raise AssertionError(f"{sid} still {svc['state']} after {timeout}s")


@slow
def test_replica_of_a_primary_with_raised_max_connections(
    api: httpx.Client, make: Make, replica_of: Make
) -> None:
    """The replica asked for less (and for nothing) and still runs,
    with at least its primary's max_connections, and says so in GET /config and its log."""
    prim = make(pgConfig={"max_connections": "200"})
    backed_up(api, prim["id"])
    dsn = dsn_of(prim)
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")

    asked = {"max_connections": "50", "work_mem": "8MB"}
    rep = replica_of(prim, pgConfig=asked)
    other = replica_of(prim, name="inherits", pgConfig={"work_mem": "4MB"})
    for new in (rep, other):
        assert settled(api, new["id"])["state"] == "running"
        rdsn = dsn_of(prim, new)
        assert show(rdsn, "max_connections") == "200"
        assert sql(rdsn, "SELECT id FROM t") == [(1,)]
        assert config(api, new["id"])["max_connections"] == "200"  # what really runs
        said = log_lines(api, new["id"], "max_connections")
        assert any(NOTE in e["body"] and "200" in e["body"] for e in said), said
    assert config(api, rep["id"])["work_mem"] == "8MB"  # the rest is as asked
    assert show(dsn_of(prim, rep), "work_mem") == "8MB"

    # Written later, a lower value is raised again, and the answer says what runs.
    body = {"pgConfig": {"max_connections": "20"}, "pgBouncerConfig": {}}
    written = result(api.post(f"/postgres/{rep['id']}/config", json=body))
    assert written["pgConfig"]["max_connections"] == "200"


@slow
def test_replica_of_a_serializable_primary(api: httpx.Client, make: Make, replica_of: Make) -> None:
    """A standby runs no serializable transaction: the replica runs repeatable read."""
    prim = make(pgConfig={"default_transaction_isolation": "serializable"})
    backed_up(api, prim["id"])
    dsn = dsn_of(prim)
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
    rep = replica_of(prim)  # inherits the primary's pgConfig
    assert settled(api, rep["id"])["state"] == "running"
    rdsn = dsn_of(prim, rep)
    assert show(rdsn, "default_transaction_isolation") == "repeatable read"
    assert sql(rdsn, "SELECT id FROM t") == [(1,)]
    assert config(api, rep["id"])["default_transaction_isolation"] == "repeatable read"
    assert show(dsn, "default_transaction_isolation") == "serializable"  # the primary keeps it
    assert log_lines(api, rep["id"], "serializable")


@slow
def test_ha_standbys_of_a_serializable_primary(api: httpx.Client, make: Make) -> None:
    """The HA standby streams, and after a switchover the new primary runs the
    service's serializable while the old one follows as a standby."""
    svc = make(haType="async", pgConfig={"default_transaction_isolation": "serializable"})
    wait_state(api, svc["id"], "running")
    dsn = dsn_of(svc)
    eventually(lambda: len(standbys(dsn)) == 1, 90, "a streaming standby")
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
    started = sql(dsn, "SELECT pg_postmaster_start_time()")[0][0]
    switch = {"command": "switchover"}
    assert result(api.patch(f"/postgres/{svc['id']}/state", json=switch))["state"] == "running"
    eventually(lambda: sql(dsn, "SELECT pg_postmaster_start_time()")[0][0] != started, 60, "moved")
    eventually(lambda: not sql(dsn, "SELECT pg_is_in_recovery()")[0][0], 30, "a primary")
    assert show(dsn, "default_transaction_isolation") == "serializable"
    sql(dsn, "INSERT INTO t VALUES (2)")
    eventually(lambda: len(standbys(dsn)) == 1, 90, "the old primary following")


@slow
@pytest.mark.parametrize("change", ["max_connections", "serializable"])
def test_restore_of_a_primary_whose_settings_changed(
    api: httpx.Client, make: Make, made: list[str], change: str
) -> None:
    """The restore replays WAL of a restart with a larger max_connections than its
    backup had, or runs serializable from its backup on: it runs, with those settings."""
    serializable = {"default_transaction_isolation": "serializable"}
    src = make(pgConfig=serializable) if change == "serializable" else make()
    backed_up(api, src["id"])
    dsn = dsn_of(src)
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
    value = serializable
    if change == "max_connections":
        value = {"max_connections": "200"}
        body = {"pgConfig": value, "pgBouncerConfig": {}}
        result(api.post(f"/postgres/{src['id']}/config", json=body))
        result(api.patch(f"/postgres/{src['id']}/state", json={"command": "restart"}))
        wait_state(api, src["id"], "running")
    sql(dsn, "INSERT INTO t VALUES (2)")
    target = sql(dsn, "SELECT clock_timestamp()")[0][0].astimezone(UTC).isoformat()

    path = f"/postgres/{src['id']}/restoredService"
    restored = result(api.post(path, json={"name": "restored", "restoreTarget": target}))
    made.append(restored["id"])
    seen = states_until_running(api, restored["id"], timeout=180)
    assert "unavailable" not in seen, seen
    rdsn = dsn_of(src, restored)
    assert sql(rdsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    name, want = next(iter(value.items()))
    assert show(rdsn, name) == want


@slow
def test_restore_and_replica_can_be_deleted_while_made(
    api: httpx.Client, make: Make, made: list[str], replica_of: Make
) -> None:
    """A DELETE of a service being made answers 200 and removes it; its source's
    DELETE meanwhile is a 409 that calls the restore a restore."""
    src = make()
    backed_up(api, src["id"])
    dsn = dsn_of(src)
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
    target = sql(dsn, "SELECT clock_timestamp()")[0][0].astimezone(UTC).isoformat()
    path = f"/postgres/{src['id']}/restoredService"
    restored = result(api.post(path, json={"name": "restored", "restoreTarget": target}))
    made.append(restored["id"])
    said = error(api.delete(f"/postgres/{src['id']}"), 409)
    assert "restore in progress" in said and restored["id"] in said
    assert "read replica" not in said

    rep = replica_of(src)
    said = error(api.delete(f"/postgres/{src['id']}"), 409)
    assert f"read replicas ({rep['id']})" in said and f"in progress ({restored['id']})" in said

    for new in (restored, rep):
        resp = api.delete(f"/postgres/{new['id']}")
        assert resp.status_code == 200, resp.text
        wait_gone(api, new["id"], timeout=120)
    assert sql(dsn, "SELECT id FROM t") == [(1,)]  # the source is untouched
    assert api.delete(f"/postgres/{src['id']}").status_code == 200


def newest_backup(info: SandboxInfo, sid: str) -> Path:
    base = (info.home / "clusters").resolve() / ".backups" / sid / "base"
    return sorted(p for p in base.iterdir() if p.is_dir())[-1]


@slow
def test_replica_that_cannot_start_is_unavailable_and_says_why(
    api: httpx.Client, make: Make, sandbox: SandboxInfo, replica_of: Make
) -> None:
    """A new node that does not start leaves its service unavailable (not a 404), the
    reason in its logs, and deletable; its primary refuses deletion until then."""
    prim = make()
    backed_up(api, prim["id"])
    # A damaged base backup: the copy has no control file, so no server starts from it.
    (newest_backup(sandbox, prim["id"]) / "global" / "pg_control").unlink()

    rep = replica_of(prim)
    assert settled(api, rep["id"])["state"] == "unavailable"
    said = log_lines(api, rep["id"])
    assert any("could not be made" in e["body"] for e in said), said
    assert all("/" not in e["body"].split("made", 1)[1] for e in said)  # no machine path
    listed = {s["id"]: s for s in result(api.get("/postgres"))}
    assert listed[rep["id"]]["state"] == "unavailable"
    assert rep["id"] in error(api.delete(f"/postgres/{prim['id']}"), 409)
    assert api.delete(f"/postgres/{rep['id']}").status_code == 200
    wait_gone(api, rep["id"], timeout=120)


@slow
def test_raising_a_primary_keeps_its_replica_and_standby_running(
    api: httpx.Client, make: Make, replica_of: Make
) -> None:
    """A config write (then a restart) raising the primary's
    max_connections raises its replica's and standby's first; all keep running."""
    prim = make(haType="async")
    backed_up(api, prim["id"])
    dsn = dsn_of(prim)
    eventually(lambda: len(standbys(dsn)) == 1, 90, "a streaming standby")
    sql(dsn, "CREATE TABLE t AS SELECT 1 AS id")
    rep = replica_of(prim, pgConfig={"work_mem": "8MB"})
    assert settled(api, rep["id"])["state"] == "running"
    rdsn = dsn_of(prim, rep)

    body = {"pgConfig": {"max_connections": "250"}, "pgBouncerConfig": {}}
    written = result(api.post(f"/postgres/{prim['id']}/config", json=body))
    assert "max_connections" in written["message"]
    assert config(api, rep["id"]) == {"work_mem": "8MB", "max_connections": "250"}
    said = log_lines(api, rep["id"], "max_connections 100 -> 250")  # noted by the server
    assert any(NOTE in e["body"] and e["severity"] == "LOG" for e in said), said
    result(api.patch(f"/postgres/{prim['id']}/state", json={"command": "restart"}))
    wait_state(api, prim["id"], "running")
    assert show(dsn, "max_connections") == "250"

    eventually(lambda: show(rdsn, "max_connections") == "250", 60, "the replica raised")
    sql(dsn, "INSERT INTO t VALUES (2)")
    eventually(lambda: sql(rdsn, "SELECT count(*) FROM t")[0][0] == 2, 60, "replication")
    assert result(api.get(f"/postgres/{rep['id']}"))["state"] == "running"
    eventually(lambda: len(standbys(dsn)) == 1, 90, "the standby streaming again")


# -- the rules themselves (no server)


@pytest.mark.parametrize(
    ("text", "value"),
    [("200", 200), (" 200 ", 200), ("0x40", 64), ("010", 8), ("64.4", 64), ("2e2", 200)],
)
def test_integers_read_as_postgresql_reads_them(text: str, value: int) -> None:
    assert pg_int(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12abc", "1e999", "nan"])
def test_what_postgresql_reads_no_integer_from(text: str) -> None:
    assert pg_int(text) is None


def test_a_follower_runs_at_least_its_primarys_settings() -> None:
    least = needed({"max_connections": "200"}, {"max_worker_processes": 16})
    assert least == {**NODE_DEFAULTS, "max_connections": 200, "max_worker_processes": 16}
    asked = {"max_connections": "50", "work_mem": "8MB"}
    config, changes = for_standby(asked, least)
    assert config == {"max_connections": "200", "work_mem": "8MB", "max_worker_processes": "16"}
    assert len(changes) == 2 and "max_connections 50 -> 200" in changes[0]
    assert for_standby({"max_connections": "300"}, least)[0]["max_connections"] == "300"
    assert for_standby({}, needed({}))[1] == []  # a default primary changes nothing


def test_a_standby_runs_repeatable_read_for_serializable() -> None:
    config = {"default_transaction_isolation": " SERIALIZABLE", "work_mem": "4MB"}
    assert standby_config(config) == {
        "default_transaction_isolation": "repeatable read",
        "work_mem": "4MB",
    }
    kept = {"default_transaction_isolation": "read committed"}
    assert standby_config(kept) == kept


def test_a_note_on_a_stopped_server_is_a_log_line_the_logs_endpoint_reads(
    tmp_path: Path,
) -> None:
    node = Cluster(usable_clusters_dir(tmp_path / "clusters") / "svc", 5999)
    note(node, "could not be made: " + reason(RuntimeError("server in /x/y failed\nmore")))
    note(node, "a second line", "ERROR")
    start = datetime.now(UTC) - timedelta(minutes=1)
    query = LogQuery(start=start.timestamp(), end=start.timestamp() + 120, descending=False)
    entries = LogIndex(node.log_dir).entries(query)
    assert [e["severity"] for e in entries] == ["LOG", "ERROR"]
    assert entries[0]["body"] == f"{NOTE} could not be made: server in <path> failed"
    assert oct(node.log_dir.stat().st_mode & 0o777) == "0o700"
