"""Regions: one list for the package, the sandbox's 400 for a region it does not serve,
and the knob that extends the list (setting, variable, flag)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from pgcloud_nb import cli, regions
from pgcloud_nb.sandbox import Settings
from pgcloud_nb.sandbox.api.app import create_app
from pgcloud_nb.sandbox.settings import parse_regions
from pgcloud_nb.widgets.create import REGION_SUGGESTIONS

BODY = {"provider": "aws", "region": "us-east-1", "size": "r8gd.large"}


def test_one_list_for_the_form_and_the_sandbox() -> None:
    assert REGION_SUGGESTIONS is regions.REGIONS
    # The regions the Managed Postgres docs show come first, for AWS.
    assert regions.known("aws")[: len(regions.SEEN)] == regions.SEEN
    assert regions.known("azure") == ()
    for provider, names in regions.REGIONS.items():
        assert len(set(names)) == len(names), provider


def test_accepts_by_provider_and_extra() -> None:
    assert regions.accepts("aws", "eu-west-1")
    assert not regions.accepts("aws", "us-central1")  # a GCP region on AWS
    assert regions.accepts("gcp", "us-central1")
    assert not regions.accepts("aws", "eu-north-1")
    assert regions.accepts("aws", "eu-north-1", ["eu-north-1"])
    assert regions.accepts("gcp", "eu-north-1", ["eu-north-1"])  # extra: every provider
    assert regions.accepts("aws", "mars-1", [regions.ANY])


def test_the_knob_from_variable_and_flag() -> None:
    assert parse_regions(" eu-north-1, ap-southeast-2 ,eu-north-1,") == (
        "eu-north-1",
        "ap-southeast-2",
    )
    assert parse_regions("*") == ("*",)
    with pytest.raises(ValueError, match="region"):
        parse_regions("eu north")
    s = Settings.from_env({"PGCLOUD_SANDBOX_REGIONS": "eu-north-1"})
    assert s.regions == ("eu-north-1",)
    assert Settings.from_env(s.to_env()).regions == ("eu-north-1",)
    assert Settings.from_env({}).regions == ()
    with pytest.raises(ValueError, match="PGCLOUD_SANDBOX_REGIONS"):
        Settings.from_env({"PGCLOUD_SANDBOX_REGIONS": "Mars;1"})
    args, _ = cli.build_parser().parse_known_args(
        ["sandbox", "start", "--regions", "me-central-1,*"]
    )
    assert cli._settings(args).regions == ("me-central-1", "*")


def test_an_unknown_region_is_a_400_naming_the_field(api: httpx.Client) -> None:
    for provider, region in (("aws", "eu-north-9"), ("aws", "us-central1"), ("gcp", "us-east-1")):
        name = f"region-{uuid.uuid4().hex[:6]}"
        body = {**BODY, "name": name, "provider": provider, "region": region}
        resp = api.post("/postgres", json=body)
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error.startswith("BAD_REQUEST: request body.region:") and region in error
        assert all(s["name"] != name for s in api.get("/postgres").json()["result"])


def test_the_knob_reaches_the_sandbox(sandbox_root: Path) -> None:
    # An org with no room left: a region the knob adds gets past the region check and
    # stops at the quota, so no server is made (and no lifespan is needed).
    settings = Settings(
        home=sandbox_root / "regions", rate_limit=0, regions=("eu-north-1",), max_services=0
    )
    app = create_app(settings)
    creds = app.state.sandbox.creds
    org = f"/v1/organizations/{creds.org_id}/postgres"

    async def create(region: str) -> str:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://sandbox",
            auth=(creds.key_id, creds.key_secret),
        ) as client:
            resp = await client.post(org, json={**BODY, "name": "north", "region": region})
        assert resp.status_code == 400, resp.text
        return str(resp.json()["error"])

    assert "request body.region" in asyncio.run(create("eu-north-9"))
    assert "limit of 0" in asyncio.run(create("eu-north-1"))
    app.state.sandbox.store.close()
