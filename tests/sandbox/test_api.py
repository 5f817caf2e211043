"""The sandbox's HTTP API over real HTTP, with bare httpx: the seed walkthrough,
validation, auth and the credential rules. The client has its own tests."""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pgcloud_nb.sandbox import SandboxInfo

CREATE = {
    "name": "seed walkthrough",
    "provider": "aws",
    "region": "us-west-2",
    "size": "r8gd.large",
}


def org_client(info: SandboxInfo) -> httpx.Client:
    return httpx.Client(
        base_url=f"{info.url}/v1/organizations/{info.org_id}",
        auth=(info.key_id, info.key_secret),
        timeout=60,
    )


def result(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == 200
    uuid.UUID(body["requestId"])
    return body.get("result")


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"status", "error", "requestId"}
    assert body["status"] == status
    return str(body["error"])


@contextmanager
def running_service(info: SandboxInfo, prefix: str) -> Iterator[dict[str, Any]]:
    """A new running service (the create answer) for a module's tests, deleted after them."""
    with org_client(info) as api:
        created = result(
            api.post("/postgres", json={**CREATE, "name": f"{prefix}-{uuid.uuid4().hex[:6]}"})
        )
        wait_state(api, created["id"], "running")
        yield created
        api.delete(f"/postgres/{created['id']}")


