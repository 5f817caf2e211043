"""A config write never leaves a service unable to start (docs/api-behaviour.md §8.6).

- Start-up's own rules are checked when the value is written: min_wal_size and
  max_wal_size of less than two WAL segments are a 400 naming the field, on a running
  server (which would reload them without a word) and on a killed one.
- A server that is down has its files checked by ``postgres -C shared_memory_size``,
  which runs start-up's cross-checks: tried on every installed major, straight on a
  data folder.
- Whatever slips through anyway (here: the settings an older sandbox let through, put
  in the store and the file behind its back) does not keep the service down: the restart
  goes back to the settings the server last started with, and the config reads so.
- The restart message of a write while the server is down names every change since
  its last start, not only the last write's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from test_api import error, org_client, result, running_service
from test_lifecycle_advanced import sql

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.errors import EngineError, PgBinariesNotFound, ServerExited
from pgcloud_nb.sandbox.postgres import binaries
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.confcheck import config_problem
from pgcloud_nb.sandbox.postgres.conffiles import (
    USER_CONF,
    USER_HEADER,
    parse_conf,
    render_conf,
)
from pgcloud_nb.sandbox.postgres.osuser import (
    as_pg_user,
    chown_tree,
    postmaster_pid,
    run_pg,
    usable_clusters_dir,
    write_owned,
)
from pgcloud_nb.sandbox.services.configs import Configs

TWICE = 'must be at least twice "wal_segment_size"'  # PostgreSQL's own words (xlog.c)
STARTED = {"work_mem": "6MB"}  # what the module's service is made with


@pytest.fixture(scope="module")
def service(sandbox: SandboxInfo) -> Iterator[dict[str, Any]]:
    with running_service(sandbox, "config-start") as created:
        with org_client(sandbox) as api:  # started with STARTED: its last start's settings
            result(api.post(f"/postgres/{created['id']}/config", json=body(STARTED)))
            restart(api, created["id"])
        yield created


def body(pg: dict[str, str]) -> dict[str, Any]:
    return {"pgConfig": pg, "pgBouncerConfig": {"pool_mode": "session"}}


def node_of(sandbox: SandboxInfo, service: dict[str, Any]) -> Cluster:
    return Cluster(usable_clusters_dir(sandbox.home / "clusters") / service["id"], service["port"])


def patch(api: httpx.Client, sid: str, pg: dict[str, str]) -> httpx.Response:
    return api.patch(f"/postgres/{sid}/config", json=body(pg), headers={"Connection": "close"})


def restart(api: httpx.Client, sid: str, timeout: float = 90) -> str:
    """Restart with the API, as a user would; the state it settles in."""
    result(api.patch(f"/postgres/{sid}/state", json={"command": "restart"}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(result(api.get(f"/postgres/{sid}"))["state"])
        if state != "restarting":
            return state
        time.sleep(0.1)
    raise AssertionError(f"{sid} still restarting after {timeout:g}s")


def kill(node: Cluster) -> None:
    pid = postmaster_pid(node.pgdata)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while postmaster_pid(node.pgdata) is not None:
        assert time.monotonic() < deadline, f"postmaster {pid} still there 30 s after SIGKILL"
        time.sleep(0.05)


def test_wal_sizes_under_two_segments_are_refused_running_and_killed(
    sandbox: SandboxInfo, service: dict[str, Any]
) -> None:
    sid, node = service["id"], node_of(sandbox, service)
    with org_client(sandbox) as api:
        for down in (False, True):
            if down:  # the reviewer's case: a write while the server is down was a 200
                kill(node)
            said = error(patch(api, sid, {"min_wal_size": "2MB"}), 400)
            assert "pgConfig.min_wal_size" in said and f'"min_wal_size" {TWICE}' in said
            said = error(patch(api, sid, {"max_wal_size": "31MB"}), 400)  # 16MB segments
            assert "pgConfig.max_wal_size" in said and f'"max_wal_size" {TWICE}' in said
            assert result(api.get(f"/postgres/{sid}/config"))["pgConfig"] == STARTED
        # Two segments are enough; the killed server starts with it.
        assert result(patch(api, sid, {"min_wal_size": "32MB"}))["pgConfig"]["min_wal_size"]
        assert restart(api, sid) == "running"
        assert sql(service["connectionString"], "SHOW min_wal_size") == [("32MB",)]
        result(api.post(f"/postgres/{sid}/config", json=body(STARTED)))  # as it was


def test_restart_message_names_every_change_since_the_last_start(
    sandbox: SandboxInfo, service: dict[str, Any]
) -> None:
    sid = service["id"]
    node_of(sandbox, service).stop("fast")  # the service still reads `running`
    with org_client(sandbox) as api:
        try:
            first = result(patch(api, sid, {"max_connections": "90"}))
            assert "max_connections" in first["message"]
            # The second write changes no postmaster setting, but the first still waits
            # for the start: compared with the previous write, its message was dropped.
            second = result(patch(api, sid, {"work_mem": "7MB"}))
            assert "max_connections" in second.get("message", "")
            back = result(api.post(f"/postgres/{sid}/config", json=body(STARTED)))
            assert "message" not in back  # as the server last started: nothing waits
        finally:
            assert restart(api, sid) == "running"


def test_a_start_that_fails_goes_back_to_the_settings_it_last_started_with(
    sandbox: SandboxInfo, service: dict[str, Any], figures: dict[str, str]
) -> None:
    sid, node = service["id"], node_of(sandbox, service)
    with org_client(sandbox) as api:  # last started with STARTED, whatever ran before
        result(api.post(f"/postgres/{sid}/config", json=body(STARTED)))
        assert restart(api, sid) == "running"
    bad = {**STARTED, "min_wal_size": "2MB"}
    node.stop("fast")
    # What a sandbox before these checks accepted while the server was down (a 200): in
    # the store and in the server's file, so the next start is the first real check.
    write_owned(node.pgdata / USER_CONF, render_conf(bad, USER_HEADER))
    with sqlite3.connect(sandbox.home / "state.db", timeout=30) as db:
        db.execute("UPDATE services SET pg_config = ? WHERE id = ?", (json.dumps(bad), sid))
    log = sandbox.home / "server.log"
    seen = log.stat().st_size
    with org_client(sandbox) as api:
        began = time.monotonic()
        assert restart(api, sid) == "running"  # was `unavailable`, and only a delete got out
        figures["restart falling back to the last started settings (s)"] = (
            f"{time.monotonic() - began:.1f}"
        )
        assert result(api.get(f"/postgres/{sid}/config"))["pgConfig"] == STARTED
        # Writes and restarts work again (both were 409 in `unavailable`).
        assert result(patch(api, sid, {"work_mem": "6MB"}))["pgConfig"] == STARTED
    assert sql(service["connectionString"], "SHOW min_wal_size") == [("80MB",)]
    with log.open() as f:
        f.seek(seen)
        said = [line for line in f if sid in line and "did not start" in line]
    assert len(said) == 1 and f'"min_wal_size" {TWICE}' in said[0], said


def test_the_started_record_reads_back_what_was_written() -> None:
    """The record of a start is the user file as written; its settings parse back whole."""
    settings = {"a": "it's", "b": "C:\\dir\\n", "c": "two\nlines\tand\r", "d.e": "", "f": "''"}
    text = render_conf(settings, USER_HEADER)
    assert parse_conf(text) == settings
    assert parse_conf(text + "# a comment\nnot a setting\n") == settings


# ---------------------------------------------------------------------------- each major


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    made = usable_clusters_dir(tmp_path_factory.mktemp("config-start") / "clusters")
    yield made
    shutil.rmtree(made.resolve(), ignore_errors=True)


@pytest.mark.parametrize("major", [15, 17, 18])
def test_a_down_server_is_checked_with_start_ups_cross_checks(major: int, folders: Path) -> None:
    """``postgres -C port`` passes all three files; ``shared_memory_size`` does not."""
    try:
        bindir = binaries.choose(major, exact=True).bindir
    except PgBinariesNotFound:
        pytest.skip(f"PostgreSQL {major} is not installed here")
    root = folders.resolve() / f"pg{major}"  # real paths: the server cannot cross the link
    root.mkdir(mode=0o700)
    chown_tree(root)
    pgdata = root / "pgdata"
    run_pg([bindir / "initdb", "-D", pgdata, "-A", "peer", "--no-sync"], what="initdb")
    conf = pgdata / "postgresql.conf"
    write_owned(conf, conf.read_text() + f"\ninclude_if_exists '{USER_CONF}'\n")

    def problem(settings: dict[str, str]) -> tuple[str | None, str] | None:
        write_owned(pgdata / USER_CONF, render_conf(settings, USER_HEADER))
        return config_problem(bindir, pgdata, settings)

    assert problem({"min_wal_size": "80MB", "max_connections": "20"}) is None
    assert problem({"min_wal_size": "2MB"}) == ("min_wal_size", f'"min_wal_size" {TWICE}')
    # Said before the log is set up ("postgres: …"); the name is the one written.
    name, said = problem({"max_connections": "3"}) or (None, "")
    assert name == "max_connections" and "must be less than" in said
    # A lock file whose pid lives (a killed postmaster not yet reaped; here a process of
    # the server's user) is no problem of the settings: they are checked as a running
    # server's are, so only start-up's checks are left out.
    holder = subprocess.Popen(["sleep", "60"], **as_pg_user())
    try:
        write_owned(pgdata / "postmaster.pid", f"{holder.pid}\n{pgdata}\n")
        assert problem({"min_wal_size": "2MB"}) is None
        name, said = problem({"work_mem": "lots"}) or (None, "")
        assert name == "work_mem" and 'invalid value for parameter "work_mem"' in said
    finally:
        holder.kill()
        holder.wait()


class _Broken:
    """A context whose store fails: what goes wrong while putting settings back."""

    class store:
        @staticmethod
        def get(service_id: str) -> None:
            raise sqlite3.OperationalError("database is locked")


def test_only_a_server_that_exited_falls_back_and_a_failing_fall_back_says_no() -> None:
    row = cast(Any, SimpleNamespace(id="s1"))
    # A slow start (crash recovery on a busy machine) keeps the settings the user wrote:
    # the fall-back does not even look (no context to look with).
    slow = EngineError("server in /x not ready after 30s")
    assert asyncio.run(Configs(cast(Any, None)).fall_back(row, slow, [])) is False
    # An error while putting settings back is answered False, so the caller records the
    # service `unavailable` instead of leaving it `restarting`.
    exited = ServerExited("server in /x failed to start")
    assert asyncio.run(Configs(cast(Any, _Broken())).fall_back(row, exited, [])) is False
