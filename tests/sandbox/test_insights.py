"""Slow query patterns and logs over real HTTP, from workloads these tests run
on a real sandbox service: patterns, executions and logs as the API describes them
(docs/api-behaviour.md §10)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from test_api import CREATE, error, result, wait_state

from pgcloud_nb import spec
from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.api.insights import SORT_KEYS

TAG = uuid.uuid4().hex[:8]
TABLE = f"t_insights_{TAG}"
APP = f"insights-test-{TAG}"
MARKER = f"pgcloud-nb-marker-{TAG}"
SLOW_RUNS = 4  # each over the 100 ms auto_explain threshold
FAST_RUNS = 30
PATTERNS = "/postgres/{}/slowQueryPatterns"


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window(**extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "from_date": stamp(now - timedelta(hours=1)),
        "to_date": stamp(now + timedelta(minutes=1)),
        **extra,
    }


def check_schema(name: str, value: Any) -> None:
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec.load(), default_specification=DRAFT202012)
    )
    jsonschema.Draft202012Validator(
        {"$ref": f"urn:spec#/components/schemas/{name}"},
        registry=registry,
        format_checker=jsonschema.FormatChecker(),
    ).validate(value)


def workload(dsn: str) -> None:
    with psycopg.connect(dsn, application_name=APP, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} AS SELECT g AS n FROM generate_series(1, 100) g")
        for i in range(SLOW_RUNS):
            conn.execute(f"SELECT count(*), pg_sleep(0.12) FROM {TABLE} WHERE n > %s", [i])
        for i in range(FAST_RUNS):
            conn.execute(f"SELECT n FROM {TABLE} WHERE n = %s", [i])
        conn.execute(f"INSERT INTO {TABLE} SELECT g FROM generate_series(101, 200) g")
        conn.execute(f"UPDATE {TABLE} SET n = n + 0 WHERE n > %s", [150])
        conn.execute(f"DELETE FROM {TABLE} WHERE n > %s", [190])
        # One pattern that runs once and then fails at execution (division by zero).
        failing = f"SELECT count(*) FROM {TABLE} WHERE 1 / (n - %s) > 0"
        conn.execute(failing, [0])
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(failing, [5])
        conn.execute(f"DO $$ BEGIN RAISE WARNING '{MARKER}'; END $$")


@pytest.fixture(scope="module")
def svc(sandbox: SandboxInfo) -> Iterator[dict[str, Any]]:
    with httpx.Client(
        base_url=f"{sandbox.url}/v1/organizations/{sandbox.org_id}",
        auth=(sandbox.key_id, sandbox.key_secret),
        timeout=60,
    ) as client:
        created = result(client.post("/postgres", json={**CREATE, "name": f"ins-{TAG}"}))
        wait_state(client, created["id"], "running")
        workload(created["connectionString"])
        yield created
        client.delete(f"/postgres/{created['id']}")


def patterns(api: httpx.Client, sid: str, **params: Any) -> list[dict[str, Any]]:
    found = result(api.get(PATTERNS.format(sid), params=window(**params)))
    assert isinstance(found, list)
    return found


def mine(api: httpx.Client, sid: str, **params: Any) -> dict[str, dict[str, Any]]:
    """The workload's patterns by their first words, e.g. "SELECT count"."""
    found = patterns(api, sid, limit=500, **params)
    return {" ".join(p["queryText"].split()[:2]): p for p in found if TABLE in p["queryText"]}


# -- slow query patterns ---------------------------------------------------------------


def test_patterns_match_the_workload(api: httpx.Client, svc: dict[str, Any]) -> None:
    found = patterns(api, svc["id"], limit=500)
    for p in found:
        check_schema("PostgresSlowQueryPattern", p)
    ours = mine(api, svc["id"])
    slow, fast = ours["SELECT count(*),"], ours["SELECT n"]
    assert slow["callCount"] >= SLOW_RUNS and slow["dbOperation"] == "SELECT"
    assert "$1" in slow["queryText"]  # normalized: no literal values
    assert slow["app"] == APP  # from the executions auto_explain logged
    assert slow["dbName"] == "postgres" and slow["dbUser"] == "postgres"
    assert slow["p50DurationUs"] >= 100_000 and slow["totalDurationUs"] >= SLOW_RUNS * 100_000
    assert slow["p50DurationUs"] <= slow["p95DurationUs"] <= slow["p99DurationUs"]
    assert slow["p99DurationUs"] <= slow["maxDurationUs"]
    assert fast["callCount"] >= FAST_RUNS and fast["maxDurationUs"] < 100_000
    assert ours["INSERT INTO"]["dbOperation"] == "INSERT"
    assert ours["INSERT INTO"]["totalRows"] == 100 and ours["INSERT INTO"]["totalWalBytes"] > 0
    assert ours["UPDATE t_insights_" + TAG]["dbOperation"] == "UPDATE"
    assert ours["DELETE FROM"]["dbOperation"] == "DELETE"
    assert ours["CREATE TABLE"]["dbOperation"] == "UTILITY"
    failing = next(p for p in ours.values() if "/ (n -" in p["queryText"])
    assert failing["errorCount"] >= 1 and failing["callCount"] >= 1
    assert any(int(p["queryId"]) < 0 for p in found)  # signed 64-bit, as the server has them


