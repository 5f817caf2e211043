"""Configuration writes at a bad moment, over real HTTP: a server that is down, writers at once.

- The primary's PostgreSQL killed (``kill -9``) or stopped with the service still
  recorded ``running``, and a service in ``stopped``: a config write is a 200 that
  keeps the configuration, which the server loads when it starts; a value PostgreSQL
  refuses is still a 400; a password reset is a 409 that changes nothing
  (docs/api-behaviour.md, "Config writes while the server is down", §3.3). Never a 500.
- Writers at once: PATCHes of different keys sent together all survive, because the
  merge reads the stored configuration under the service's lock (§8.2); so do IP access
  rules added by PATCHes sent together, some of them renaming the service (§12.2).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from test_api import error, org_client, result, running_service, wait_state
from test_lifecycle_advanced import sql

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import postmaster_pid, usable_clusters_dir

DOWN = "not accepting connections"


@pytest.fixture(scope="module")
def service(sandbox: SandboxInfo) -> Iterator[dict[str, Any]]:
    with running_service(sandbox, "config-writes") as created:
        yield created


def cluster_of(sandbox: SandboxInfo, service: dict[str, Any]) -> Cluster:
    return Cluster(usable_clusters_dir(sandbox.home / "clusters") / service["id"], service["port"])


def restarted(api: httpx.Client, sid: str) -> None:
    """Start the service's server again with the restart command, as a user would."""
    result(api.patch(f"/postgres/{sid}/state", json={"command": "restart"}))
    wait_state(api, sid, "running")


def patch(api: httpx.Client, sid: str, pg: dict[str, Any], **bouncer: str) -> httpx.Response:
    # A fresh connection each time: the server answers each on its own.
    body = {"pgConfig": pg, "pgBouncerConfig": bouncer}
    return api.patch(f"/postgres/{sid}/config", json=body, headers={"Connection": "close"})


def check_writes_while_down(
    api: httpx.Client, service: dict[str, Any], size: int, refusal: str = DOWN
) -> None:
    """The writes and refusals every kind of down server answers the same way; ``size``
    is this case's own work_mem (MB) and max_connections, so that both change;
    ``refusal`` is what the password reset's 409 says."""
    work_mem, max_connections = f"{size}MB", str(40 + size)
    sid = service["id"]
    kept = result(
        patch(
            api,
            sid,
            {"work_mem": work_mem, "max_connections": max_connections},
            pool_mode="session",
        )
    )
    assert kept["pgConfig"]["work_mem"] == work_mem
    assert kept["pgConfig"]["max_connections"] == max_connections
    assert kept["pgBouncerConfig"]["pool_mode"] == "session"
    # PostgreSQL's own parameter list says max_connections needs a (re)start; work_mem not.
    assert "max_connections" in kept["message"] and "work_mem" not in kept["message"]
    # Checked without a server, as its next start would read it: a 400 naming it.
    assert "work_mem" in error(patch(api, sid, {"work_mem": "lots"}), 400)
    assert "max_connections" in error(patch(api, sid, {"max_connections": "2"}), 400)
    assert result(api.get(f"/postgres/{sid}/config"))["pgConfig"] == kept["pgConfig"]
    # What talks to the server only when it runs (a new certificate, new rules) is kept.
    rule = {"source": f"10.{size}.0.0/16", "description": "kept while down"}
    changed = result(api.patch(f"/postgres/{sid}", json={"ipAccessList": {"add": [rule]}}))
    assert f"10.{size}.0.0/16" in [r["source"] for r in changed["ipAccessList"]]
    # The password lives in the server alone: a 409 saying why, and nothing changes.
    for body in ({}, {"password": "Chosen-Passw0rd-while-down"}):
        resp = api.patch(f"/postgres/{sid}/password", json=body, headers={"Connection": "close"})
        assert refusal in error(resp, 409)


def check_in_effect(service: dict[str, Any], size: int) -> None:
    """The kept config runs once the server is up; the old password still works."""
    dsn = service["connectionString"]
    assert sql(dsn, "SHOW work_mem") == [(f"{size}MB",)]
    assert sql(dsn, "SHOW max_connections") == [(str(40 + size),)]


def test_config_write_while_the_server_was_killed(
    sandbox: SandboxInfo, service: dict[str, Any]
) -> None:
    with org_client(sandbox) as api:
        node = cluster_of(sandbox, service)
        pid = postmaster_pid(node.pgdata)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while postmaster_pid(node.pgdata) is not None:
            time.sleep(0.05)
        try:
            check_writes_while_down(api, service, 12)
        finally:
            restarted(api, service["id"])
        check_in_effect(service, 12)


def test_config_write_while_the_server_was_stopped(
    sandbox: SandboxInfo, service: dict[str, Any]
) -> None:
    with org_client(sandbox) as api:
        cluster_of(sandbox, service).stop("fast")  # the service still reads `running`
        try:
            check_writes_while_down(api, service, 14)
        finally:
            restarted(api, service["id"])
        check_in_effect(service, 14)


