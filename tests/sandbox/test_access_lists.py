"""IP access lists, as clickhousectl 0.5.0 sends them, stored, shown and enforced for real.

Every rule list ends up in the service's ``pg_hba.conf``: a list that leaves out
127.0.0.1 refuses a TCP client with the right password, adding 127.0.0.1/32 with
a PATCH lets it in, and ``[]`` refuses everyone (docs/api-behaviour.md, "IP access
lists").
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_api import CREATE, error, result, wait_gone, wait_state
from test_lifecycle_advanced import (
    backed_up,
    dsn_of,
    eventually,
    sql,
    standbys,
)

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.services import access_lists
from pgcloud_nb.sandbox.store import ServiceRow, Store

OFFICE = {"source": "10.0.0.0/8", "description": "office", "portRange": "5432"}
HERE = {"source": "127.0.0.1/32", "description": "this machine", "portRange": "5432..6432"}
REFUSED = "no pg_hba.conf entry"


def refused(dsn: str) -> str:
    """The server's refusal of a TCP client with the right password (fails if it admits it)."""
    with pytest.raises(psycopg.OperationalError) as caught:
        sql(dsn, "SELECT 1")
    assert REFUSED in str(caught.value), caught.value
    return str(caught.value)


def admitted(dsn: str) -> bool:
    return sql(dsn, "SELECT 1") == [(1,)]


def rules_of(api: httpx.Client, sid: str) -> list[dict[str, str]]:
    return list(result(api.get(f"/postgres/{sid}"))["ipAccessList"])


def test_without_a_list_every_address_may_connect(api: httpx.Client, make: Any) -> None:
    svc = make()
    assert [(r["source"], r["portRange"]) for r in svc["ipAccessList"]] == [
        ("0.0.0.0/0", "5432"),
        ("0.0.0.0/0", "6432"),
    ]
    wait_state(api, svc["id"], "running")
    shown = rules_of(api, svc["id"])
    assert shown == svc["ipAccessList"] == rules_of(api, svc["id"])  # stable ids
    assert all(set(r) == {"id", "source", "description", "portRange"} for r in shown)
    item = next(s for s in result(api.get("/postgres")) if s["id"] == svc["id"])
    assert "ipAccessList" not in item  # list items keep the spec's fields
    assert admitted(dsn_of(svc))
    # The defaults can be removed like any rule (their ids are real).
    patch = {"ipAccessList": {"remove": [{"id": shown[0]["id"]}]}}
    assert result(api.patch(f"/postgres/{svc['id']}", json=patch))["ipAccessList"] == shown[1:]
    refused(dsn_of(svc))  # 0.0.0.0/0 is left on 6432 only: no PgBouncer here


def test_a_list_is_enforced_and_a_patch_changes_it_at_once(api: httpx.Client, make: Any) -> None:
    svc = make(ipAccessList=[OFFICE])
    sid, dsn = svc["id"], dsn_of(svc)
    assert [{k: r[k] for k in OFFICE} for r in svc["ipAccessList"]] == [OFFICE]
    wait_state(api, sid, "running")
    refused(dsn)

    office = rules_of(api, sid)[0]
    added = result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"add": [HERE]}}))
    assert [r["source"] for r in added["ipAccessList"]] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert added["ipAccessList"][0] == office  # kept as it was, id included
    assert admitted(dsn)

    here = added["ipAccessList"][1]
    change = {"remove": [{"id": here["id"]}], "add": [{**HERE, "portRange": "6432"}]}
    after = result(api.patch(f"/postgres/{sid}", json={"ipAccessList": change}))
    assert [(r["source"], r["portRange"]) for r in after["ipAccessList"]] == [
        ("10.0.0.0/8", "5432"),
        ("127.0.0.1/32", "6432"),
    ]
    refused(dsn)  # 127.0.0.1 on the PgBouncer port only

    ids = [{"id": r["id"]} for r in after["ipAccessList"]]
    empty = result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"remove": ids}}))
    assert empty["ipAccessList"] == [] == rules_of(api, sid)
    refused(dsn)
    result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"add": [HERE]}}))
    assert admitted(dsn)


