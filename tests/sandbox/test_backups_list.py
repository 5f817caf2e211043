"""The backups list (``GET …/postgres/{id}/backups``): the service's real base backups, newest
first, a page at a time through ``nextCursor``; the client method that pages, and the frame.

A sandbox of this module's own takes a base backup every two seconds, so a service
soon has enough of them to page through.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.frames import backups_frame
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings

WANTED = 4  # backups a service has before the tests look


@pytest.fixture(scope="module")
def backing_up(sandbox_root: Path) -> Iterator[SandboxInfo]:
    home = sandbox_root / "backups-list"
    settings = Settings(home=home, rate_limit=0, backup_interval=2.0, sample_interval=30.0)
    sb = Sandbox(home, settings)
    info = sb.start()
    yield info
    sb.stop()


@pytest.fixture(scope="module")
def api(backing_up: SandboxInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{backing_up.url}/v1/organizations/{backing_up.org_id}",
        auth=(backing_up.key_id, backing_up.key_secret),
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def sid(api: httpx.Client) -> Iterator[str]:
    body = {"name": "backed-up", "provider": "aws", "region": "us-east-1", "size": "r8gd.large"}
    created = api.post("/postgres", json=body)
    assert created.status_code == 200, created.text
    service_id = str(created.json()["result"]["id"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        page = api.get(f"/postgres/{service_id}/backups").json()
        if page.get("totalCount", 0) >= WANTED:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"fewer than {WANTED} backups after 180 s: {page}")
    yield service_id
    api.delete(f"/postgres/{service_id}")


def page(api: httpx.Client, sid: str, **params: Any) -> dict[str, Any]:
    resp = api.get(f"/postgres/{sid}/backups", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"status", "requestId", "result", "limit", "totalCount", "nextCursor"}
    return body


def times(items: list[dict[str, Any]], field: str = "lastModified") -> list[datetime]:
    return [datetime.fromisoformat(i[field]) for i in items]


def test_one_page_lists_every_backup_newest_first(api: httpx.Client, sid: str) -> None:
    body = page(api, sid)
    items = body["result"]
    assert body["limit"] == 100 and body["nextCursor"] is None
    assert body["totalCount"] == len(items) >= WANTED
    assert times(items) == sorted(times(items), reverse=True)
    assert len({i["key"] for i in items}) == len(items)
    for item in items:
        assert set(item) == {"key", "status", "lastModified", "startedAt", "sizeInBytes"}
        assert item["key"].startswith("base_") and item["status"] == "done"
        assert item["lastModified"].endswith("Z") and "." in item["lastModified"]  # ms, UTC
        started, ended = times([item], "startedAt")[0], times([item])[0]
        assert started <= ended
        # a base backup is a whole data folder: megabytes, never nothing
        assert item["sizeInBytes"] > 1_000_000


def test_pages_follow_next_cursor(api: httpx.Client, sid: str) -> None:
    before = [i["key"] for i in page(api, sid)["result"]]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        body = page(api, sid, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert body["limit"] == 2 and len(body["result"]) <= 2
        seen += body["result"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert len(body["result"]) == 2
    keys = [i["key"] for i in seen]
    assert len(set(keys)) == len(keys) and pages >= 2
    assert times(seen) == sorted(times(seen), reverse=True)
    # Backups taken meanwhile come first; every one listed before is still on some page.
    assert set(before) <= set(keys)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()}, "cursor"),
        ({"cursor": "x" * 5000}, "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    api: httpx.Client, sid: str, params: dict[str, str], named: str
) -> None:
    resp = api.get(f"/postgres/{sid}/backups", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith(f"BAD_REQUEST: {named}:")


def test_a_cursor_belongs_to_its_service(api: httpx.Client, sid: str) -> None:
    cursor = page(api, sid, limit=1)["nextCursor"]
    assert isinstance(cursor, str)
    other = str(uuid.uuid4())
    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**data, "s": other}).encode()).decode()
    resp = api.get(f"/postgres/{sid}/backups", params={"cursor": forged})
    assert resp.status_code == 400 and "cursor" in resp.json()["error"]
    twice = api.get(f"/postgres/{sid}/backups", params=[("cursor", cursor), ("cursor", cursor)])
    assert twice.status_code == 400 and "cursor" in twice.json()["error"]
    assert api.get(f"/postgres/{other}/backups").status_code == 404


def test_no_key_no_list(backing_up: SandboxInfo, sid: str) -> None:
    url = f"{backing_up.url}/v1/organizations/{backing_up.org_id}/postgres/{sid}/backups"
    assert httpx.get(url, timeout=30).status_code == 401


def test_the_client_pages_and_the_frame_is_typed(
    backing_up: SandboxInfo, api: httpx.Client, sid: str
) -> None:
    pg: Client = pgcloud_nb.connect(
        api_key=backing_up.key_id,
        api_secret=backing_up.key_secret,
        org_id=backing_up.org_id,
        base_url=backing_up.url,
        budget=Budget.unlimited(),
    )
    with pg:
        before = {i["key"] for i in page(api, sid)["result"]}
        sent = pg.request_count
        found = pg.list_backups(sid, limit=2)
        assert pg.request_count - sent >= 2  # it paged
        assert before <= {b.key for b in found}
        assert [b.last_modified for b in found] == sorted(
            (b.last_modified for b in found), reverse=True
        )
        assert all(b.last_modified and b.last_modified.tzinfo for b in found)
        assert len(pg.list_backups(sid, limit=2, max_backups=3)) == 3
        with pytest.raises(ValueError, match=r"1\.\.100"):
            pg.list_backups(sid, limit=101)

    frame = backups_frame(found)
    assert list(frame.columns) == ["key", "status", "lastModified", "startedAt", "sizeInBytes"]
    assert len(frame) == len(found)
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert str(frame["lastModified"].dt.tz) == "UTC"
    assert str(frame["sizeInBytes"].dtype) == "Int64"
    assert frame["lastModified"].is_monotonic_decreasing


# -- the client and the frame on the live API's shape (no sandbox) --------------------------

ORG = "11111111-1111-4111-8111-111111111111"
SID = "22222222-2222-4222-8222-222222222222"


def live_item(n: int) -> dict[str, Any]:
    # The three fields clickhousectl 0.5.0 reads; the live API sends no more, as far as known.
    return {"key": f"base_{n:024X}", "status": "done", "lastModified": f"2026-01-{n:02d}T00:00:00Z"}


def mock_client(pages: dict[str | None, dict[str, Any]], asked: list[dict[str, str]]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/organizations/{ORG}/postgres/{SID}/backups"
        asked.append(dict(request.url.params))
        body = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"status": 200, "requestId": "r", **body})

    return Client(
        key_id="k",
        key_secret="s",
        org_id=ORG,
        base_url="https://api.test",
        budget=Budget.unlimited(),
        transport=httpx.MockTransport(handler),
    )


def test_the_client_passes_cursors_unchanged_and_stops() -> None:
    asked: list[dict[str, str]] = []
    pages = {
        None: {"result": [live_item(9), live_item(8)], "limit": 2, "nextCursor": "c/1=="},
        "c/1==": {"result": [live_item(7)], "limit": 2, "totalCount": None, "nextCursor": None},
    }
    with mock_client(pages, asked) as pg:
        found = pg.list_backups(SID, limit=2)
    assert [b.key for b in found] == [live_item(n)["key"] for n in (9, 8, 7)]
    assert asked == [{"limit": "2"}, {"limit": "2", "cursor": "c/1=="}]
    assert found[0].size_in_bytes is None and found[0].started_at is None

    asked.clear()
    looping = {None: {"result": [live_item(3)], "nextCursor": "same"}}
    looping["same"] = looping[None]
    with mock_client(looping, asked) as pg:  # a server that goes round in circles
        assert len(pg.list_backups(SID)) == 2
    assert len(asked) == 2


def test_the_frame_of_the_live_shape_keeps_its_columns() -> None:
    frame = backups_frame([live_item(2), live_item(1)])
    assert list(frame.columns) == ["key", "status", "lastModified", "startedAt", "sizeInBytes"]
    assert frame["startedAt"].isna().all() and frame["sizeInBytes"].isna().all()
    assert str(frame["lastModified"].dt.tz) == "UTC"
    empty = backups_frame([])
    assert list(empty.columns) == list(frame.columns) and len(empty) == 0