def set_state(sandbox: SandboxInfo, sid: str, state: str) -> None:
    # The sandbox never enters `stopped` itself (docs/api-behaviour.md §13.8): the test
    # records it, as the real API shows it, in the sandbox's own store.
    with sqlite3.connect(sandbox.home / "state.db", timeout=30) as db:
        db.execute("UPDATE services SET state = ? WHERE id = ?", (state, sid))


def test_a_stopped_service_keeps_its_config_for_its_start(
    sandbox: SandboxInfo, service: dict[str, Any]
) -> None:
    sid = service["id"]
    with org_client(sandbox) as api:
        cluster_of(sandbox, service).stop("fast")
        set_state(sandbox, sid, "stopped")
        try:
            check_writes_while_down(api, service, 16, "Service is stopped")
            # A stopped service is not restarted by the API (no start command).
            assert "stopped" in error(
                api.patch(f"/postgres/{sid}/state", json={"command": "restart"}), 409
            )
        finally:
            set_state(sandbox, sid, "running")
            restarted(api, sid)
        check_in_effect(service, 16)


# Keys of the spec's pgConfig that a reload applies, each written by its own thread.
KEYS = {
    "work_mem": "5MB",
    "maintenance_work_mem": "70MB",
    "statement_timeout": "61000",
    "lock_timeout": "62000",
    "idle_in_transaction_session_timeout": "63000",
    "random_page_cost": "1.5",
    "effective_io_concurrency": "7",
    "autovacuum_naptime": "2min",
}


def test_concurrent_patches_keep_every_key(
    sandbox: SandboxInfo, service: dict[str, Any], figures: dict[str, str]
) -> None:
    sid = service["id"]
    with org_client(sandbox) as api:
        result(api.post(f"/postgres/{sid}/config", json={"pgConfig": {}, "pgBouncerConfig": {}}))
    start = threading.Barrier(len(KEYS), timeout=60)  # a writer that fails early: no hang

    def write(key: str) -> int:
        with org_client(sandbox) as own:  # one connection per writer, all sent at once
            start.wait()
            resp = patch(own, sid, {key: KEYS[key]}, **{f"pool_{key}": "1"})
            return resp.status_code

    with ThreadPoolExecutor(len(KEYS)) as pool:
        statuses = list(pool.map(write, KEYS))
    assert statuses == [200] * len(KEYS)
    with org_client(sandbox) as api:
        stored = result(api.get(f"/postgres/{sid}/config"))
    assert stored["pgConfig"] == KEYS
    assert stored["pgBouncerConfig"] == {f"pool_{key}": "1" for key in KEYS}
    assert sql(service["connectionString"], "SHOW lock_timeout") == [("62s",)]
    figures["concurrent config PATCHes (keys kept of keys written)"] = (
        f"{len(stored['pgConfig'])} of {len(KEYS)}"
    )


def test_concurrent_rule_patches_and_renames_keep_every_rule(
    sandbox: SandboxInfo, service: dict[str, Any], figures: dict[str, str]
) -> None:
    sid, writers = service["id"], 8
    with org_client(sandbox) as api:
        name = result(api.get(f"/postgres/{sid}"))["name"]
    start = threading.Barrier(writers, timeout=60)  # a writer that fails early: no hang

    def add(i: int) -> int:
        body: dict[str, Any] = {
            "ipAccessList": {"add": [{"source": f"10.200.{i}.0/24", "description": f"w{i}"}]}
        }
        if i % 2 == 0:  # a rename makes a new certificate, which the PATCH waits for
            body["name"] = f"{name}-w{i}"
        with org_client(sandbox) as own:  # one connection per writer, all sent at once
            start.wait()
            return own.patch(
                f"/postgres/{sid}", json=body, headers={"Connection": "close"}
            ).status_code

    try:
        with ThreadPoolExecutor(writers) as pool:
            statuses = list(pool.map(add, range(writers)))
    finally:  # whatever failed, the module's service goes back as it was for the next tests
        with org_client(sandbox) as api:
            after = result(api.get(f"/postgres/{sid}"))
            added = [r for r in after["ipAccessList"] if r["source"].startswith("10.200.")]
            # As it was: the rules gone, the first name back (its hostname, its certificate).
            remove = {"remove": [{"id": r["id"]} for r in added]}
            back = api.patch(f"/postgres/{sid}", json={"name": name, "ipAccessList": remove})
    figures["concurrent rule PATCHes, half renaming (rules kept of rules added)"] = (
        f"{len(added)} of {writers}"
    )
    assert statuses == [200] * writers
    assert sorted(r["description"] for r in added) == sorted(f"w{i}" for i in range(writers))
    assert after["name"] in {f"{name}-w{i}" for i in range(0, writers, 2)}
    assert result(back)["name"] == name
    assert sql(service["connectionString"], "SELECT 1") == [(1,)]
