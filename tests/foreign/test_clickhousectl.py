"""ClickHouse's own CLI, ``clickhousectl`` 0.5.0, drives one sandbox through a whole lifecycle.

Code written against the real API must run unchanged on the sandbox; the CLI
is such code, written by others. Every ``cloud postgres`` subcommand and flag
it has (found by walking its help, so a later version's new flag is noticed)
runs here except ``query``, which needs an OAuth login, and each command's
output is checked: fields of its ``--json``, else its text.

The sandbox keeps the real API's rate limit (10 requests per 10 s), which the
CLI does not retry, so every command waits for room first (:mod:`foreign.ctl`).
The tests run in file order and share one sandbox and its services.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import psycopg
import pytest
from foreign.ctl import CLI, VERSION, Ctl, Secret
from foreign.steps import (
    Fleet,
    age,
    connect,
    marks,
    new_primary_serves,
    pattern_of,
    refused,
    rules,
    run_slowly,
    running,
    stamp,
    started,
    wait,
    window,
)
from psycopg.conninfo import conninfo_to_dict

from pgcloud_nb.redaction import remember_secret
from pgcloud_nb.sandbox import Sandbox, Settings

pytestmark = pytest.mark.slow

APP = "ctl-lifecycle"  # the application_name our own statements run under
ID = re.compile(r"ID: ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def ctl(sandbox_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctl]:
    # The rate limit is Settings' default, the real API's: 10 requests per 10 s per key.
    # A backup a minute, so the backups list has pages by the time it is read.
    home = sandbox_root / "clickhousectl"
    sandbox = Sandbox(home, Settings(home=home, sample_interval=2.0, backup_interval=60.0))
    info = sandbox.start()
    try:
        yield Ctl(info, tmp_path_factory.mktemp("clickhousectl-home"))
    finally:
        sandbox.stop()
        # The servers' folders may live outside the home (/tmp/pgcloud-nb-<uid>-<hash>,
        # when the home is private): gone with it, backups and all.
        shutil.rmtree((home / "clusters").resolve(), ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    files = tmp_path_factory.mktemp("clickhousectl-files")
    docs = {
        "pg": {"work_mem": "8MB"},
        "bouncer": {"default_pool_size": "25"},
        "patch": {"pgConfig": {"work_mem": "16MB"}, "pgBouncerConfig": {"default_pool_size": "30"}},
    }
    for name, doc in docs.items():
        (files / f"{name}.json").write_text(json.dumps(doc))
    return Fleet(files=files)


@pytest.fixture(autouse=True)
def _settle(request: pytest.FixtureRequest, ctl: Ctl) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)  # set by tests/foreign/conftest.py
    ctl.settle(report is not None and report.passed)


# -- the CLI, and create --


def test_the_cli_is_the_pinned_version(ctl: Ctl) -> None:
    # From the wheel's metadata: `clickhousectl --version` would ask GitHub for a newer one.
    assert metadata.version(CLI) == VERSION
    # The walk found the subcommands the help lists, their own flags and the shared ones.
    some = {
        "list",
        "create --ip-allow",
        "update --remove-ip-allow",
        "backup list --cursor",
        "slow-queries get --timestamp",
        "restore --source-name",
        "--org-name",
        "query",
    }
    assert some <= set(ctl.known)  # fmt: skip


def test_create(ctl: Ctl, fleet: Fleet) -> None:
    made = ctl(
        "create --name ctl-main --provider aws --region us-east-1 --size r8gd.medium"
        " --pg-version 17 --ha-type async --tag env=test --tag team=db"
        f" --pg-config-file {fleet.file('pg')} --pg-bouncer-config-file {fleet.file('bouncer')}"
        " --json", cost=1,
    ).json()  # fmt: skip
    remember_secret(made["password"])
    assert made["name"] == "ctl-main" and made["state"] in ("creating", "running")
    assert (made["provider"], made["region"], made["size"]) == ("aws", "us-east-1", "r8gd.medium")
    assert (made["postgresVersion"], made["haType"], made["isPrimary"]) == ("17", "async", True)
    assert made["tags"] == [{"key": "env", "value": "test"}, {"key": "team", "value": "db"}]
    assert made["hostname"].startswith("ctl-main-") and made["username"] == "postgres"
    dsn = conninfo_to_dict(made["connectionString"])
    assert dsn["password"] == made["password"]
    fleet.main, fleet.password = made["id"], Secret(made["password"])
    fleet.port = int(str(dsn["port"]))
    wait(ctl, fleet.main, running)
    with psycopg.connect(made["connectionString"]) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)

    text = ctl("create --name ctl-plain --region us-east-1 --size r8gd.medium", cost=1).out
    password, found = re.search(r"Password: (\S+)", text), ID.search(text)
    assert "Postgres service created" in text and password and found, "a one-time password"
    remember_secret(password.group(1))
    fleet.plain = found.group(1)


def test_create_with_ip_allow(ctl: Ctl) -> None:
    made = ctl(
        "create --name ctl-ip --region us-east-1 --size r8gd.medium --ip-allow"
        " 127.0.0.1/32:5432=local --ip-allow 10.0.0.0/8:5432..6432=office --json", cost=3,
    ).json()  # fmt: skip
    remember_secret(made.get("password"))
    got = rules(wait(ctl, made["id"], running))
    assert set(got) == {("127.0.0.1/32", "5432"), ("10.0.0.0/8", "5432..6432")}
    assert got["10.0.0.0/8", "5432..6432"]["description"] == "office"
    ctl(f"delete {made['id']}", cost=2)


def test_create_blocking_public_access(ctl: Ctl) -> None:
    made = ctl(
        "create --name ctl-closed --region us-east-1 --size r8gd.medium --block-public-access"
        " --json", cost=3,
    ).json()  # fmt: skip
    remember_secret(made["password"])
    assert wait(ctl, made["id"], running)["ipAccessList"] == []
    port = int(str(conninfo_to_dict(made["connectionString"])["port"]))
    with pytest.raises(psycopg.OperationalError):  # no rule admits even 127.0.0.1
        connect(port, Secret(made["password"])).close()
    ctl(f"delete {made['id']}", cost=2)


def test_create_in_an_unknown_region_is_refused(ctl: Ctl) -> None:
    error = refused(ctl, "create --name ctl-nowhere --region mars-central-1 --size r8gd.medium")
    assert "region" in error


def test_a_tag_without_value_is_refused(ctl: Ctl) -> None:
    error = refused(
        ctl, "create --name ctl-untagged --region us-east-1 --size r8gd.medium --tag env"
    )
    assert "value" in error


# -- read --


def test_get_and_list(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(f"get {fleet.main} --json", cost=1).json()
    assert (got["id"], got["name"], got["state"]) == (fleet.main, "ctl-main", "running")
    assert "password" not in got and "connectionString" not in got
    text = ctl("get --name ctl-main", cost=2).out
    assert f"ID: {fleet.main}" in text and "State: running" in text and "HA type: async" in text

    listed = {s["id"]: s for s in ctl("list --json", cost=1).json()}
    assert {fleet.main, fleet.plain} <= set(listed) and listed[fleet.main]["name"] == "ctl-main"
    table = ctl("list --filter name=ctl-main --filter state=running", cost=1).out
    assert fleet.main in table and fleet.plain not in table

    # The org by its name, and the key by flags instead of the environment.
    org = ctl("list --org-name 'pgcloud-nb sandbox' --json", cost=2, base=ctl.base(org=False))
    assert {s["id"] for s in org.json()} == set(listed)
    key = f"--api-key {ctl.info.key_id} --api-secret {ctl.info.key_secret}"
    assert ctl(f"get {fleet.main} {key} --json", cost=1, env=ctl.env).json()["id"] == fleet.main
    debug = ctl(f"get {fleet.main} --debug", cost=1)
    assert f"api url: {ctl.info.url}/v1" in debug.err and "Name: ctl-main" in debug.out


# -- update --


def test_update_name_and_tags(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(
        f"update {fleet.main} --new-name ctl-primary --add-tag owner=me --remove-tag team --json",
        cost=2,
    ).json()
    assert got["name"] == "ctl-primary" and got["hostname"].startswith("ctl-primary-")
    assert got["tags"] == [{"key": "env", "value": "test"}, {"key": "owner", "value": "me"}]
    text = ctl("update --name ctl-primary --clear-tags", cost=3).out
    assert "Postgres service updated" in text and "Tags:" not in text
    assert ctl(f"get {fleet.main} --json", cost=1).json()["tags"] == []


def test_update_size_and_ha(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(f"update {fleet.main} --size r8gd.large --ha-type sync --json", cost=2).json()
    assert (got["size"], got["haType"]) == ("r8gd.large", "sync")
    assert wait(ctl, fleet.main, running)["storageSize"] > 59  # a large has more disk


def test_update_ip_rules(ctl: Ctl, fleet: Fleet) -> None:
    added = rules(
        ctl(f"update {fleet.main} --add-ip-allow 127.0.0.1/32:5432..6432=local --json", cost=3)
        .json()
    )  # fmt: skip
    local = ("127.0.0.1/32", "5432..6432")
    assert added[local]["description"] == "local"
    others = [f"--remove-ip-allow {r['id']}" for key, r in added.items() if key != local]
    assert others, "a service made without rules admits every address"
    left = rules(ctl(f"update {fleet.main} {' '.join(others)} --json", cost=3).json())
    assert list(left) == [local]
    with connect(fleet.port, fleet.password) as conn:  # 127.0.0.1 is still admitted
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- configuration, restart, password, certificates --


def test_config(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(f"config get {fleet.main} --json", cost=1).json()
    assert got["pgConfig"]["work_mem"] == "8MB"  # create's --pg-config-file
    assert got["pgBouncerConfig"]["default_pool_size"] == "25"
    text = ctl("config get --name ctl-primary", cost=2).out
    assert "pgConfig:" in text and "work_mem: 8MB" in text

    patch = "--set max_connections=120 --set statement_timeout=5s"
    patched = ctl(f"config patch {fleet.main} {patch} --json", cost=1).json()
    assert [patched["pgConfig"][k] for k in ("max_connections", "statement_timeout")] == [
        "120", "5s"]  # fmt: skip
    assert "max_connections" in patched["message"] and "restart" in patched["message"]
    text = ctl(f"config patch --name ctl-primary --file {fleet.file('patch')}", cost=2).out
    assert "Configuration patched" in text

    whole = ctl(f"config get {fleet.main} --json", cost=1).json()
    assert (whole["pgConfig"]["work_mem"], whole["pgBouncerConfig"]["default_pool_size"]) == (
        "16MB", "30")  # fmt: skip
    del whole["pgConfig"]["statement_timeout"]  # replace drops what the document leaves out
    (fleet.files / "whole.json").write_text(json.dumps(whole))
    replaced = ctl(f"config replace {fleet.main} --file {fleet.file('whole')} --json", cost=1)
    assert "statement_timeout" not in replaced.json()["pgConfig"]
    assert replaced.json()["pgConfig"]["max_connections"] == "120"
    text = ctl(f"config replace --name ctl-primary --file {fleet.file('whole')}", cost=2).out
    assert "Configuration replaced" in text


def test_restart(ctl: Ctl, fleet: Fleet) -> None:
    before = started(fleet)
    got = ctl(f"restart {fleet.main} --json", cost=1).json()
    assert got["id"] == fleet.main and got["state"] in ("restarting", "running")
    wait(ctl, fleet.main, running)
    after = started(fleet)
    assert after > before
    with connect(fleet.port, fleet.password) as conn:  # the patched value is live now
        assert conn.execute("SHOW max_connections").fetchone() == ("120",)
    assert "State change accepted" in ctl("restart --name ctl-primary", cost=2).out
    wait(ctl, fleet.main, running)
    assert started(fleet) > after


def test_reset_password(ctl: Ctl, fleet: Fleet) -> None:
    chosen = Secret("Ctl-lifecycle-2026")
    remember_secret(chosen)
    got = ctl(f"reset-password {fleet.main} --password {chosen} --json", cost=1).json()
    assert got == {"password": chosen}
    connect(fleet.port, chosen).close()
    text = ctl("reset-password --name ctl-primary --generate", cost=2).out
    found = re.search(r"Generated password[^\n]*\n\s+(\S+)", text)
    assert "Password reset successfully" in text and found
    fleet.password = Secret(found.group(1))
    remember_secret(fleet.password)
    connect(fleet.port, fleet.password).close()
    with pytest.raises(psycopg.OperationalError):
        connect(fleet.port, chosen).close()


def test_certs(ctl: Ctl, fleet: Fleet, tmp_path: Path) -> None:
    pem = ctl(f"certs get {fleet.main}", cost=1).out
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    wrapped = ctl("certs get --name ctl-primary --json", cost=2).json()
    assert wrapped["certificate"].strip() == pem.strip()
    out = tmp_path / "ca.pem"
    ctl(f"certs get {fleet.main} --output {out}", cost=1)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text().strip() == pem.strip()
    with connect(fleet.port, fleet.password, sslmode="verify-ca", sslrootcert=str(out)) as conn:
        assert conn.info.pgconn.ssl_in_use


# -- observability --


def test_metrics(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(f"metrics {fleet.main} {window()} --json", cost=1).json()
    metrics = {m["key"]: m for m in got["metrics"]}
    assert {"cpu_usage", "memory_usage"} <= set(metrics)
    points = [p for s in metrics["cpu_usage"]["series"] for p in s["dataPoints"]]
    assert points and all(isinstance(p["value"], float | int) for p in points)
    text = ctl(f"metrics --name ctl-primary {window()} --bucket-size-seconds 60", cost=2).out
    assert "key: cpu_usage" in text and "dataPoints:" in text


def test_prometheus(ctl: Ctl, fleet: Fleet) -> None:
    text = ctl(f"prometheus service {fleet.main}", cost=1).out
    assert f'postgres_service="{fleet.main}"' in text and "# TYPE PostgresServiceInfo gauge" in text
    assert fleet.plain not in text
    as_json = ctl("prometheus service --name ctl-primary --json", cost=2).json()
    assert isinstance(as_json, str) and 'postgres_service_name="ctl-primary"' in as_json
    org = ctl("prometheus org", cost=1).out
    assert f'postgres_service="{fleet.main}"' in org and f'postgres_service="{fleet.plain}"' in org
    assert "PostgresServiceInfo{" in ctl("prometheus org --json", cost=1).json()


def test_slow_queries(ctl: Ctl, fleet: Fleet) -> None:
    run_slowly(fleet.port, fleet.password, APP, "ctl_marker", "int")
    only = f"--db-name postgres --db-user postgres --db-operation SELECT --app {APP}"
    sort = "--sort-by total_duration --sort-order desc --limit 5 --offset 0"
    pattern = pattern_of(ctl, fleet.main, "ctl_marker", f"{only} {sort}")
    assert (pattern["callCount"], pattern["app"], pattern["dbUser"]) == (3, APP, "postgres")
    assert 150_000 <= pattern["p50DurationUs"] <= pattern["maxDurationUs"]
    assert 150_000 <= pattern["avgDurationUs"] <= pattern["maxDurationUs"]
    assert pattern["queryId"] in ctl(f"slow-queries list {fleet.main} {window()}", cost=1).out

    query = f"slow-queries get {fleet.main} {pattern['queryId']} {only}"
    detail = ctl(f"{query} --json", cost=1).json()
    assert detail["aggregate"]["queryId"] == pattern["queryId"]
    runs = detail["recentExecutions"]
    assert len(runs) == 3 and all(r["durationUs"] >= 150_000 for r in runs), runs
    assert {(r["app"], r["queryId"], r["serverRole"]) for r in runs} == {
        (APP, pattern["queryId"], "primary")}  # fmt: skip
    one = ctl(f"{query} --timestamp {runs[0]['timestamp']} --json", cost=1).json()
    assert [r["timestamp"] for r in one["recentExecutions"]] == [runs[0]["timestamp"]]


def test_logs(ctl: Ctl, fleet: Fleet) -> None:
    got = ctl(f"logs {fleet.main} {window()} --limit 5 --json", cost=1).json()
    assert 0 < len(got) <= 5 and all(set(e) >= {"timestamp", "severity", "body"} for e in got)
    stamps = [e["timestamp"] for e in got]
    assert stamps == sorted(stamps, reverse=True)  # newest first unless asked otherwise
    text = ctl(
        f"logs --name ctl-primary {window()} --severity LOG --sort-order asc --limit 3"
        " --offset 0 --body-contains 'ready to accept'", cost=2,
    ).out  # fmt: skip
    lines = [line for line in text.splitlines() if "| LOG " in line]
    assert lines and all("ready to accept connections" in line for line in lines)


def test_backup_list(ctl: Ctl, fleet: Fleet) -> None:
    """Newest first, in pages an opaque cursor links; read just after a backup, before the next."""
    deadline = time.monotonic() + 180
    while True:  # a backup a minute: wait for two, and for a fresh one
        every = ctl(f"backup list {fleet.main} --json", cost=1).json()
        backups = every["result"]
        if len(backups) >= 2 and age(backups[0]["lastModified"]) < 30:
            break
        assert time.monotonic() < deadline, every
        time.sleep(3)
    assert every["totalCount"] == len(backups) and every["limit"] == 100  # the default
    assert all(b["key"] and b["status"] == "done" for b in backups)
    modified = [b["lastModified"] for b in backups]
    assert modified == sorted(modified, reverse=True)
    first = ctl(f"backup list {fleet.main} --limit 1 --json", cost=1).json()
    assert first["result"] == backups[:1] and first["limit"] == 1
    rest = ctl(f"backup list {fleet.main} --limit 1 --cursor {first['nextCursor']} --json", cost=1)
    assert rest.json()["result"] == backups[1:2]
    table = ctl(f"backup list {fleet.main}", cost=1).out
    assert "Last modified" in table and backups[0]["key"] in table


# -- restores --


def test_restore_point(ctl: Ctl, fleet: Fleet) -> None:
    """A row written before the restore target and one after: a restore keeps the first only."""
    with connect(fleet.port, fleet.password) as conn:
        conn.execute("CREATE TABLE ctl_marks (mark text)")
        conn.execute("INSERT INTO ctl_marks VALUES ('before')")
        conn.commit()
        time.sleep(1.5)
        fleet.target = stamp(datetime.now(UTC))
        time.sleep(1.5)
        conn.execute("INSERT INTO ctl_marks VALUES ('after')")
    assert ctl(f"get {fleet.main} --json", cost=1).json()["earliestRestoreTime"] < fleet.target


def test_restore_copying_rules(ctl: Ctl, fleet: Fleet) -> None:
    source = rules(ctl(f"get {fleet.main} --json", cost=1).json())
    made = ctl(
        f"restore {fleet.main} --name ctl-restored --restore-target {fleet.target}"
        f" --tag origin=restore --pg-config-file {fleet.file('pg')}"
        f" --pg-bouncer-config-file {fleet.file('bouncer')} --json", cost=4,
    ).json()  # fmt: skip
    assert (made["name"], made["isPrimary"]) == ("ctl-restored", True)
    assert made["tags"] == [{"key": "origin", "value": "restore"}]
    copied = rules(wait(ctl, made["id"], running))
    assert set(copied) == set(source)
    assert marks(ctl.service(made["id"])["port"], fleet.password) == ["before"]
    ctl(f"delete {made['id']}", cost=2)


def test_restore_by_source_name_with_ip_allow(ctl: Ctl, fleet: Fleet) -> None:
    text = ctl(
        f"restore --source-name ctl-primary --name ctl-restored-ip --restore-target"
        f" {fleet.target} --ip-allow 127.0.0.1/32:5432..6432=local", cost=5,
    ).out  # fmt: skip
    found = ID.search(text)
    assert found, text
    got = wait(ctl, found.group(1), running)
    assert [(r["source"], r["portRange"]) for r in got["ipAccessList"]] == [
        ("127.0.0.1/32", "5432..6432")]  # fmt: skip
    assert marks(ctl.service(found.group(1))["port"], fleet.password) == ["before"]
    ctl(f"delete {found.group(1)}", cost=2)


def test_restore_blocking_public_access(ctl: Ctl, fleet: Fleet) -> None:
    made = ctl(
        f"restore {fleet.main} --name ctl-restored-closed --restore-target {fleet.target}"
        " --block-public-access --json", cost=4,
    ).json()  # fmt: skip
    assert ctl(f"get {made['id']} --json", cost=1).json()["ipAccessList"] == []
    ctl(f"delete {made['id']}", cost=2)


# -- read replicas, promote, switchover --


def test_read_replica_by_id_then_promote(ctl: Ctl, fleet: Fleet) -> None:
    made = ctl(
        f"read-replica create {fleet.main} --name ctl-replica --tag role=replica"
        f" --pg-config-file {fleet.file('pg')} --pg-bouncer-config-file {fleet.file('bouncer')}"
        " --json", cost=1,
    ).json()  # fmt: skip
    assert (made["name"], made["isPrimary"], made["size"]) == ("ctl-replica", False, "r8gd.large")
    assert made["tags"] == [{"key": "role", "value": "replica"}]
    fleet.replicas.append(made["id"])
    wait(ctl, made["id"], running)
    port = ctl.service(made["id"])["port"]
    with connect(port, fleet.password) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    assert ctl(f"promote {made['id']} --json", cost=1).json()["id"] == made["id"]
    wait(ctl, made["id"], lambda s: s["isPrimary"] and running(s))
    assert marks(port, fleet.password) == ["after", "before"]  # and it now takes writes:
    with connect(port, fleet.password) as conn:
        conn.execute("INSERT INTO ctl_marks VALUES ('promoted')")


def test_read_replica_by_source_name_then_promote(ctl: Ctl, fleet: Fleet) -> None:
    text = ctl("read-replica create --source-name ctl-primary --name ctl-replica-2", cost=2).out
    found = ID.search(text)
    assert "Read replica created" in text and found, text
    fleet.replicas.append(found.group(1))
    wait(ctl, found.group(1), running)
    promoted = ctl("promote --name ctl-replica-2", cost=2)
    assert "promote accepted" in promoted.out and "asynchronous" in promoted.err
    got = wait(ctl, found.group(1), lambda s: s["isPrimary"] and running(s))
    assert got["name"] == "ctl-replica-2"


def test_switchover(ctl: Ctl, fleet: Fleet) -> None:
    before = started(fleet)
    got = ctl(f"switchover {fleet.main} --json", cost=1).json()
    assert got["id"] == fleet.main and got["haType"] == "sync"
    wait(ctl, fleet.main, running)
    # Another server (a primary) at the same address, with the same data.
    new_primary_serves(fleet.port, fleet.password, before)
    assert marks(fleet.port, fleet.password) == ["after", "before"]
    # What runs there now is what the service's log and slow queries show.
    run_slowly(fleet.port, fleet.password, "ctl-switched", "ctl_switched", "text")
    pattern = pattern_of(ctl, fleet.main, "ctl_switched", "--app ctl-switched")
    assert (pattern["callCount"], pattern["app"]) == (3, "ctl-switched")
    switched = ctl("switchover --name ctl-primary", cost=2)
    assert "switchover accepted" in switched.out and "asynchronous" in switched.err
    wait(ctl, fleet.main, running)


# -- delete --


def test_delete(ctl: Ctl, fleet: Fleet) -> None:
    first, second = fleet.replicas
    assert ctl(f"delete {first} --json", cost=2).json()["id"] == first
    text = ctl("delete --name ctl-replica-2", cost=3).out
    assert f"Postgres service {second} deletion initiated" in text
    for sid in (fleet.plain, fleet.main):
        assert "deletion initiated" in ctl(f"delete {sid}", cost=2).out
    deadline = time.monotonic() + 120
    while left := ctl("list --json", cost=1).json():
        assert all(s["state"] == "deleting" for s in left) and time.monotonic() < deadline, left
        time.sleep(1)


# -- the count --


def test_every_form_is_exercised(ctl: Ctl, figures: dict[str, str]) -> None:
    """Every subcommand and flag found ran, but query; the figure counts those that passed."""
    wanted = {f for f in ctl.known if f.split()[0] != "query"}
    passing = ctl.passed & wanted
    figures["clickhousectl command forms passing"] = (
        f"{len(passing)} of {len(wanted)} (all but query)"
    )
    requests = sum(len(r.requests) for r in ctl.runs)
    figures["clickhousectl requests"] = f"{requests} in {len(ctl.runs)} commands, none refused"
    assert not wanted - ctl.attempted, f"never run: {sorted(wanted - ctl.attempted)}"
