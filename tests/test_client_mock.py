"""Client behaviour the sandbox cannot produce, over httpx.MockTransport.

Odd statuses and bodies, rate-limit headers, dropped connections around a
create, and the operations the sandbox does not have yet (restore, read
replica, promote/switchover success, slow queries, logs paging). Happy paths
of everything the sandbox supports are in test_client_sandbox.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pgcloud_nb import redaction
from pgcloud_nb.client import Client
from pgcloud_nb.contract import operation
from pgcloud_nb.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    CredentialsUnknownError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from pgcloud_nb.ratelimit import Budget, RetryPolicy

ORG = "11111111-1111-4111-8111-111111111111"
SID = "22222222-2222-4222-8222-222222222222"
NEW = "33333333-3333-4333-8333-333333333333"
BASE = "https://api.test"
PG = f"/v1/organizations/{ORG}/postgres"
KEY_SECRET = "kS3cr3t-never-printed"
PASSWORD = "GeneratedPassw0rdXYZ"
CONN = f"postgres://postgres:{PASSWORD}@svc.test:5432/postgres"

Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: Any = None, *, status: int = 200) -> httpx.Response:
    body: dict[str, Any] = {"status": status, "requestId": "req-ok"}
    if result is not None:
        body["result"] = result
    return httpx.Response(status, json=body)


def fail(status: int, message: str, **kw: Any) -> httpx.Response:
    body = {"status": status, "error": message, "requestId": f"req-{status}"}
    return httpx.Response(status, json=body, **kw)


def service(sid: str = SID, **fields: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "name": "svc",
        "state": "running",
        "size": "r8gd.large",
        "createdAt": datetime.now(UTC).isoformat(),
        **fields,
    }


def make_client(handler: Handler, *, limit: int = 0) -> tuple[Client, list[float]]:
    """A client on a fake clock: its sleeps advance the clock the budget reads."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    client = Client(
        key_id="key-id",
        key_secret=KEY_SECRET,
        org_id=ORG,
        base_url=BASE,
        budget=Budget(limit, 10.0, clock=lambda: now[0]),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(deadline=60, max_attempts=5),
    )
    client.requester.sleep = sleep  # no real waiting in unit tests
    return client, sleeps


