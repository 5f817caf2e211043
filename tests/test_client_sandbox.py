"""The client over real HTTP against the sandbox (real PostgreSQL behind every service).

Uses the session fixtures of tests/conftest.py: ``sandbox`` (rate limit off),
``limited_sandbox`` (the real 10 requests / 10 s) and ``faulty_sandbox`` (20% of
answers fail: 500/503/429/dropped connections).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PgCloudError,
    RateLimitError,
)
from pgcloud_nb.ratelimit import Budget, RetryPolicy

REGION, SIZE = "us-east-1", "r8gd.large"


def _connect(info: Any, budget: Budget | None = None) -> Client:
    # No org_id: the org comes from GET /v1/organizations, as with a real single-org key.
    return pgcloud_nb.connect(
        info.key_id, info.key_secret, base_url=info.url, env_file=None, sandbox=False, budget=budget
    )


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pg(sandbox: Any) -> Iterator[Client]:
    with _connect(sandbox, Budget.unlimited()) as client:
        yield client


@pytest.fixture(scope="module")
def running(pg: Client) -> Iterator[str]:
    """One running service for the module's tests, deleted afterwards.

    Shared, not one per test: each create waits for a real cluster. The tests
    that use it only rename it, resize it, reset its password and read it, and
    each checks what it set itself, so their order does not matter.
    """
    svc = pg.create_service(name=_name("fixture"), region=REGION, size=SIZE)
    pg.wait(svc.id, progress=False, timeout=120)
    yield svc.id
    with contextlib.suppress(NotFoundError):
        pg.delete_service(svc.id)


def test_connect_finds_org_and_says_where_the_key_came_from(pg: Client, sandbox: Any) -> None:
    assert pg.org_id == sandbox.org_id
    assert "arguments" in repr(pg) and sandbox.key_secret not in repr(pg)
    assert [o["id"] for o in pg.list_organizations()] == [sandbox.org_id]


def test_seed_lifecycle(pg: Client) -> None:
    name = _name("seed")
    created = pg.create_service(
        name=name, region=REGION, size=SIZE, postgres_version="17", tags={"team": "data"}
    )
    assert created.state == "creating" and created.password is not None
    assert created.reveal_password() not in repr(created)
    assert created.id in {s.id for s in pg.list_services()}

    svc = pg.wait(created.id, progress=False, timeout=120)
    assert svc.state == "running" and svc.password is None  # only the create answer has it (§3.1)
    with pg.connect_service(svc, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    tagged = pg.update_service(svc.id, tags={"Environment": "production"})
    assert tagged.tags_dict == {"Environment": "production"}  # replaced wholesale
    assert pg.get_service(svc.id).tags_dict == {"Environment": "production"}

    answer = pg.replace_config(
        svc.id, pg_config={"max_connections": "42"}, pg_bouncer_config={}, allow_empty=True
    )
    assert answer.pg_config["max_connections"] == "42" and answer.restart_required
    assert pg.get_config(svc.id).pg_config["max_connections"] == "42"
    patched = pg.patch_config(svc.id, pg_config={"work_mem": "8MB"})
    assert patched.pg_config["max_connections"] == "42" and patched.pg_config["work_mem"] == "8MB"

    pg.restart(svc.id)
    pg.wait(svc.id, progress=False, timeout=120)
    with pg.connect_service(svc.id) as conn:
        assert conn.execute("show max_connections").fetchone() == ("42",)

    assert "BEGIN CERTIFICATE" in pg.ca_certificate(svc.id)
    assert "PostgresServiceInfo" in pg.prometheus(svc.id)
    assert svc.id in pg.prometheus()

    pg.delete_service(svc.id)
    pg.wait_gone(svc.id, progress=False, timeout=120)
    with pytest.raises(NotFoundError):
        pg.get_service(svc.id)


def test_reset_password_then_connect(pg: Client, running: str) -> None:
    generated = pg.reset_password(running)
    assert generated.password is not None and "**" in repr(generated)
    with pg.connect_service(running) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    pg.reset_password(running, "Chosen-Passw0rd-xyz")
    with pg.connect_service(running) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


def test_rename(pg: Client, running: str) -> None:
    new_name = _name("renamed")
    assert pg.update_service(running, name=new_name).name == new_name
    assert pg.get_service(running).name == new_name


def test_size_change_settles(pg: Client, running: str) -> None:
    pg.update_service(running, size="r8gd.xlarge", ha_type="async")
    svc = pg.wait(
        running, settle={"size": "r8gd.xlarge", "haType": "async"}, progress=False, timeout=120
    )
    assert (svc.size, svc.ha_type) == ("r8gd.xlarge", "async")


def test_metrics_json(pg: Client, running: str) -> None:
    now = datetime.now(UTC)
    metrics = pg.metrics(running, from_date=now - timedelta(minutes=10), to_date=now)
    assert metrics.metrics and all(m.key and m.unit is not None for m in metrics.metrics)


def test_api_errors_are_typed(pg: Client, sandbox: Any) -> None:
    with pytest.raises(BadRequestError) as info:
        pg.create_service(name="x" * 51, region=REGION, size=SIZE)
    assert info.value.status == 400 and "name" in info.value.message and info.value.request_id
    with pytest.raises(BadRequestError):
        pg.create_service(name=_name("bad"), region=REGION, size="m7i.2xlarge")
    with pytest.raises(NotFoundError):
        pg.get_service(str(uuid.uuid4()))
    with pytest.raises(AuthenticationError):
        pgcloud_nb.connect(
            sandbox.key_id,
            "wrong-secret",
            org_id=sandbox.org_id,
            base_url=sandbox.url,
            budget=Budget.unlimited(),
        ).list_services()


def test_connect_service_requires_known_credentials(pg: Client, running: str, sandbox: Any) -> None:
    other = _connect(sandbox, Budget.unlimited())  # a client that never saw the password
    with pytest.raises(pgcloud_nb.CredentialsUnknownError):
        other.connect_service(running)


@pytest.mark.slow
def test_real_rate_limit_with_a_waiter_and_three_callers(limited_sandbox: Any) -> None:
    """One shared budget keeps a waiter and three busy callers free of surfaced 429s."""
    clients = [_connect(limited_sandbox) for _ in range(4)]
    assert len({id(c.budget) for c in clients}) == 1  # one budget per key in the process
    svc = clients[0].create_service(name=_name("limited"), region=REGION, size=SIZE)
    surfaced: list[Exception] = []
    stop = time.monotonic() + 20

    def caller(client: Client) -> None:
        while time.monotonic() < stop:
            try:
                client.list_services()
            except RateLimitError as exc:
                surfaced.append(exc)

    threads = [threading.Thread(target=caller, args=(c,)) for c in clients[1:]]
    for t in threads:
        t.start()
    clients[0].wait(svc.id, progress=False, timeout=120)
    for t in threads:
        t.join()
    assert surfaced == []
    clients[0].delete_service(svc.id)


@pytest.mark.slow
def test_lifecycles_survive_injected_faults(faulty_sandbox: Any) -> None:
    """20% failing answers: every lifecycle completes and no service is created twice."""
    policy = RetryPolicy(deadline=180, max_attempts=30)
    pg = _connect_with_retries(faulty_sandbox, policy)
    names = [_name("faulty") for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "answer lost, found it by name" is expected here
        for name in names:
            svc = pg.create_service(name=name, region=REGION, size=SIZE)
            pg.wait(svc.id, progress=False, timeout=180)
            pg.update_service(svc.id, tags={"run": "faulty"})
            pg.patch_config(svc.id, pg_config={"max_connections": "50"})
            pg.restart(svc.id)
            pg.wait(svc.id, progress=False, timeout=180)
            pg.delete_service(svc.id)
            pg.wait_gone(svc.id, progress=False, timeout=180)
    listed = [s.name for s in pg.list_services()]
    assert all(name not in listed for name in names)  # the deleted ones, and no duplicates left
    assert pg.requester.retries > 0  # faults really happened


def _connect_with_retries(info: Any, policy: RetryPolicy) -> Client:
    for _ in range(10):  # connect() itself may meet an injected fault
        try:
            client = _connect(info, Budget.unlimited())
        except PgCloudError:
            continue
        client.requester.policy = policy
        return client
    raise AssertionError("could not connect to the faulty sandbox")


def test_a_fresh_client_connects_after_a_reset(running: str, sandbox: Any) -> None:
    """A client that never saw the create: the reset's password, the service's
    hostname (``*.localhost``) and port are enough to connect."""
    with _connect(sandbox, Budget.unlimited()) as other:
        assert not other.knows_password(running)
        other.reset_password(running)
        with other.connect_service(running) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
