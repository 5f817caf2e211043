"""The live contract laid over the shipped spec: ipAccessList bodies, tags that need a
value, and unknown properties in the live API's own wording."""

from __future__ import annotations

from typing import Any

import pytest

from pgcloud_nb import spec
from pgcloud_nb.livecontract import OVERLAY, overlaid

CREATE = {"name": "a", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}
RULE = {"source": "10.0.0.0/8", "description": "office", "portRange": "5432"}


def messages(name: str, body: Any) -> list[str]:
    return [str(e) for e in spec.validate_body(name, body)]


def test_the_official_file_is_left_alone() -> None:
    official = spec.load()["components"]["schemas"]
    assert "ipAccessList" not in official["PostgresServicePostRequest"]["properties"]
    assert official["ResourceTagsV1"]["required"] == ["key"]
    live = overlaid(spec.load())["components"]["schemas"]
    for name in OVERLAY:
        assert name in official and name in live
    assert live["ResourceTagsV1"]["required"] == ["key", "value"]


@pytest.mark.parametrize(
    "schema",
    [
        "PostgresServicePostRequest",
        "PostgresServiceRestoreRequest",
        "PostgresServiceReadReplicaRequest",
    ],
)
def test_new_services_take_a_list_of_rules(schema: str) -> None:
    base = {**CREATE, "restoreTarget": "2026-01-01T00:00:00Z"}
    base = {k: v for k, v in base.items() if k in spec.schema(schema)["properties"]}
    assert messages(schema, {**base, "ipAccessList": [RULE, {"source": "::1"}]}) == []
    assert messages(schema, {**base, "ipAccessList": []}) == []  # --block-public-access
    assert messages(schema, {**base, "ipAccessList": [{**RULE, "portRange": "5432..6432"}]}) == []
    assert messages(schema, {**base, "ipAccessList": [{"description": "x"}]}) == [
        "BAD_REQUEST: request body.ipAccessList[0].source: is required"
    ]
    assert messages(schema, {**base, "ipAccessList": [{**RULE, "portRange": "all"}]}) == [
        "BAD_REQUEST: request body.ipAccessList[0].portRange: 'all' is not a valid value"
    ]
    assert messages(schema, {**base, "ipAccessList": [{**RULE, "id": "x"}]}) == [
        "request body property can't be validated: ipAccessList[0].id"
    ]
    too_many = [{"source": f"10.0.0.{i}"} for i in range(101)]
    assert messages(schema, {**base, "ipAccessList": too_many})[0].startswith(
        "BAD_REQUEST: request body.ipAccessList:"
    )


def test_patch_takes_add_and_remove() -> None:
    name = "PostgresServicePatchRequest"
    change = {"add": [RULE], "remove": [{"id": "8c5e0f0e-0000-4000-8000-000000000000"}]}
    assert messages(name, {"ipAccessList": change}) == []
    assert messages(name, {"ipAccessList": {}}) == []
    assert messages(name, {"ipAccessList": [RULE]}) == [
        "BAD_REQUEST: request body.ipAccessList: list is not a valid object"
    ]
    assert messages(name, {"ipAccessList": {"replace": [RULE]}}) == [
        "request body property can't be validated: ipAccessList.replace"
    ]
    assert messages(name, {"ipAccessList": {"remove": [{"source": "10.0.0.0/8"}]}}) == [
        "BAD_REQUEST: request body.ipAccessList.remove[0].id: is required",
        "request body property can't be validated: ipAccessList.remove[0].source",
    ]


def test_unknown_properties_in_the_live_wording() -> None:
    assert messages("PostgresServicePostRequest", {**CREATE, "storageSize": 59}) == [
        "request body property can't be validated: storageSize"
    ]
    assert messages("PostgresServicePatchRequest", {"id": "x"}) == [
        "request body property can't be validated: id"
    ]
    # Everything else keeps naming the field in the BAD_REQUEST form.
    assert messages("PostgresServicePatchRequest", {"haType": "multi"}) == [
        "BAD_REQUEST: request body.haType: 'multi' is not one of the allowed values"
    ]


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("PostgresServicePostRequest", {**CREATE, "tags": [{"key": "env"}]}),
        ("PostgresServicePatchRequest", {"tags": [{"key": "env"}]}),
        ("PostgresServiceReadReplicaRequest", {"name": "r", "tags": [{"key": "env"}]}),
    ],
)
def test_a_tag_needs_a_value(schema: str, body: dict[str, Any]) -> None:
    assert messages(schema, body) == ["BAD_REQUEST: request body.tags[0].value: is required"]