class Recorder:
    """A handler answering from a queue of responses (or callables), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


# -- statuses and bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, APIError),
    ],
)
def test_client_errors_are_typed_and_never_retried(status: int, cls: type[APIError]) -> None:
    rec = Recorder(fail(status, f"E{status}: nope"))
    client, _ = make_client(rec)
    with pytest.raises(cls) as info:
        client.get_service(SID)
    err = info.value
    assert (err.status, err.message, err.request_id) == (
        status,
        f"E{status}: nope",
        f"req-{status}",
    )
    assert err.method == "GET" and err.url.endswith(f"{PG}/{SID}")
    assert len(rec.requests) == 1 and client.request_count == 1
    assert client.last_request_id == f"req-{status}"


def test_5xx_is_retried_with_backoff_then_succeeds() -> None:
    rec = Recorder(fail(500, "boom"), fail(503, "busy"), ok(service()))
    client, sleeps = make_client(rec)
    assert client.get_service(SID).id == SID
    assert len(rec.requests) == 3 and len(sleeps) == 2
    assert client.requester.retries == 2


def test_5xx_gives_up_after_max_attempts() -> None:
    client, sleeps = make_client(Recorder(fail(500, "boom")))
    with pytest.raises(ServerError, match="boom"):
        client.list_services()
    assert client.request_count == 5 and len(sleeps) == 4


def test_5xx_gives_up_at_the_deadline() -> None:
    client, _ = make_client(Recorder(fail(503, "busy")))
    client.requester.policy = RetryPolicy(deadline=0.0)
    with pytest.raises(ServerError):
        client.list_services()
    assert client.request_count == 1


def test_proxy_error_page_keeps_its_status_class() -> None:
    page = httpx.Response(502, text="<html><body>Bad Gateway</body></html>")
    client, _ = make_client(Recorder(page, ok([])))
    assert client.list_services() == []  # retried like any 5xx
    client, _ = make_client(Recorder(page))
    with pytest.raises(ServerError, match="not the API's error envelope"):
        client.list_services()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text=f"<html>oops {CONN}</html>"),
        httpx.Response(200, json={"status": 200, "requestId": "r", "password": PASSWORD}),
        httpx.Response(200, json=[1, 2, 3]),
        httpx.Response(
            200, json={"status": 200, "result": {"name": "no id", "password": PASSWORD}}
        ),
        httpx.Response(200, json={"status": 200, "result": "a string"}),
    ],
    ids=["html", "no-result", "array", "bad-model", "string-result"],
)
def test_non_envelope_bodies_raise_unexpected_response(response: httpx.Response) -> None:
    client, _ = make_client(Recorder(response))
    with pytest.raises(UnexpectedResponseError) as info:
        client.get_service(SID)
    for text in (str(info.value), repr(info.value), info.value.body):
        assert PASSWORD not in text


# -- rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"Retry-After": "2"}, 2.0), ({"X-RateLimit-Reset": "3"}, 3.0)],
)
def test_429_waits_as_told_and_penalizes_the_budget(headers: dict[str, str], wait: float) -> None:
    rec = Recorder(fail(429, "Too many requests", headers=headers), ok([]))
    client, sleeps = make_client(rec, limit=10)
    assert client.list_services() == []
    assert sleeps == [wait]
    assert client.budget.penalties == 1 and client.requester.rate_limited == 1


def test_429_without_headers_backs_off() -> None:
    client, sleeps = make_client(Recorder(fail(429, "slow"), ok([])))
    client.list_services()
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_429_asking_too_long_surfaces() -> None:
    client, _ = make_client(Recorder(fail(429, "slow", headers={"Retry-After": "3600"})))
    with pytest.raises(RateLimitError) as info:
        client.list_services()
    assert info.value.retry_after == 3600


def test_429_on_create_is_resent_without_dedup() -> None:
    rec = Recorder(fail(429, "slow", headers={"Retry-After": "1"}), ok(service(NEW)))
    client, _ = make_client(rec)
    assert client.create_service(name="svc", region="us-east-1", size="r8gd.large").id == NEW
    assert [r.method for r in rec.requests] == ["POST", "POST"]  # a 429 was never served


# -- transport failures and the non-idempotent POSTs ----------------------------------------


def test_connection_errors_on_reads_are_retried() -> None:
    req = httpx.Request("GET", BASE)
    rec = Recorder(
        httpx.ConnectError("refused", request=req), httpx.ReadError("reset", request=req), ok([])
    )
    client, sleeps = make_client(rec)
    assert client.list_services() == []
    assert len(sleeps) == 2


def test_transport_failure_surfaces_wrapped() -> None:
    req = httpx.Request("GET", BASE)
    client, _ = make_client(Recorder(httpx.ConnectError("refused", request=req)))
    with pytest.raises(TransportError) as info:
        client.list_services()
    assert not info.value.sent and isinstance(info.value.__cause__, httpx.ConnectError)


class LossyAPI:
    """A create that lands on the server but whose answer is lost (dropped or 5xx)."""

    def __init__(self, failure: str, *, lands: bool, old_same_name: bool = False) -> None:
        self.failure, self.lands = failure, lands
        self.services: list[dict[str, Any]] = []
        if old_same_name:
            old = datetime.now(UTC) - timedelta(hours=2)
            self.services.append(service("old-one", name="dup", createdAt=old.isoformat()))
        self.posts = 0
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            self.posts += 1
            created = service(
                f"{NEW[:-1]}{self.posts}",
                name="dup",
                state="creating",
                password=PASSWORD,
                connectionString=CONN,
            )
            if self.posts == 1:
                if self.lands:
                    self.services.append(
                        {
                            k: v
                            for k, v in created.items()
                            if k not in ("password", "connectionString")
                        }
                    )
                if self.failure == "drop":
                    raise httpx.RemoteProtocolError("Server disconnected", request=request)
                return fail(500, "internal")
            self.services.append(created)
            return ok(created)
        if request.url.path == PG:
            return ok(self.services)
        sid = request.url.path.rsplit("/", 1)[-1]
        return ok(next(s for s in self.services if s["id"] == sid))


@pytest.mark.parametrize("failure", ["drop", "500"])
def test_lost_create_is_found_by_name_not_resent(failure: str) -> None:
    api = LossyAPI(failure, lands=True)
    client, _ = make_client(api)
    with pytest.warns(UserWarning, match="reset_password"):
        svc = client.create_service(name="dup", region="us-east-1", size="r8gd.large")
    assert api.posts == 1 and svc.id == f"{NEW[:-1]}1"
    assert api.calls == [f"POST {PG}", f"GET {PG}", f"GET {PG}/{svc.id}"]
    assert not client.knows_password(svc.id)  # the lost answer had the only copy


@pytest.mark.parametrize("failure", ["drop", "500"])
def test_create_that_did_not_land_is_resent(failure: str) -> None:
    api = LossyAPI(failure, lands=False, old_same_name=True)  # an older "dup" must not match
    client, _ = make_client(api)
    svc = client.create_service(name="dup", region="us-east-1", size="r8gd.large")
    assert api.posts == 2 and svc.id == f"{NEW[:-1]}2"
    assert client.knows_password(svc.id)


def test_connect_error_on_create_is_resent_without_lookup() -> None:
    req = httpx.Request("POST", BASE)
    rec = Recorder(httpx.ConnectError("refused", request=req), ok(service(NEW)))
    client, _ = make_client(rec)
    client.create_service(name="svc", region="us-east-1", size="r8gd.large")
    assert [r.method for r in rec.requests] == ["POST", "POST"]  # never sent: no GET needed


# -- operations and their bodies -------------------------------------------------------------


def test_create_body_and_credentials_kept_masked() -> None:
    rec = Recorder(ok(service(NEW, state="creating", password=PASSWORD, connectionString=CONN)))
    client, _ = make_client(rec)
    svc = client.create_service(
        name="svc",
        region="us-east-1",
        size="r8gd.large",
        postgres_version="18",
        tags={"env": "dev"},
        pg_config={"max_connections": 42},
        pg_bouncer_config={"pool": 16},
    )
    assert rec.bodies()[0] == {
        "name": "svc",
        "provider": "aws",
        "region": "us-east-1",
        "size": "r8gd.large",
        "postgresVersion": "18",
        "tags": [{"key": "env", "value": "dev"}],
        "pgConfig": {"max_connections": 42},
        "pgBouncerConfig": {"pool": "16"},
    }
    assert rec.requests[0].headers["content-type"] == "application/json"
    assert client.knows_password(NEW) and PASSWORD not in repr(svc)


def test_update_is_a_merge_patch_of_given_fields_only() -> None:
    rec = Recorder(ok(service()))
    client, _ = make_client(rec)
    client.update_service(SID, tags={"Environment": "production"})
    client.update_service(SID, size="r8gd.xlarge", ha_type="async")
    client.update_service(SID, tags={})
    assert rec.bodies() == [
        {"tags": [{"key": "Environment", "value": "production"}]},
        {"size": "r8gd.xlarge", "haType": "async"},
        {"tags": []},
    ]
    assert all(r.method == "PATCH" and r.url.path == f"{PG}/{SID}" for r in rec.requests)
    with pytest.raises(ValueError, match="at least one"):
        client.update_service(SID)


def test_config_patch_sends_both_sections_and_replace_refuses_empty() -> None:
    answer = ok(
        {"pgConfig": {"max_connections": "42"}, "pgBouncerConfig": {}, "message": "restart"}
    )
    rec = Recorder(answer)
    client, _ = make_client(rec)
    assert client.patch_config(SID, pg_config={"max_connections": 42}).restart_required
    with pytest.raises(ValueError, match="allow_empty"):
        client.replace_config(SID, pg_config={"max_connections": 42}, pg_bouncer_config={})
    client.replace_config(
        SID, pg_config={"work_mem": "4MB"}, pg_bouncer_config={}, allow_empty=True
    )
    assert [(r.method, json.loads(r.content)) for r in rec.requests] == [
        ("PATCH", {"pgConfig": {"max_connections": 42}, "pgBouncerConfig": {}}),
        ("POST", {"pgConfig": {"work_mem": "4MB"}, "pgBouncerConfig": {}}),
    ]


@pytest.mark.parametrize("command", ["restart", "promote", "switchover"])
def test_state_commands(command: str) -> None:
    rec = Recorder(
        ok(service(state="restarting" if command == "restart" else "running", isPrimary=True))
    )
    client, _ = make_client(rec)
    svc = getattr(client, command)(SID)
    # promote reads the service first (docs/api-behaviour.md §2.3): one GET, no body
    assert [r.method for r in rec.requests] == ["GET"] * (command == "promote") + ["PATCH"]
    assert svc.is_primary and rec.bodies()[-1:] == [{"command": command}]
    assert rec.requests[-1].url.path == f"{PG}/{SID}/state"


def test_reset_password_generated_and_supplied() -> None:
    rec = Recorder(ok({"password": PASSWORD}), ok({}), ok())
    client, _ = make_client(rec)
    res = client.reset_password(SID)
    assert res.reveal_password() == PASSWORD and PASSWORD not in repr(res)
    assert client.knows_password(SID)
    client.reset_password(SID, "Chosen-Passw0rd-1")
    # the spec makes the envelope's result optional: an answer without one is no error here
    assert client.reset_password(SID, "Chosen-Passw0rd-2").password is None
    bodies = [{}, {"password": "Chosen-Passw0rd-1"}, {"password": "Chosen-Passw0rd-2"}]
    assert rec.bodies() == bodies


def test_lone_surrogates_in_an_answer_are_repaired() -> None:
    # "\\ud800" is legal JSON but no character: no notebook, log or Arrow string takes it.
    body = b'{"status": 200, "result": {"id": "x", "name": "a\\ud800b", "x\\udfff": 1}}'
    client, _ = make_client(Recorder(httpx.Response(200, content=body)))
    svc = client.get_service(SID)
    assert svc.name == "a\ufffdb" and svc.model_extra == {"x\ufffd": 1}
    svc.model_dump_json()  # encodes


def test_replica_and_restore() -> None:
    rec = Recorder(
        ok({"password": PASSWORD}),
        ok(service(NEW, state="creating", isPrimary=False)),
        ok(service(NEW[:-1] + "9", state="restoring_backup")),
    )
    client, _ = make_client(rec)
    client.reset_password(SID)  # now the primary's password is known
    replica = client.create_read_replica(SID, name="r1", tags={"role": "replica"})
    assert replica.is_primary is False and client.knows_password(replica.id)  # inherits superuser
    target = datetime(2026, 3, 31, 18, 17, 37, tzinfo=UTC)
    restored = client.restore_service(SID, name="pitr", restore_target=target)
    assert restored.state == "restoring_backup"
    assert rec.bodies()[1:] == [
        {"name": "r1", "tags": [{"key": "role", "value": "replica"}]},
        {"name": "pitr", "restoreTarget": "2026-03-31T18:17:37.000Z"},
    ]
    assert [r.url.path for r in rec.requests[1:]] == [
        f"{PG}/{SID}/readReplica",
        f"{PG}/{SID}/restoredService",
    ]


def test_delete_after_a_lost_answer_treats_404_as_done() -> None:
    rec = Recorder(fail(500, "boom"), fail(404, "not found"))
    client, _ = make_client(rec)
    client.delete_service(SID)
    assert [r.method for r in rec.requests] == ["DELETE", "DELETE"]
    client, _ = make_client(Recorder(fail(404, "not found")))
    with pytest.raises(NotFoundError):  # a first-attempt 404 is a real error
        client.delete_service(SID)


def test_text_endpoints() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    rec = Recorder(
        httpx.Response(200, text=pem, headers={"content-type": "application/x-pem-file"}),
        httpx.Response(200, text="# HELP x\nx 1\n"),
        httpx.Response(200, text="# HELP y\ny 1\n"),
    )
    client, _ = make_client(rec)
    assert client.ca_certificate(SID) == pem
    assert client.prometheus(SID).startswith("# HELP x")
    assert client.prometheus().startswith("# HELP y")
    assert [r.url.path for r in rec.requests] == [
        f"{PG}/{SID}/caCertificates",
        f"{PG}/{SID}/prometheus",
        f"{PG}/prometheus",
    ]
    # what each operation declares (the JSON error envelope stays acceptable)
    assert [r.headers["accept"] for r in rec.requests] == [
        "application/x-pem-file, application/json;q=0.5",
        "text/plain, application/json;q=0.5",
        "text/plain, application/json;q=0.5",
    ]


def test_a_strict_server_gets_the_types_it_declares() -> None:
    # A server that answers 406 to an Accept leaving out the declared type serves every call.
    def strict(request: httpx.Request) -> httpx.Response:
        op = operation(request.method, request.url.path)
        assert op is not None
        accepted = [t.split(";")[0].strip() for t in request.headers["accept"].split(",")]
        if not set(op.success_types) <= set(accepted):
            return fail(406, "NOT_ACCEPTABLE")
        if not op.json:
            return httpx.Response(200, text="x 1\n", headers={"content-type": op.success_types[0]})
        return ok(service() if request.method != "DELETE" else None)

    client, _ = make_client(strict)
    assert client.ca_certificate(SID) == "x 1\n"
    assert client.prometheus(SID) == client.prometheus() == "x 1\n"
    assert client.get_service(SID).id == SID
    client.delete_service(SID)


def test_metrics_and_slow_queries_parameters() -> None:
    pattern = {
        "queryId": "-47",
        "queryText": "SELECT 1",
        "dbName": "postgres",
        "dbUser": "postgres",
        "dbOperation": "SELECT",
        "app": "psql",
        **dict.fromkeys(
            [
                "callCount",
                "errorCount",
                "totalDurationUs",
                "avgDurationUs",
                "maxDurationUs",
                "p50DurationUs",
                "p95DurationUs",
                "p99DurationUs",
                "totalRows",
                "totalSharedBlksRead",
                "totalSharedBlksHit",
                "totalCpuTimeUs",
                "totalWalBytes",
            ],
            1,
        ),
    }
    rec = Recorder(
        ok({"metrics": []}), ok([pattern]), ok({"aggregate": pattern, "recentExecutions": []})
    )
    client, _ = make_client(rec)
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    client.metrics(SID, from_date=start, to_date="2026-05-01T11:00:00.000Z", bucket_size_seconds=60)
    [found] = client.slow_query_patterns(
        SID, from_date=start, to_date=start + timedelta(hours=1), sort_by="avg_duration", limit=5
    )
    detail = client.slow_query_pattern(
        SID, found.query_id, db_name="postgres", db_user="postgres", db_operation="SELECT"
    )
    assert detail.aggregate is not None and detail.aggregate.query_id == "-47"
    m, s, d = (dict(r.url.params) for r in rec.requests)
    assert m == {
        "from_date": "2026-05-01T10:00:00.000Z",
        "to_date": "2026-05-01T11:00:00.000Z",
        "bucket_size_seconds": "60",
    }
    assert s["sort_by"] == "avg_duration" and s["limit"] == "5" and "db_name" not in s
    assert d == {"db_name": "postgres", "db_user": "postgres", "db_operation": "SELECT"}
    assert rec.requests[2].url.path == f"{PG}/{SID}/slowQueryPatterns/-47"


def _log_pages(total: int) -> Handler:
    entries = [
        {"timestamp": "2026-05-01T10:00:00Z", "severity": "LOG", "body": f"line {i}"}
        for i in range(total)
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
        return ok(entries[offset : offset + limit])

    return handler


@pytest.mark.parametrize(("total", "pages"), [(0, 1), (5, 3), (4, 3), (3, 2)])
def test_logs_page_until_a_short_page(total: int, pages: int) -> None:
    rec = Recorder(_log_pages(total))
    client, _ = make_client(rec)
    logs = client.logs(SID, from_date=timedelta(hours=1), to_date=datetime.now(UTC), page_size=2)
    assert [e.body for e in logs] == [f"line {i}" for i in range(total)]
    assert [r.url.params["offset"] for r in rec.requests] == [str(2 * i) for i in range(pages)]


def test_iter_logs_stops_at_max_entries() -> None:
    rec = Recorder(_log_pages(100))
    client, _ = make_client(rec)
    got = list(
        client.iter_logs(
            SID,
            from_date="2026-05-01T00:00:00.000Z",
            to_date="2026-05-02T00:00:00.000Z",
            page_size=10,
            max_entries=15,
        )
    )
    assert len(got) == 15 and len(rec.requests) == 2


def test_connect_service_without_known_credentials_is_a_clear_error() -> None:
    client, _ = make_client(Recorder(ok(service())))
    with pytest.raises(CredentialsUnknownError, match="reset_password"):
        client.connect_service(SID)


def test_repr_names_the_source_never_the_secret() -> None:
    client, _ = make_client(Recorder(ok([])))
    assert "arguments" in repr(client) and KEY_SECRET not in repr(client)
    assert client.budget is client.requester.budget


def test_no_secret_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    redaction.remember_secret(PASSWORD)
    rec = Recorder(
        ok(service(NEW, state="creating", password=PASSWORD, connectionString=CONN)),
        fail(500, f"boom with {CONN}"),
        fail(400, f"BAD_REQUEST: request body.password: '{PASSWORD}'"),
    )
    client, _ = make_client(rec)
    with caplog.at_level(logging.DEBUG):
        svc = client.create_service(name="svc", region="us-east-1", size="r8gd.large")
        logging.getLogger("pgcloud_nb").info("created %r", svc)
        with pytest.raises(BadRequestError) as info:
            client.reset_password(NEW, PASSWORD)
        logging.getLogger("pgcloud_nb").exception("failed: %s", info.value)
    assert caplog.records
    assert PASSWORD not in caplog.text and KEY_SECRET not in caplog.text
    assert PASSWORD not in str(info.value)
