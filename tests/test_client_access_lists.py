"""IP access rules through the Client: ``ip_access_list`` on create, read replica and
restore, ``ip_access_add``/``ip_access_remove`` on update; the rules sent, checked before
sending, and stored, shown and enforced by the sandbox (docs/api-behaviour.md §12.2).

The bodies and the client-side checks run over httpx.MockTransport; the round trips
run against the session's sandbox, whose server admits TCP clients only from the
rules' networks. What a lost PATCH of the rules resends is in tests/test_lost_answers.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fixtures.mockapi import mock_client

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.models import PostgresService
from pgcloud_nb.provisioning import IpAccessRule
from pgcloud_nb.ratelimit import Budget

OFFICE: IpAccessRule = {"source": "10.0.0.0/8", "description": "office", "portRange": "5432"}
HERE: IpAccessRule = {"source": "127.0.0.1/32", "description": "this machine"}
SERVICE = {"id": "33333333-3333-4333-8333-333333333333", "name": "svc", "state": "creating"}


def recording_client(bodies: list[Any]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"status": 200, "requestId": "r", "result": SERVICE})

    return mock_client(handler)


def test_the_rules_are_sent_in_the_api_form() -> None:
    bodies: list[Any] = []
    client = recording_client(bodies)
    client.create_service(
        name="svc", region="us-east-1", size="r8gd.large", ip_access_list=[OFFICE, "203.0.113.7"]
    )
    client.create_service(name="closed", region="us-east-1", size="r8gd.large", ip_access_list=[])
    client.create_service(name="open", region="us-east-1", size="r8gd.large")
    assert bodies[0]["ipAccessList"] == [OFFICE, {"source": "203.0.113.7"}]
    assert bodies[1]["ipAccessList"] == []  # no address at all, not "the default"
    assert "ipAccessList" not in bodies[2]  # the API's default rules


def test_a_replica_and_a_restore_send_the_same_form() -> None:
    bodies: list[Any] = []
    client = recording_client(bodies)
    target = "2026-01-01T00:00:00Z"
    client.create_read_replica(SERVICE["id"], name="r", ip_access_list=[OFFICE, "203.0.113.7"])
    client.create_read_replica(SERVICE["id"], name="r", ip_access_list=[])
    client.create_read_replica(SERVICE["id"], name="r")
    client.restore_service(SERVICE["id"], name="b", restore_target=target, ip_access_list=[OFFICE])
    client.restore_service(SERVICE["id"], name="b", restore_target=target, ip_access_list=[])
    client.restore_service(SERVICE["id"], name="b", restore_target=target)
    sent = [b.get("ipAccessList", "not sent") for b in bodies]
    # None: not sent, so the new service has its source's rules; [] admits no address.
    assert sent == [[OFFICE, {"source": "203.0.113.7"}], [], "not sent", [OFFICE], [], "not sent"]
    with pytest.raises(ValueError, match=re.escape("ip_access_list[1].source")):
        client.create_read_replica(SERVICE["id"], name="r", ip_access_list=[OFFICE, "x"])
    with pytest.raises(TypeError):
        client.restore_service(
            SERVICE["id"], name="b", restore_target=target, ip_access_list="10.0.0.0/8"
        )
    assert len(bodies) == 6


def test_an_update_sends_removals_and_additions() -> None:
    bodies: list[Any] = []
    client = recording_client(bodies)
    shown = {"id": "rule-1", "source": "0.0.0.0/0", "description": "", "portRange": "5432"}
    client.update_service(SERVICE["id"], ip_access_add=[OFFICE])
    client.update_service(SERVICE["id"], ip_access_remove=["rule-2", shown], name="n")
    client.update_service(SERVICE["id"], ip_access_remove=[shown], ip_access_add=["10.1.0.0/16"])
    assert bodies == [
        {"ipAccessList": {"add": [OFFICE]}},
        {"name": "n", "ipAccessList": {"remove": [{"id": "rule-2"}, {"id": "rule-1"}]}},
        {"ipAccessList": {"remove": [{"id": "rule-1"}], "add": [{"source": "10.1.0.0/16"}]}},
    ]


@pytest.mark.parametrize(
    ("change", "error", "named"),
    [
        ({"ip_access_add": ["10.0.0.0/8", "nowhere"]}, ValueError, "ip_access_add[1].source"),
        (
            {"ip_access_add": [{"source": "10.0.0.0/8", "portRange": "0"}]},
            ValueError,
            "ip_access_add[0].portRange",
        ),
        ({"ip_access_add": OFFICE}, TypeError, "ip_access_add"),
        ({"ip_access_remove": ["a", {"id": "a"}]}, ValueError, "ip_access_remove[1]: 'a'"),
        ({"ip_access_remove": [""]}, ValueError, "ip_access_remove[0]"),
        ({"ip_access_remove": [{"source": "10.0.0.0/8"}]}, ValueError, "ip_access_remove[0]"),
        ({"ip_access_remove": "rule-1"}, TypeError, "ip_access_remove"),
    ],
)
def test_a_bad_change_is_refused_before_sending(
    change: dict[str, Any], error: type[Exception], named: str
) -> None:
    bodies: list[Any] = []
    with pytest.raises(error, match=re.escape(named)):
        recording_client(bodies).update_service(SERVICE["id"], **change)
    assert bodies == []


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        (["example.com"], "ip_access_list[0].source"),
        (["fe80::1%eth0"], "ip_access_list[0].source"),
        ([OFFICE, {"source": "10.0.0.0/33"}], "ip_access_list[1].source"),
        ([{"source": "10.0.0.0/8", "portRange": "6432..5432"}], "ip_access_list[0].portRange"),
        ([{"source": "10.0.0.0/8", "portRange": "70000"}], "ip_access_list[0].portRange"),
        ([{"source": "10.0.0.0/8", "description": "two\nlines"}], "ip_access_list[0].description"),
        ([{"source": "10.0.0.0/8", "description": "x" * 256}], "ip_access_list[0].description"),
        ([{"source": "10.0.0.0/8", "port_range": "5432"}], "'port_range'"),
        (["10.0.0.1"] * 101, "at most 100 rules"),
        # the same network and ports twice: 10.1.2.3/8 is 10.0.0.0/8, no portRange every port
        ([OFFICE, {**OFFICE, "source": "10.1.2.3/8"}], "ip_access_list[1]: admits the same"),
        (["10.0.0.0/8", {"source": "10.0.0.0/8", "portRange": "5432..6432"}], "[1]: admits"),
    ],
)
def test_a_bad_rule_is_refused_before_sending(rules: Any, named: str) -> None:
    bodies: list[Any] = []
    with pytest.raises(ValueError, match=re.escape(named)):
        recording_client(bodies).create_service(
            name="svc", region="us-east-1", size="r8gd.large", ip_access_list=rules
        )
    assert bodies == []


@pytest.mark.parametrize("rules", ["10.0.0.0/8", OFFICE, [{"source": 10}]])
def test_a_list_of_rules_is_required(rules: Any) -> None:
    bodies: list[Any] = []
    with pytest.raises(TypeError):
        recording_client(bodies).create_service(
            name="svc", region="us-east-1", size="r8gd.large", ip_access_list=rules
        )
    assert bodies == []


@pytest.fixture(scope="module")
def pg(sandbox: Any) -> Iterator[Client]:
    with pgcloud_nb.connect(
        sandbox.key_id,
        sandbox.key_secret,
        base_url=sandbox.url,
        env_file=None,
        sandbox=False,
        budget=Budget.unlimited(),
    ) as client:
        yield client


@pytest.fixture(scope="module")
def closed(pg: Client) -> Iterator[PostgresService]:
    """A running service whose rules hold neither 127.0.0.1 nor every port."""
    svc = pg.create_service(
        name=f"acl-{uuid.uuid4().hex[:8]}",
        region="us-east-1",
        size="r8gd.large",
        ip_access_list=[OFFICE, {"source": "192.168.0.0/16"}],
    )
    try:
        yield svc
    finally:
        pg.delete_service(svc.id)


def shown(svc: PostgresService) -> list[dict[str, str]]:
    return list((svc.model_extra or {})["ipAccessList"])


def test_the_sandbox_keeps_shows_and_enforces_the_rules(
    pg: Client, closed: PostgresService
) -> None:
    rules = shown(closed)
    assert [(r["source"], r["description"], r["portRange"]) for r in rules] == [
        ("10.0.0.0/8", "office", "5432"),
        ("192.168.0.0/16", "", "5432..6432"),  # every port of the service by default
    ]
    assert all(r["id"] for r in rules)
    running = pg.wait(closed.id, timeout=120, progress=False)
    assert shown(running) == rules
    # Neither network holds 127.0.0.1: the server refuses this machine's TCP client,
    # right password and all.
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        pg.connect_service(closed.id, connect_timeout=30).close()


def test_an_update_changes_the_rules_in_force(pg: Client, closed: PostgresService) -> None:
    office, lan = shown(pg.wait(closed.id, timeout=120, progress=False))
    svc = pg.update_service(closed.id, ip_access_remove=[lan], ip_access_add=[HERE])
    assert [r["source"] for r in shown(svc)] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert shown(svc)[0] == office  # kept as it was, id included
    with pg.connect_service(closed.id, connect_timeout=30) as conn:  # in force at the answer
        assert conn.execute("SELECT 1").fetchone() == (1,)
    here = shown(svc)[1]
    again: IpAccessRule = {"source": lan["source"], "portRange": lan["portRange"]}  # no id
    back = pg.update_service(closed.id, ip_access_remove=[here["id"]], ip_access_add=[again])
    assert [r["source"] for r in shown(back)] == ["10.0.0.0/8", "192.168.0.0/16"]


def test_a_replica_and_a_restore_take_their_own_rules(pg: Client, closed: PostgresService) -> None:
    # Both copy the source's backups: wait for its first one (earliestRestoreTime).
    deadline = time.monotonic() + 180
    while not (target := (pg.get_service(closed.id).model_extra or {}).get("earliestRestoreTime")):
        assert time.monotonic() < deadline, "no base backup of the source"
        time.sleep(0.5)
    made = [pg.create_read_replica(closed.id, name="acl-replica", ip_access_list=[HERE])]
    try:
        made.append(
            pg.restore_service(
                closed.id, name="acl-restore", restore_target=target, ip_access_list=[]
            )
        )
        replica, restored = made
        # Their own rules, not the source's: stored with new ids, shown by GET.
        assert [(r["source"], r["portRange"]) for r in shown(replica)] == [
            ("127.0.0.1/32", "5432..6432")
        ]
        assert shown(restored) == []
        assert shown(pg.get_service(replica.id)) == shown(replica)
        assert shown(pg.get_service(restored.id)) == []
    finally:  # deleted while being made, they stop being made; then the source may go
        for svc in made:
            pg.delete_service(svc.id)
        for svc in made:
            pg.wait_gone(svc.id, timeout=120, progress=False)
