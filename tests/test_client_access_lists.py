"""``Client.create_service(ip_access_list=…)``: the rules sent, checked before sending,
and stored, shown and enforced by the sandbox (docs/api-behaviour.md §12.2).

The body and the client-side checks run over httpx.MockTransport; the round trip
runs against the session's sandbox, whose server admits TCP clients only from the
rules' networks.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.provisioning import IpAccessRule
from pgcloud_nb.ratelimit import Budget

OFFICE: IpAccessRule = {"source": "10.0.0.0/8", "description": "office", "portRange": "5432"}
SERVICE = {"id": "33333333-3333-4333-8333-333333333333", "name": "svc", "state": "creating"}


def mock_client(bodies: list[Any]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"status": 200, "requestId": "r", "result": SERVICE})

    return Client(
        key_id="key-id",
        key_secret="secret",
        org_id="11111111-1111-4111-8111-111111111111",
        base_url="https://api.test",
        budget=Budget.unlimited(),
        transport=httpx.MockTransport(handler),
    )


def test_the_rules_are_sent_in_the_api_form() -> None:
    bodies: list[Any] = []
    client = mock_client(bodies)
    client.create_service(
        name="svc", region="us-east-1", size="r8gd.large", ip_access_list=[OFFICE, "203.0.113.7"]
    )
    client.create_service(name="closed", region="us-east-1", size="r8gd.large", ip_access_list=[])
    client.create_service(name="open", region="us-east-1", size="r8gd.large")
    assert bodies[0]["ipAccessList"] == [OFFICE, {"source": "203.0.113.7"}]
    assert bodies[1]["ipAccessList"] == []  # no address at all, not "the default"
    assert "ipAccessList" not in bodies[2]  # the API's default rules


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
    ],
)
def test_a_bad_rule_is_refused_before_sending(rules: Any, named: str) -> None:
    bodies: list[Any] = []
    with pytest.raises(ValueError, match=re.escape(named)):
        mock_client(bodies).create_service(
            name="svc", region="us-east-1", size="r8gd.large", ip_access_list=rules
        )
    assert bodies == []


@pytest.mark.parametrize("rules", ["10.0.0.0/8", OFFICE, [{"source": 10}]])
def test_a_list_of_rules_is_required(rules: Any) -> None:
    bodies: list[Any] = []
    with pytest.raises(TypeError):
        mock_client(bodies).create_service(
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


def test_the_sandbox_keeps_shows_and_enforces_the_rules(pg: Client) -> None:
    svc = pg.create_service(
        name=f"acl-{uuid.uuid4().hex[:8]}",
        region="us-east-1",
        size="r8gd.large",
        ip_access_list=[OFFICE, {"source": "192.168.0.0/16"}],
    )
    try:
        shown = (svc.model_extra or {})["ipAccessList"]
        assert [(r["source"], r["description"], r["portRange"]) for r in shown] == [
            ("10.0.0.0/8", "office", "5432"),
            ("192.168.0.0/16", "", "5432..6432"),  # every port of the service by default
        ]
        assert all(r["id"] for r in shown)
        running = pg.wait(svc.id, timeout=120, progress=False)
        assert (running.model_extra or {})["ipAccessList"] == shown
        # Neither network holds 127.0.0.1: the server refuses this machine's TCP client,
        # right password and all.
        with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
            pg.connect_service(svc.id, connect_timeout=5).close()
    finally:
        pg.delete_service(svc.id)