def wait_state(api: httpx.Client, sid: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = result(api.get(f"/postgres/{sid}"))
        if svc["state"] == state:
            return dict(svc)
        time.sleep(0.1)
    raise AssertionError(f"{sid} never reached {state}; last {svc['state']}")


def wait_gone(api: httpx.Client, sid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/postgres/{sid}").status_code == 404:
            return
        time.sleep(0.1)
    raise AssertionError(f"{sid} was never removed")


@pytest.fixture
def service(api: httpx.Client) -> Iterator[dict[str, Any]]:
    created = result(api.post("/postgres", json={**CREATE, "name": f"t-{uuid.uuid4().hex[:6]}"}))
    wait_state(api, created["id"], "running")
    yield created
    api.delete(f"/postgres/{created['id']}")


def test_seed_walkthrough(api: httpx.Client, sandbox: SandboxInfo, tmp_path: Path) -> None:
    before = result(api.get("/postgres"))
    created = result(api.post("/postgres", json={**CREATE, "postgresVersion": "18"}))
    sid = created["id"]
    assert created["state"] == "creating"
    assert created["postgresVersion"] == "18"
    assert created["username"] == "postgres" and created["isPrimary"] is True
    password, dsn = created["password"], created["connectionString"]
    assert password in dsn and created["hostname"] in dsn
    assert sid in {s["id"] for s in result(api.get("/postgres"))}
    assert len(result(api.get("/postgres"))) == len(before) + 1

    svc = wait_state(api, sid, "running")
    assert "password" not in svc and "connectionString" not in svc  # docs/api-behaviour.md §3.1
    assert all("password" not in s for s in result(api.get("/postgres")))

    # psql and psycopg take the connection string as it is.
    out = subprocess.run(
        ["psql", dsn, "-Atc", "select 40 + 2"], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "42", out.stderr
    with psycopg.connect(dsn) as conn:
        conn.execute("create table seed (id int primary key, note text)")
        conn.execute("insert into seed values (1, 'hello')")
        assert conn.execute("select note from seed").fetchone() == ("hello",)
        assert conn.info.pgconn.ssl_in_use

    # TLS with the service's own CA.
    ca = api.get(f"/postgres/{sid}/caCertificates")
    assert ca.status_code == 200
    assert ca.headers["content-type"].startswith("application/x-pem-file")
    assert ca.headers["content-disposition"] == 'attachment; filename="postgres-ca-certificate.pem"'
    assert "BEGIN CERTIFICATE" in ca.text
    (tmp_path / "ca.pem").write_text(ca.text)
    with psycopg.connect(dsn, sslmode="verify-ca", sslrootcert=str(tmp_path / "ca.pem")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    # PATCH tags: a merge patch; tags replaced wholesale, other fields kept.
    tags = [{"key": "Environment", "value": "production"}]
    patched = result(api.patch(f"/postgres/{sid}", json={"tags": tags}))
    assert patched["tags"] == tags and patched["name"] == CREATE["name"]
    assert result(api.patch(f"/postgres/{sid}", json={"size": "r8gd.xlarge"}))["tags"] == tags

    # Config: max_connections needs a restart, which really happens.
    cfg = result(
        api.post(
            f"/postgres/{sid}/config",
            json={"pgConfig": {"max_connections": "42"}, "pgBouncerConfig": {}},
        )
    )
    assert cfg["pgConfig"] == {"max_connections": "42"}
    assert cfg["message"] == (
        "The changes in the following parameters require a database restart to take effect: "
        "max_connections. You can restart the database by using the restart endpoint."
    )
    with psycopg.connect(dsn) as conn:
        started = conn.execute("select pg_postmaster_start_time()").fetchone()
    restarting = result(api.patch(f"/postgres/{sid}/state", json={"command": "restart"}))
    assert restarting["state"] == "restarting"
    wait_state(api, sid, "running")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("show max_connections").fetchone() == ("42",)
        assert conn.execute("select pg_postmaster_start_time()").fetchone() != started
        assert conn.execute("select note from seed").fetchone() == ("hello",)

    # Both Prometheus endpoints, with the documented content type.
    for path in (f"/postgres/{sid}/prometheus", "/postgres/prometheus"):
        prom = api.get(path)
        assert prom.status_code == 200
        assert prom.headers["content-type"] == "text/plain; charset=UTF-8"
        assert f'postgres_service="{sid}"' in prom.text
        assert "PostgresServer_TransactionsCommitted_Total" in prom.text

    # Delete: deleting, then 404, and the files are gone.
    assert result(api.delete(f"/postgres/{sid}")) is None
    wait_gone(api, sid)
    error(api.get(f"/postgres/{sid}"), 404)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)
    assert not (sandbox.home / "clusters" / sid).exists()


def test_config_patch_merges_and_bad_values_change_nothing(
    api: httpx.Client, service: dict[str, Any]
) -> None:
    sid = service["id"]
    result(
        api.patch(
            f"/postgres/{sid}/config",
            json={"pgConfig": {"work_mem": "8MB"}, "pgBouncerConfig": {"pool_mode": "transaction"}},
        )
    )
    merged = result(
        api.patch(
            f"/postgres/{sid}/config",
            json={"pgConfig": {"statement_timeout": 60000}, "pgBouncerConfig": {}},
        )
    )
    assert merged["pgConfig"] == {"work_mem": "8MB", "statement_timeout": "60000"}
    assert merged["pgBouncerConfig"] == {"pool_mode": "transaction"}
    assert "message" not in merged  # reloadable settings need no restart
    # A value PostgreSQL refuses: 400 naming it, and the old config stands.
    msg = error(
        api.patch(
            f"/postgres/{sid}/config",
            json={"pgConfig": {"work_mem": "lots"}, "pgBouncerConfig": {}},
        ),
        400,
    )
    assert "work_mem" in msg
    assert result(api.get(f"/postgres/{sid}/config"))["pgConfig"]["work_mem"] == "8MB"
    # POST replaces both sections.
    replaced = result(
        api.post(
            f"/postgres/{sid}/config",
            json={
                "pgConfig": {"lock_timeout": "10s"},
                "pgBouncerConfig": {"default_pool_size": "16"},
            },
        )
    )
    assert replaced["pgConfig"] == {"lock_timeout": "10s"}
    assert replaced["pgBouncerConfig"] == {"default_pool_size": "16"}


def test_password_reset_changes_the_real_password(
    api: httpx.Client, service: dict[str, Any]
) -> None:
    sid, dsn = service["id"], service["connectionString"]
    generated = result(api.patch(f"/postgres/{sid}/password", json={}))["password"]
    assert len(generated) >= 12
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)
    with psycopg.connect(dsn.replace(service["password"], generated)) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    chosen = "Chosen-Passw0rd-xyz"
    assert result(api.patch(f"/postgres/{sid}/password", json={"password": chosen})) == {}
    with psycopg.connect(dsn.replace(service["password"], chosen)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert "password" in error(
        api.patch(f"/postgres/{sid}/password", json={"password": "short"}), 400
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CREATE, "name": ""}, "name"),
        ({**CREATE, "name": "x" * 51}, "name"),
        ({**CREATE, "provider": "azure"}, "provider"),
        ({**CREATE, "size": "m7i.2xlarge"}, "size"),
        ({**CREATE, "postgresVersion": "16"}, "postgresVersion"),
        ({**CREATE, "haType": "multi"}, "haType"),
        ({**CREATE, "tags": [{"key": "bad key", "value": "v"}]}, "tags[0].key"),
        ({**CREATE, "tags": [{"key": "k", "value": "bad value!"}]}, "tags[0].value"),
        ({**CREATE, "tags": [{"key": "k"}]}, "tags[0].value"),  # a value is required live
        ({**CREATE, "tags": [{"key": f"k{i}", "value": "v"} for i in range(51)]}, "tags"),
        ({**CREATE, "pgConfig": {"no_such_setting": "1"}}, "pgConfig.no_such_setting"),
        ({**CREATE, "pgConfig": {"max_connections": 0}}, "pgConfig.max_connections"),
        ({**CREATE, "pgConfig": {"wal_compression": "gzip"}}, "pgConfig.wal_compression"),
        ({**CREATE, "pgConfig": {}}, "pgConfig"),
        (
            {**CREATE, "pgBouncerConfig": {"default_pool_size": 16}},
            "pgBouncerConfig.default_pool_size",
        ),
        ({k: v for k, v in CREATE.items() if k != "region"}, "region"),
        ({**CREATE, "storageSize": 100}, "storageSize"),
    ],
)
def test_create_validation_names_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    name = f"invalid-{uuid.uuid4().hex[:8]}"
    if isinstance(body.get("name"), str) and 0 < len(body["name"]) <= 50:
        body = {**body, "name": name}
    msg = error(api.post("/postgres", json=body), 400)
    # An unknown property gets the live API's own wording, the rest name the field alike.
    assert (
        f"request body.{field}:" in msg
        or msg == f"request body property can't be validated: {field}"
    )
    # Nothing half-made: no service by that name appeared.
    assert all(s["name"] != name for s in result(api.get("/postgres")))