def test_pattern_filters(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    for op in ("SELECT", "INSERT", "UPDATE", "DELETE", "UTILITY"):
        got = patterns(api, sid, db_operation=op, limit=500)
        assert got and {p["dbOperation"] for p in got} == {op}
    assert {p["dbName"] for p in patterns(api, sid, db_name="postgres")} == {"postgres"}
    assert patterns(api, sid, db_name="nope") == []
    assert patterns(api, sid, db_user="nobody") == []
    by_app = patterns(api, sid, app=APP, limit=500)
    assert by_app and {p["app"] for p in by_app} == {APP}
    assert any("pg_sleep" in p["queryText"] for p in by_app)
    # No activity in a window long past.
    old = {"from_date": "2020-01-01T00:00:00.000Z", "to_date": "2020-01-02T00:00:00.000Z"}
    assert result(api.get(PATTERNS.format(sid), params=old)) == []


@pytest.mark.parametrize("sort_by", sorted(SORT_KEYS))
def test_pattern_sorting(api: httpx.Client, svc: dict[str, Any], sort_by: str) -> None:
    field = SORT_KEYS[sort_by]
    down = [p[field] for p in patterns(api, svc["id"], sort_by=sort_by, limit=500)]
    assert down == sorted(down, reverse=True)
    up = [p[field] for p in patterns(api, svc["id"], sort_by=sort_by, sort_order="asc")]
    assert up == sorted(up)


def test_sort_keys_are_the_spec_enum() -> None:
    op = spec.load()["paths"]["/v1/organizations/{organizationId}/postgres/{postgresId}/"
                              "slowQueryPatterns"]["get"]  # fmt: skip
    enum = next(p["schema"]["enum"] for p in op["parameters"] if p["name"] == "sort_by")
    assert set(enum) == set(SORT_KEYS)


def test_pattern_paging(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    # A window that has ended: its figures no longer move, so pages are stable.
    past = {**window(), "to_date": stamp(datetime.now(UTC)), "sort_by": "call_count"}
    url = PATTERNS.format(sid)
    whole = [p["queryId"] for p in result(api.get(url, params={**past, "limit": 500}))]
    assert len(whole) > 6
    paged: list[str] = []
    while page := result(api.get(url, params={**past, "limit": 3, "offset": len(paged)})):
        assert len(page) <= 3
        paged += [p["queryId"] for p in page]
    assert paged == whole
    assert len(result(api.get(url, params=past))) == min(20, len(whole))  # default limit


def test_pattern_detail(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    slow = mine(api, sid)["SELECT count(*),"]
    params = {"db_name": "postgres", "db_user": "postgres", "db_operation": "SELECT"}
    detail = result(api.get(f"{PATTERNS.format(sid)}/{slow['queryId']}", params=params))
    check_schema("PostgresSlowQueryPatternDetail", detail)
    assert detail["aggregate"]["queryId"] == slow["queryId"]
    runs = detail["recentExecutions"]
    assert len(runs) >= SLOW_RUNS
    assert [r["timestamp"] for r in runs] == sorted((r["timestamp"] for r in runs), reverse=True)
    for run in runs:
        assert run["durationUs"] >= 100_000 and run["app"] == APP
        assert run["queryText"] == slow["queryText"] and run["serverRole"] == "primary"
        assert run["pid"].isdigit() and run["rows"] == 1 and run["sharedBlksHit"] >= 1
    one = result(
        api.get(
            f"{PATTERNS.format(sid)}/{slow['queryId']}",
            params={**params, "timestamp": runs[-1]["timestamp"], "app": APP},
        )
    )["recentExecutions"]
    assert one and {r["timestamp"] for r in one} == {runs[-1]["timestamp"]}
    other_app = {**params, "app": "someone-else"}
    got = result(api.get(f"{PATTERNS.format(sid)}/{slow['queryId']}", params=other_app))
    assert got["recentExecutions"] == []

    failing = next(p for p in mine(api, sid).values() if "/ (n -" in p["queryText"])
    got = result(api.get(f"{PATTERNS.format(sid)}/{failing['queryId']}", params=params))
    failed = [r for r in got["recentExecutions"] if "errSqlstate" in r]
    assert failed and failed[0]["errSqlstate"] == "22012" and failed[0]["errElevel"] == 21
    check_schema("PostgresSlowQueryPatternDetail", got)


def test_negative_query_id_detail(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    negative = next(p for p in patterns(api, sid, limit=500) if p["queryId"].startswith("-"))
    params = {k: negative[v] for k, v in (("db_name", "dbName"), ("db_user", "dbUser"),
                                          ("db_operation", "dbOperation"))}  # fmt: skip
    got = result(api.get(f"{PATTERNS.format(sid)}/{negative['queryId']}", params=params))
    assert got["aggregate"]["queryId"] == negative["queryId"]
    check_schema("PostgresSlowQueryPatternDetail", got)


def test_pattern_detail_errors(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    base = f"{PATTERNS.format(sid)}"
    params = {"db_name": "postgres", "db_user": "postgres", "db_operation": "SELECT"}
    assert "NOT_FOUND" in error(api.get(f"{base}/-1234567", params=params), 404)
    slow = mine(api, sid)["SELECT count(*),"]
    wrong_op = {**params, "db_operation": "DELETE"}
    error(api.get(f"{base}/{slow['queryId']}", params=wrong_op), 404)
    assert "queryId" in error(api.get(f"{base}/abc", params=params), 400)
    assert "queryId" in error(api.get(f"{base}/{2**63}", params=params), 400)
    for name in params:
        rest = {k: v for k, v in params.items() if k != name}
        assert name in error(api.get(f"{base}/{slow['queryId']}", params=rest), 400)
    assert "db_operation" in error(
        api.get(f"{base}/{slow['queryId']}", params={**params, "db_operation": "select"}), 400
    )
    assert "timestamp" in error(
        api.get(f"{base}/{slow['queryId']}", params={**params, "timestamp": "yesterday"}), 400
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("from_date", None),
        ("to_date", None),
        ("from_date", "2026-13-01"),
        ("to_date", "2020-01-01T00:00:00Z"),  # before from_date
        ("sort_by", "duration"),
        ("sort_order", "up"),
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "ten"),
        ("offset", "-1"),
        ("db_operation", "MERGE"),
    ],
)
def test_pattern_bad_parameters(
    api: httpx.Client, svc: dict[str, Any], name: str, value: str | None
) -> None:
    params = window()
    if value is None:
        del params[name]
    else:
        params[name] = value
    assert name in error(api.get(PATTERNS.format(svc["id"]), params=params), 400)


# -- logs ----------------------------------------------------------------------------------


def logs(api: httpx.Client, sid: str, **params: Any) -> list[dict[str, Any]]:
    found = result(api.get(f"/postgres/{sid}/logs", params=window(**params)))
    for entry in found:
        check_schema("PostgresLogEntry", entry)
    return list(found)


def test_logs_hold_the_test_message(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    got = logs(api, sid, severity="WARNING", body_contains=MARKER)
    assert [e["body"] for e in got] == [MARKER] and got[0]["severity"] == "WARNING"
    assert logs(api, sid, severity="ERROR", body_contains=MARKER) == []
    assert logs(api, sid, body_contains=MARKER.upper()) == []  # case-sensitive
    assert len(logs(api, sid, body_contains=MARKER)) == 1  # no severity: no filter
    # An empty enum value is not "no filter": it is refused, naming the parameter.
    empty = api.get(f"/postgres/{sid}/logs", params=window(body_contains=MARKER, severity=""))
    assert "severity" in error(empty, 400)
    errors = logs(api, sid, severity="ERROR", body_contains="division by zero")
    assert errors and errors[0]["body"] == "division by zero"
    # auto_explain's lines are JSON plans, as PostgreSQL wrote them.
    plans = logs(api, sid, body_contains=TABLE, severity="LOG")
    assert any(e["body"].startswith("duration: ") and '"Plan"' in e["body"] for e in plans)


def test_logs_order_and_pages(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    params = {**window(), "to_date": stamp(datetime.now(UTC))}  # one window, ended
    newest = result(api.get(f"/postgres/{sid}/logs", params={**params, "limit": 2000}))
    times = [e["timestamp"] for e in newest]
    assert len(newest) > 10 and times == sorted(times, reverse=True)
    oldest = result(
        api.get(f"/postgres/{sid}/logs", params={**params, "sort_order": "asc", "limit": 2000})
    )
    assert [e["timestamp"] for e in oldest] == sorted(times)
    # Page through (ascending, so lines logged meanwhile only add pages at the end).
    paged: list[dict[str, Any]] = []
    while True:
        page = result(
            api.get(
                f"/postgres/{sid}/logs",
                params={**params, "sort_order": "asc", "limit": 7, "offset": len(paged)},
            )
        )
        paged += page
        if len(page) < 7:
            break
    assert paged[: len(oldest)] == oldest
    default = result(api.get(f"/postgres/{sid}/logs", params=params))
    assert default == newest[:50]  # limit 50 and newest first by default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("from_date", None),
        ("to_date", None),
        ("to_date", "2026-01-01T00:00:00Z"),  # not after from_date
        ("to_date", "2026-03-01T00:00:00Z"),  # more than 30 days
        ("severity", "warning"),  # case-sensitive
        ("severity", "STATEMENT"),
        ("sort_order", "newest"),
        ("limit", "2001"),
        ("limit", "0"),
        ("offset", "-5"),
    ],
)
def test_logs_bad_parameters(
    api: httpx.Client, svc: dict[str, Any], name: str, value: str | None
) -> None:
    params = {"from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-30T00:00:00Z"}
    if value is None:
        del params[name]
    else:
        params[name] = value
    assert name in error(api.get(f"/postgres/{svc['id']}/logs", params=params), 400)


def test_logs_window_is_inclusive_and_thirty_days(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    days30 = {"from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-31T00:00:00Z"}
    assert result(api.get(f"/postgres/{sid}/logs", params=days30)) == []
    marker = logs(api, sid, body_contains=MARKER)[0]["timestamp"]
    exact = {"from_date": marker, "to_date": marker, "body_contains": MARKER}
    error(api.get(f"/postgres/{sid}/logs", params=exact), 400)  # to_date must be after
    at = datetime.fromisoformat(marker)
    edge = {"from_date": marker, "to_date": stamp(at + timedelta(milliseconds=1))}
    assert len(result(api.get(f"/postgres/{sid}/logs", params={**edge, "body_contains": MARKER})))
    edge = {"from_date": stamp(at - timedelta(milliseconds=1)), "to_date": marker}
    assert len(result(api.get(f"/postgres/{sid}/logs", params={**edge, "body_contains": MARKER})))


# -- secrets ---------------------------------------------------------------------------


def test_no_password_reaches_patterns_or_logs(api: httpx.Client, svc: dict[str, Any]) -> None:
    sid = svc["id"]
    chosen = f"Chosen{TAG}Pw1"
    result(api.patch(f"/postgres/{sid}/password", json={"password": chosen}))
    generated = result(api.patch(f"/postgres/{sid}/password", json={}))["password"]
    for secret in (chosen, generated, svc["password"], "SCRAM-SHA-256$", "PASSWORD"):
        assert logs(api, sid, body_contains=secret, limit=2000) == []
    texts = " ".join(p["queryText"] for p in patterns(api, sid, limit=500)).upper()
    assert "PASSWORD" not in texts and "SCRAM" not in texts
    assert "ALTER ROLE" not in texts


def test_unknown_service(api: httpx.Client) -> None:
    sid = uuid.uuid4()
    error(api.get(PATTERNS.format(sid), params=window()), 404)
    error(api.get(f"/postgres/{sid}/logs", params=window()), 404)
    params = {"db_name": "postgres", "db_user": "postgres", "db_operation": "SELECT"}
    error(api.get(f"{PATTERNS.format(sid)}/1", params=params), 404)


def test_patterns_are_windowed(api: httpx.Client, svc: dict[str, Any]) -> None:
    """A window that starts after the workload holds none of it, once a snapshot
    (taken every sample_interval, 2 s here) lies between the two."""
    sid = svc["id"]
    time.sleep(2.5)
    now = datetime.now(UTC)
    later = {"from_date": stamp(now), "to_date": stamp(now + timedelta(minutes=1))}
    found = result(api.get(PATTERNS.format(sid), params={**later, "limit": 500}))
    assert not [p for p in found if TABLE in p["queryText"]]