def test_block_public_access(api: httpx.Client, make: Any) -> None:
    svc = make(ipAccessList=[])  # clickhousectl's --block-public-access
    assert svc["ipAccessList"] == []
    wait_state(api, svc["id"], "running")
    refused(dsn_of(svc))
    assert rules_of(api, svc["id"]) == []


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([{"source": "10.0.0.300/8"}], "ipAccessList[0].source"),
        ([{"source": "db.example.com"}], "ipAccessList[0].source"),
        ([{"source": "10.0.0.0/33"}], "ipAccessList[0].source"),
        ([{"source": "fe80::1%eth0"}], "ipAccessList[0].source"),
        ([{"source": " 10.0.0.1"}], "ipAccessList[0].source"),
        ([OFFICE, {"source": "10.0.0.0/8 trust"}], "ipAccessList[1].source"),
        ([{**OFFICE, "portRange": "70000"}], "ipAccessList[0].portRange"),
        ([{**OFFICE, "portRange": "0"}], "ipAccessList[0].portRange"),
        ([{**OFFICE, "portRange": "6432..5432"}], "ipAccessList[0].portRange"),
        ([{**OFFICE, "portRange": "5432-6432"}], "ipAccessList[0].portRange"),
        ([{**OFFICE, "description": "line\nbreak"}], "ipAccessList[0].description"),
        ([{**OFFICE, "description": "x" * 256}], "ipAccessList[0].description"),
        ([OFFICE, {**OFFICE, "source": "10.1.2.3/8", "description": "same"}], "ipAccessList[1]"),
        ([{**OFFICE, "id": "mine"}], "ipAccessList[0].id"),
        ({"add": [OFFICE]}, "ipAccessList"),
    ],
)
def test_create_refuses_a_bad_list_naming_the_field(
    api: httpx.Client, rules: Any, field: str
) -> None:
    name = f"acl-bad-{uuid.uuid4().hex[:6]}"
    msg = error(api.post("/postgres", json={**CREATE, "name": name, "ipAccessList": rules}), 400)
    assert f"request body.{field}:" in msg or msg.endswith(f"can't be validated: {field}"), msg
    assert all(s["name"] != name for s in result(api.get("/postgres")))


def test_patch_refuses_bad_changes_and_changes_nothing(api: httpx.Client, make: Any) -> None:
    svc = make(ipAccessList=[OFFICE, HERE])
    sid = svc["id"]
    wait_state(api, sid, "running")
    before = rules_of(api, sid)
    path = f"/postgres/{sid}"
    unknown = str(uuid.uuid4())
    msg = error(api.patch(path, json={"ipAccessList": {"remove": [{"id": unknown}]}}), 400)
    assert "ipAccessList.remove[0].id" in msg and unknown in msg
    twice = {"remove": [{"id": before[0]["id"]}, {"id": before[0]["id"]}]}
    assert "ipAccessList.remove[1].id" in error(api.patch(path, json={"ipAccessList": twice}), 400)
    same = {"add": [{"source": "10.9.9.9/8", "portRange": "5432"}]}
    assert before[0]["id"] in error(api.patch(path, json={"ipAccessList": same}), 400)
    assert "ipAccessList" in error(api.patch(path, json={"ipAccessList": [OFFICE]}), 400)
    bad = {"name": "renamed", "ipAccessList": {"add": [{"source": "nowhere"}]}}
    assert "ipAccessList.add[0].source" in error(api.patch(path, json=bad), 400)
    now = result(api.get(path))
    assert now["ipAccessList"] == before and now["name"] == svc["name"]  # nothing half-done
    assert admitted(dsn_of(svc))