def test_bad_bodies_and_ids(api: httpx.Client, service: dict[str, Any]) -> None:
    sid = service["id"]
    assert "JSON" in error(
        api.post("/postgres", content=b"{nope", headers={"content-type": "application/json"}), 400
    )
    assert "object" in error(api.post("/postgres", json=[1, 2]), 400)
    assert "tags" in error(api.patch(f"/postgres/{sid}", json={"tags": "prod"}), 400)
    assert "command" in error(api.patch(f"/postgres/{sid}/state", json={"command": "reboot"}), 400)
    assert "command" in error(api.patch(f"/postgres/{sid}/state", json={}), 400)
    assert "read replica" in error(
        api.patch(f"/postgres/{sid}/state", json={"command": "promote"}), 400
    )
    assert "pgBouncerConfig" in error(
        api.post(f"/postgres/{sid}/config", json={"pgConfig": {"work_mem": "4MB"}}), 400
    )
    error(api.get(f"/postgres/{uuid.uuid4()}"), 404)
    error(api.delete(f"/postgres/{uuid.uuid4()}"), 404)
    assert "postgresId" in error(api.get("/postgres/not-a-uuid"), 400)
    now = "2026-01-01T00:00:00Z"
    assert "from_date" in error(api.get(f"/postgres/{sid}/metrics", params={"to_date": now}), 400)
    assert "bucket_size_seconds" in error(
        api.get(
            f"/postgres/{sid}/metrics",
            params={
                "from_date": "2026-01-01T00:00:00Z",
                "to_date": "2026-01-02T00:00:00Z",
                "bucket_size_seconds": "1",
            },
        ),
        400,
    )
    assert "name" in error(api.post(f"/postgres/{sid}/readReplica", json={}), 400)


