"""Who may reach the sandbox's HTTP API, and what it takes: one test per finding of the
hardening review, on a real sandbox, and the checks beneath them without one.

- The rate limit cannot be dodged or turned against a key: a probe header needs the
  key, wrong secrets spend the caller's address budget (never the key's), and made-up
  key IDs are limited per address.
- No trailing-slash redirect (it answered 307 before the key check, its Location
  copied from Host).
- Bodies are capped at 1 MiB (413); deep nesting, huge integers, NaN, repeated names,
  NUL bytes and other control characters get a 400 naming the field; nothing of them
  is stored (a NUL in a password used to cut it short).
- Patterns match whole strings; pgConfig values are checked as PostgreSQL parses
  them, also for keys the running major lacks; an empty choice in a query is a 400.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_api import CREATE, error, org_client, result, running_service

from pgcloud_nb import pgparams
from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings
from pgcloud_nb.sandbox.api import pgvalues
from pgcloud_nb.sandbox.api.pgvalues import value_problem
from pgcloud_nb.sandbox.api.realism import PROBE_HEADER
from pgcloud_nb.sandbox.api.wire import MAX_BODY
from pgcloud_nb.specrules import ecma_regex, text_problem

JSON = {"content-type": "application/json"}
WINDOW = {"from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-02T00:00:00Z"}


@pytest.fixture(scope="module")
def svc(sandbox: SandboxInfo) -> Iterator[dict[str, Any]]:
    with running_service(sandbox, "hardening") as created:
        yield created


# -- the rate limit -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(sandbox_root: Path) -> Iterator[SandboxInfo]:
    """A sandbox of its own (no service) with the real limit: 10 requests per 10 s."""
    home = sandbox_root / "hardening-limited"
    sb = Sandbox(home, Settings(home=home, rate_limit=10, rate_window=10.0))
    yield sb.start()
    sb.stop()


def test_wrong_secrets_do_not_spend_the_keys_budget(limited: SandboxInfo) -> None:
    orgs = f"{limited.url}/v1/organizations"
    with httpx.Client(timeout=30, trust_env=False) as c:
        guesses = [c.get(orgs, auth=(limited.key_id, f"guess-{i}")).status_code for i in range(10)]
        assert guesses == [401] * 10
        # The key ID is no secret: ten wrong secrets used to leave the real key a 429.
        assert c.get(orgs, auth=(limited.key_id, limited.key_secret)).status_code == 200
        # Made-up key IDs were never limited; now the address that sent them is.
        made_up = [
            c.get(orgs, auth=(uuid.uuid4().hex, "x")).status_code for _ in range(3)
        ]  # the address spent its 10 on the guesses above
        assert made_up == [429] * 3
        # Anyone could send the probe header to skip the limit; without the key it is
        # nothing.
        probe = c.get(orgs, headers={PROBE_HEADER: "1"})
        assert probe.status_code == 429 and probe.json()["status"] == 429
        # With the key it skips the limit (the launcher's readiness checks).
        key = (limited.key_id, limited.key_secret)
        assert c.get(orgs, auth=key, headers={PROBE_HEADER: "1"}).status_code == 200


# -- paths ----------------------------------------------------------------------------------


def test_a_trailing_slash_is_no_way_around_the_key(sandbox: SandboxInfo) -> None:
    spoofed = {"host": "attacker.example"}
    with httpx.Client(base_url=sandbox.url, timeout=30, trust_env=False) as c:
        for path in ("/v1/organizations/", f"/v1/organizations/{sandbox.org_id}/postgres/"):
            r = c.get(path, headers=spoofed)
            assert "Unauthorized" in error(r, 401)
            assert "location" not in r.headers
            good = c.get(path, auth=(sandbox.key_id, sandbox.key_secret), headers=spoofed)
            assert "no such path" in error(good, 404)
            assert "location" not in good.headers


# -- bodies ------------------------------------------------------------------------------


def test_bodies_over_a_mebibyte_get_a_413(sandbox: SandboxInfo) -> None:
    big = json.dumps({**CREATE, "region": "x" * MAX_BODY}).encode()
    with org_client(sandbox) as api:
        assert "1 MiB" in error(api.post("/postgres", content=big, headers=JSON), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"name": "'
            for _ in range(20):
                yield b"x" * 65536
            yield b'"}'

        error(api.post("/postgres", content=chunks(), headers=JSON), 413)
    # Without the key, the body is never read: a 401 as for any request.
    error(httpx.post(f"{sandbox.url}/v1/organizations", content=big, headers=JSON), 401)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"[" * 100_000, "request body: nested deeper than 32 levels"),
        (b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}", "request body.name"),
        (b'{"name": ' + b"1" * 5000 + b"}", "request body.name: an integer of 5000 digits"),
        (b'{"name": "a", "name": "b"}', "request body.name: is given more than once"),
        (b'{"name": NaN}', "request body.name: NaN is not a JSON number"),
        (b'{"name": -Infinity}', "request body.name: -Infinity is not a JSON number"),
        (b'{"name": 1e400}', "request body.name: 1e400 is out of range"),
        (b'{"name": "\\ud800"}', "request body.name: contains a lone surrogate"),
        (b'{"name": "\xff"}', "not UTF-8"),
        (b'\xef\xbb\xbf{"name": "a"}', "not valid JSON"),
        ('{"name": "a"}'.encode("utf-16"), "not UTF-8"),
    ],
)
def test_what_json_cannot_say_is_a_400_naming_the_field(
    sandbox: SandboxInfo, raw: bytes, field: str
) -> None:
    with org_client(sandbox) as api:
        assert field in error(api.post("/postgres", content=raw, headers=JSON), 400)


@pytest.mark.parametrize(
    "password",
    ["Aa1\u0000zzzzzzzzzzzz", "\u0000Aa1zzzzzzzzzzzz", "Aa1zzzzzzzzzzzz\n", "Aa1\x1bzzzzzzzzzzzz"],
)
def test_a_password_with_a_control_character_is_refused_not_cut_short(
    api: httpx.Client, svc: dict[str, Any], password: str
) -> None:
    sid = svc["id"]
    msg = error(api.patch(f"/postgres/{sid}/password", json={"password": password}), 400)
    assert "request body.password: contains a control character" in msg
    with psycopg.connect(svc["connectionString"], connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)  # the old password stands


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\u0000b"}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"name": "\u202egnp.exe"}, "name"),
        ({"tags": [{"key": "k\n", "value": "v"}]}, "tags[0].key"),
        ({"tags": [{"key": "k", "value": "v\n"}]}, "tags[0].value"),
        ({"tags": [{"key": "k", "value": "ünï"}]}, "tags[0].value"),
        ({"tags": [{"key": "\u0661\u0662", "value": "v"}]}, "tags[0].key"),
    ],
)
def test_names_and_tags_are_matched_whole(
    api: httpx.Client, svc: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    sid = svc["id"]
    before = result(api.get(f"/postgres/{sid}"))
    assert f"request body.{field}:" in error(api.patch(f"/postgres/{sid}", json=body), 400)
    after = result(api.get(f"/postgres/{sid}"))
    assert (after["name"], after["tags"]) == (before["name"], before["tags"])


@pytest.mark.parametrize(
    ("pg_config", "field"),
    [
        ({"transaction_timeout": "5s\nlisten_addresses='*'"}, "transaction_timeout"),
        ({"transaction_timeout": "5 parsecs"}, "transaction_timeout"),
        ({"transaction_timeout": "9" * 400}, "transaction_timeout"),
        ({"transaction_timeout": "2m"}, "transaction_timeout"),
        ({"work_mem": "4MB\u0000"}, "work_mem"),
        ({"random_page_cost": "NaN"}, "random_page_cost"),
        ({"random_page_cost": "1e400"}, "random_page_cost"),
        ({"max_connections": int("9" * 19)}, "max_connections"),
        ({"wal_compression": "lz4\n"}, "wal_compression"),
    ],
)
def test_pg_config_values_are_checked_before_any_server(
    api: httpx.Client, svc: dict[str, Any], pg_config: dict[str, Any], field: str
) -> None:
    sid = svc["id"]
    before = result(api.get(f"/postgres/{sid}/config"))
    body = {"pgConfig": pg_config, "pgBouncerConfig": {}}
    assert f"request body.pgConfig.{field}:" in error(
        api.patch(f"/postgres/{sid}/config", json=body), 400
    )
    assert result(api.get(f"/postgres/{sid}/config")) == before
    # A create with it makes nothing either.
    name = f"refused-{uuid.uuid4().hex[:6]}"
    create = {**CREATE, "name": name, "pgConfig": pg_config}
    assert f"request body.pgConfig.{field}:" in error(api.post("/postgres", json=create), 400)
    assert all(s["name"] != name for s in result(api.get("/postgres")))


def test_a_newer_majors_parameter_still_takes_a_valid_value(
    api: httpx.Client, svc: dict[str, Any]
) -> None:
    body = {"pgConfig": {"transaction_timeout": "5s"}, "pgBouncerConfig": {}}
    assert (
        result(api.patch(f"/postgres/{svc['id']}/config", json=body))["pgConfig"][
            "transaction_timeout"
        ]
        == "5s"
    )


# -- query parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "params", "name"),
    [
        ("slowQueryPatterns", {"sort_order": ""}, "sort_order"),
        ("slowQueryPatterns", {"sort_by": ""}, "sort_by"),
        ("slowQueryPatterns", {"limit": ""}, "limit"),
        ("slowQueryPatterns", {"db_operation": ""}, "db_operation"),
        ("slowQueryPatterns", {"db_operation": "select"}, "db_operation"),
        ("logs", {"severity": ""}, "severity"),
        ("logs", {"severity": "error"}, "severity"),
        ("logs", {"sort_order": ""}, "sort_order"),
        ("logs", {"offset": ""}, "offset"),
        ("metrics", {"bucket_size_seconds": "9" * 400}, "bucket_size_seconds"),
        ("metrics", {"bucket_size_seconds": "1_000"}, "bucket_size_seconds"),
        ("metrics", {"bucket_size_seconds": "\u0661\u0662\u0660\u0660"}, "bucket_size_seconds"),
        ("logs", {"body_contains": "a\u0000b"}, "body_contains"),
        ("logs", {"limit": ["1", "2"]}, "limit"),
        ("logs", {"from_date": ""}, "from_date"),
        (
            "slowQueryPatterns/1",
            {"db_name": "d", "db_user": "u", "db_operation": "SELECT", "timestamp": ""},
            "timestamp",
        ),
    ],
)
def test_bad_query_values_are_a_400_naming_them(
    api: httpx.Client, svc: dict[str, Any], route: str, params: dict[str, Any], name: str
) -> None:
    query = {**WINDOW, **params} if route != "slowQueryPatterns/1" else params
    msg = error(api.get(f"/postgres/{svc['id']}/{route}", params=query), 400)
    assert name in msg


# -- the checks beneath, without a sandbox ---------------------------------------------------


def test_patterns_have_their_ecma_meaning() -> None:
    tag = ecma_regex("^[a-zA-Z0-9._-]+$")
    assert tag.search("Environment") and not tag.search("k\n") and not tag.search("k\n\n")
    assert ecma_regex(r"^\d+$").search("12") and not ecma_regex(r"^\d+$").search("\u0661")
    assert ecma_regex(r"^a\$$").search("a$") and not ecma_regex(r"^a\$$").search("a$\n")
    assert ecma_regex("^[$]+$").search("$$")  # a `$` in a class is a dollar sign
    assert ecma_regex("[a-z]").search("xY1")  # unanchored patterns still search


def test_text_problem_names_the_character() -> None:
    assert text_problem("fine, ünïcode and emoji 🐘") is None
    assert text_problem("a\u0000b") == "contains a control character (U+0000)"
    assert text_problem("\u0085") == "contains a control character (U+0085)"
    assert text_problem("\udfff") == "contains a lone surrogate (U+DFFF)"
    assert text_problem("\u202egnp.exe") == "contains a bidirectional control (U+202E)"


@pytest.mark.parametrize(
    ("key", "kind", "value", "good"),
    [
        ("work_mem", "integer", "4MB", True),
        ("work_mem", "integer", " 4 MB ", True),
        ("work_mem", "integer", "4096", True),
        ("work_mem", "integer", "0x1000", True),
        ("work_mem", "integer", "1.5MB", True),  # PostgreSQL rounds
        ("work_mem", "integer", "4mb", False),  # units are case-sensitive
        ("work_mem", "integer", "4s", False),  # a time unit on a memory setting
        ("work_mem", "integer", "3000GB", False),  # past 2^31 kB
        ("work_mem", "integer", "lots", False),
        ("work_mem", "integer", "08", False),  # C's octal has no 8
        ("idle_session_timeout", "integer", "2min", True),
        ("idle_session_timeout", "integer", "2m", False),
        ("transaction_timeout", "integer", "-1", True),
        ("transaction_timeout", "integer", "1e3", True),
        ("transaction_timeout", "integer", "1e400", False),
        ("max_connections", "integer", "100", True),
        ("max_connections", "integer", "100kB", False),  # no unit at all
        ("random_page_cost", "real", "1.1", True),
        ("random_page_cost", "real", ".5", True),
        ("random_page_cost", "real", "nan", False),
        ("random_page_cost", "real", "inf", False),
        ("random_page_cost", "real", "1ms", False),
    ],
)
def test_values_as_postgresql_parses_them(key: str, kind: str, value: str, good: bool) -> None:
    assert (value_problem(key, kind, value) is None) == good, value_problem(key, kind, value)


def test_units_come_from_the_core_catalogue() -> None:
    # One copy of PostgreSQL's units: the sandbox's check reads the core's own tables,
    # and the core's typed_value gives a bare "1" exactly its key's base unit.
    assert pgvalues.UNIT_OF is pgparams.UNIT_OF
    assert pgvalues.MEMORY_UNITS is pgparams.MEMORY_UNITS
    assert pgvalues.TIME_UNITS is pgparams.TIME_UNITS
    for key in pgparams.PG_DEFAULTS:
        typed, kind = pgparams.typed_value("pgConfig", key, "1")
        if kind == "memory":
            assert pgparams.UNIT_OF[key] == ("memory", typed), key
        elif kind == "duration":
            assert pgparams.UNIT_OF[key] == ("time", typed.total_seconds() * 1000), key
        else:
            assert key not in pgparams.UNIT_OF, key


def test_the_units_need_no_pandas() -> None:
    # The sandbox's server reads them; pandas is the frames' (typed_value imports it).
    code = "import sys, pgcloud_nb.sandbox.api.pgvalues; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_body_cap_is_a_sandbox_choice() -> None:
    # 50 tags of the longest key and value, and every pgConfig key, stay far below it.
    body = {**CREATE, "tags": [{"key": "k" * 128, "value": "v" * 256}] * 50}
    assert len(json.dumps(body)) < MAX_BODY / 40