@pytest.mark.slow
def test_restores_and_replicas_inherit_or_replace(api: httpx.Client, make: Any) -> None:
    src = make(ipAccessList=[OFFICE, HERE])
    source = backed_up(api, src["id"])
    dsn = dsn_of(src)
    sql(dsn, "CREATE TABLE t (id int)")
    target = sql(dsn, "SELECT clock_timestamp()")[0][0].isoformat()
    path = f"/postgres/{src['id']}"

    # No list: the source's rules, as clickhousectl copies them, under new ids.
    restored = result(
        api.post(f"{path}/restoredService", json={"name": "r1", "restoreTarget": target})
    )
    inherited = [{k: r[k] for k in OFFICE} for r in restored["ipAccessList"]]
    assert inherited == [{k: r[k] for k in OFFICE} for r in source["ipAccessList"]]
    assert {r["id"] for r in restored["ipAccessList"]}.isdisjoint(
        r["id"] for r in source["ipAccessList"]
    )
    # A replica with a list of its own: that list, enforced from its first start.
    replica = result(api.post(f"{path}/readReplica", json={"name": "r2", "ipAccessList": [OFFICE]}))
    blocked = result(
        api.post(
            f"{path}/restoredService",
            json={"name": "r3", "restoreTarget": target, "ipAccessList": []},
        )
    )
    try:
        for made in (restored, replica, blocked):
            wait_state(api, made["id"], "running", timeout=180)
        assert admitted(dsn_of(src, restored))  # the historic password, the copied rules
        refused(dsn_of(src, replica))
        refused(dsn_of(src, blocked))
        assert rules_of(api, blocked["id"]) == []
    finally:
        for made in (replica, restored, blocked):
            api.delete(f"/postgres/{made['id']}")
        for made in (replica, restored, blocked):
            wait_gone(api, made["id"], timeout=120)


@pytest.mark.slow
def test_standbys_carry_the_list_through_a_switchover(
    api: httpx.Client, make: Any, sandbox: SandboxInfo
) -> None:
    svc = make(haType="async", ipAccessList=[HERE])
    sid, dsn = svc["id"], dsn_of(svc)
    wait_state(api, sid, "running")
    eventually(lambda: len(standbys(dsn)) == 1, 90, "one standby")
    clusters = usable_clusters_dir(sandbox.home / "clusters")
    added = result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"add": [OFFICE]}}))
    standby_hba = (clusters / f"{sid}.s1" / "pgdata" / "pg_hba.conf").read_text()
    assert "10.0.0.0/8" in standby_hba and "127.0.0.1/32" in standby_hba

    started = sql(dsn, "SELECT pg_postmaster_start_time()")[0][0]
    result(api.patch(f"/postgres/{sid}/state", json={"command": "switchover"}))
    eventually(lambda: sql(dsn, "SELECT pg_postmaster_start_time()")[0][0] != started, 60, "moved")
    eventually(lambda: not sql(dsn, "SELECT pg_is_in_recovery()")[0][0], 30, "a primary")
    here = next(r for r in added["ipAccessList"] if r["source"] == "127.0.0.1/32")
    result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"remove": [{"id": here["id"]}]}}))
    refused(dsn)  # the new primary (the old standby) has the change too
    # The standbys' own streaming is the sandbox's, over the socket: untouched.
    result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"add": [HERE]}}))
    eventually(lambda: len(standbys(dsn)) == 1, 90, "the old primary following again")


def test_an_older_home_reads_the_default_rules(tmp_path: Path) -> None:
    """A state.db from before access lists gains the column; its services show the defaults."""
    home = SandboxHome(tmp_path / "old")
    home.ensure()
    home.credentials()
    sid = str(uuid.uuid4())
    store = Store(home.db_path)
    store.insert(
        ServiceRow(
            id=sid,
            name="old",
            provider="aws",
            region="us-east-1",
            postgres_version="17",
            size="r8gd.large",
            ha_type="none",
            state="running",
            created_at="2026-01-01T00:00:00+00:00",
            is_primary=True,
            hostname="old.sandbox.localhost",
            username="postgres",
            port=1,
        )
    )
    store.close()
    with sqlite3.connect(home.db_path) as db:  # as an older sandbox left it
        db.execute("ALTER TABLE services DROP COLUMN ip_access_list")
    store = Store(home.db_path)
    try:
        row = store.get(sid)
        assert row is not None and row.ip_access_list is None
        assert [r["source"] for r in access_lists.rules(row)] == ["0.0.0.0/0", "0.0.0.0/0"]
        assert access_lists.rules(row) == access_lists.defaults(sid)
        assert access_lists.tcp_sources(access_lists.rules(row)) == ["0.0.0.0/0"]
        changed = store.update(sid, ip_access_list=[{**OFFICE, "id": "x"}])
        assert changed is not None and changed.ip_access_list == [{**OFFICE, "id": "x"}]
    finally:
        store.close()