def test_auth_is_required_everywhere(sandbox: SandboxInfo, service: dict[str, Any]) -> None:
    org = f"{sandbox.url}/v1/organizations/{sandbox.org_id}"
    paths = [
        "/v1/organizations",
        f"/v1/organizations/{sandbox.org_id}/postgres",
        f"/v1/organizations/{sandbox.org_id}/postgres/{service['id']}",
        f"/v1/organizations/{sandbox.org_id}/postgres/prometheus",
        "/no/such/path",
    ]
    for auth in (None, (sandbox.key_id, "wrong-secret"), ("WRONGKEY", sandbox.key_secret)):
        for path in paths:
            resp = httpx.get(sandbox.url + path, auth=auth)
            assert "Unauthorized" in error(resp, 401)
    with httpx.Client(auth=(sandbox.key_id, sandbox.key_secret)) as good:
        error(good.get(f"{sandbox.url}/v1/organizations/{uuid.uuid4()}/postgres"), 404)
        error(good.get(sandbox.url + "/no/such/path"), 404)
        orgs = result(good.get(sandbox.url + "/v1/organizations"))
        assert [o["id"] for o in orgs] == [sandbox.org_id]
        assert result(good.get(org + "/postgres")) is not None


def test_credentials_file_is_private(sandbox: SandboxInfo) -> None:
    assert (sandbox.home / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_metrics_history(api: httpx.Client, service: dict[str, Any]) -> None:
    sid = service["id"]
    # The sandbox samples every 2 s in tests: ask until a sample is there (a fixed 5 s
    # wait took 5 s every run), for at most a minute.
    deadline = time.monotonic() + 60
    while True:
        now = time.time()
        params = {
            "from_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120)),
            "to_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60)),
            "bucket_size_seconds": "5",
        }
        metrics = result(api.get(f"/postgres/{sid}/metrics", params=params))["metrics"]
        if any(s["dataPoints"] for m in metrics for s in m["series"]):
            break
        assert time.monotonic() < deadline, "no sample within a minute"
        time.sleep(0.2)
    keys = {m["key"] for m in metrics}
    assert {"cpu_usage", "connection_count", "cache_hit_ratio"} <= keys


def test_nothing_lost_across_kill_9(tmp_path: Path) -> None:
    """kill -9 the API server; on start every service is back with its settings and data."""
    import os
    import signal

    from pgcloud_nb.sandbox import Sandbox, Settings

    home = Path(tempfile.mkdtemp(prefix="pgcloud-nb-kill9-"))
    sb = Sandbox(home, Settings(home=home, rate_limit=0))
    info = sb.start()
    try:
        with org_client(info) as api:
            created = result(api.post("/postgres", json=CREATE))
            sid, dsn = created["id"], created["connectionString"]
            wait_state(api, sid, "running")
            result(api.patch(f"/postgres/{sid}", json={"tags": [{"key": "k", "value": "v"}]}))
            result(
                api.patch(
                    f"/postgres/{sid}/config",
                    json={"pgConfig": {"work_mem": "12MB"}, "pgBouncerConfig": {}},
                )
            )
            with psycopg.connect(dsn) as conn:
                conn.execute("create table keep (v int)")
                conn.execute("insert into keep values (7)")
        os.kill(info.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while sb.status() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        info2 = sb.start()
        assert info2.pid != info.pid and info2.org_id == info.org_id
        with org_client(info2) as api:
            svc = wait_state(api, sid, "running")
            assert svc["tags"] == [{"key": "k", "value": "v"}]
            assert result(api.get(f"/postgres/{sid}/config"))["pgConfig"] == {"work_mem": "12MB"}
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select v from keep").fetchone() == (7,)
            assert conn.execute("show work_mem").fetchone() == ("12MB",)
    finally:
        sb.stop()
    # stop stops every PostgreSQL server the sandbox ran.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)


def test_rename_changes_hostname_and_certificate(
    api: httpx.Client, service: dict[str, Any], tmp_path: Path
) -> None:
    sid = service["id"]
    old_ca = api.get(f"/postgres/{sid}/caCertificates").text
    renamed = result(api.patch(f"/postgres/{sid}", json={"name": "Renamed Service"}))
    assert renamed["name"] == "Renamed Service"
    assert renamed["hostname"].startswith(f"renamed-service-{sid[:8]}.")
    assert renamed["hostname"] != service["hostname"]
    new_ca = api.get(f"/postgres/{sid}/caCertificates").text
    assert new_ca != old_ca
    (tmp_path / "ca.pem").write_text(new_ca)
    # verify-full checks the new name against the reissued certificate.
    dsn = service["connectionString"].replace(service["hostname"], renamed["hostname"])
    with psycopg.connect(dsn, sslmode="verify-full", sslrootcert=str(tmp_path / "ca.pem")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_service_quota(sandbox_root: Path) -> None:
    from pgcloud_nb.sandbox import Sandbox, Settings

    home = sandbox_root / "quota"
    sb = Sandbox(home, Settings(home=home, rate_limit=0, max_services=1))
    info = sb.start()
    try:
        with org_client(info) as api:
            result(api.post("/postgres", json=CREATE))
            assert "limit of 1" in error(api.post("/postgres", json=CREATE), 400)
            assert len(result(api.get("/postgres"))) == 1
    finally:
        sb.stop()


def test_create_cut_short_by_kill_9_is_finished(sandbox_root: Path) -> None:
    """kill -9 right after a create answered: on start the service still comes up,
    with the password its create response promised."""
    import os
    import signal

    from pgcloud_nb.sandbox import Sandbox, Settings

    home = sandbox_root / "cut-short"
    # The delay keeps the service in `creating` while the server is killed.
    sb = Sandbox(home, Settings(home=home, rate_limit=0, provisioning_delay=5))
    info = sb.start()
    try:
        with org_client(info) as api:
            created = result(api.post("/postgres", json=CREATE))
        os.kill(info.pid, signal.SIGKILL)
        info2 = sb.start()
        with org_client(info2) as api:
            services = result(api.get("/postgres"))
            assert [s["id"] for s in services] == [created["id"]]  # no half-made twin
            wait_state(api, created["id"], "running")
        with psycopg.connect(created["connectionString"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        sb.stop()


@pytest.mark.parametrize(
    ("pg_config", "param"),
    [
        ({"idle_session_timeout": "2m"}, "idle_session_timeout"),  # PostgreSQL's unit is "min"
        ({"work_mem": "lots"}, "work_mem"),
        ({"max_connections": 1}, "max_connections"),  # below superuser_reserved_connections
    ],
)
def test_values_postgresql_refuses_are_a_400_at_create(
    api: httpx.Client, pg_config: dict[str, Any], param: str
) -> None:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    msg = error(api.post("/postgres", json={**CREATE, "name": name, "pgConfig": pg_config}), 400)
    assert f"request body.pgConfig.{param}:" in msg
    assert all(s["name"] != name for s in result(api.get("/postgres")))


def test_max_connections_below_reserved_is_refused_on_write(
    api: httpx.Client, service: dict[str, Any]
) -> None:
    sid = service["id"]
    body = {"pgConfig": {"max_connections": "2"}, "pgBouncerConfig": {}}
    assert "superuser_reserved_connections" in error(
        api.patch(f"/postgres/{sid}/config", json=body), 400
    )


def test_a_newer_major_parameter_is_stored_not_applied(
    api: httpx.Client, service: dict[str, Any]
) -> None:
    """transaction_timeout is PostgreSQL 17's; the sandbox may run an older server."""
    sid = service["id"]
    body = {"pgConfig": {"transaction_timeout": "120s"}, "pgBouncerConfig": {}}
    cfg = result(api.patch(f"/postgres/{sid}/config", json=body))
    assert cfg["pgConfig"]["transaction_timeout"] == "120s"
    with psycopg.connect(service["connectionString"]) as conn:
        major = conn.info.server_version // 10000
        known = conn.execute(
            "select count(*) from pg_settings where name = 'transaction_timeout'"
        ).fetchone()
    assert known == ((1,) if major >= 17 else (0,))
