"""Nothing to show: no services, no metrics, no tags, a filter matching nothing, no samples.

Every frame function keeps its columns and dtypes on empty input, the metrics
functions return empty frames instead of raising, and every widget builds,
renders and exports with nothing in it. A filter that matches nothing raised
``TypeError: Cannot perform reduction 'any' with string dtype`` on pandas 3;
these run on pandas 2.2 and 3 alike. No sandbox: the API is the in-process fake.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from fixtures.mockapi import FakeApi

from pgcloud_nb.frames import (
    backups_frame,
    config_frame,
    executions_frame,
    logs_frame,
    metrics_frame,
    services_frame,
    slow_queries_frame,
)
from pgcloud_nb.history import History
from pgcloud_nb.metrics import (
    RATE_COLUMNS,
    concat_scrapes,
    derived,
    fleet_snapshot,
    key_metrics,
    parse_prometheus,
    rates,
)
from pgcloud_nb.tables import html_table, readable
from pgcloud_nb.widgets import ConfigEditor, DeleteButton, FleetTable, ServicePicker, TagEditor
from pgcloud_nb.widgets.fleetview import export_frame, fleet_html, matches

pytestmark = pytest.mark.timeout(120)

UTC = pd.DatetimeTZDtype("us", "UTC")
ITEM = {
    "id": "67b4f3c1-0000-4000-8000-000000000001", "name": "untagged", "provider": "aws",
    "region": "us-east-1", "postgresVersion": "18", "size": "r8gd.large", "haType": "none",
    "state": "running", "createdAt": "2026-05-25T16:42:16+00:00", "isPrimary": True,
}  # fmt: skip


# --- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "first", "dtypes"),
    [
        (lambda: services_frame([]), ["id", "name", "state"], {"createdAt": UTC, "vcpus": "Int64"}),
        (lambda: config_frame({}, defaults=False), ["section", "key", "value"], {}),
        (lambda: config_frame({"pgConfig": {}, "pgBouncerConfig": {}}, defaults=False),
         ["section", "key"], {}),
        (lambda: metrics_frame({}), ["timestamp", "key"], {"timestamp": UTC, "value": "float64"}),
        (lambda: metrics_frame({"metrics": []}), ["timestamp"], {"timestamp": UTC}),
        (lambda: metrics_frame({"metrics": [{"key": "cpu", "series": []}]}), ["timestamp"], {}),
        (lambda: slow_queries_frame([]), ["queryId", "dbName"], {}),
        (lambda: executions_frame({}), ["timestamp", "queryId"], {"timestamp": UTC}),
        (lambda: executions_frame({"recentExecutions": None}), ["timestamp"], {}),
        (lambda: executions_frame([]), ["timestamp"], {}),
        (lambda: logs_frame([]), ["timestamp", "severity", "body"], {"timestamp": UTC}),
        (lambda: backups_frame([]), ["key", "status"], {"sizeInBytes": "Int64"}),
    ],
)  # fmt: skip
def test_every_frame_keeps_its_columns_when_empty(
    make: object, first: list[str], dtypes: dict[str, object]
) -> None:
    frame = make()  # type: ignore[operator]
    assert len(frame) == 0 and list(frame.columns)[: len(first)] == first
    for column, dtype in dtypes.items():
        assert frame[column].dtype == dtype, column
    assert readable(frame)._repr_html_().count("<tr>") == 1  # just the header
    assert not matches(frame, "anything").any()


def test_a_config_with_nothing_set_is_the_defaults() -> None:
    frame = config_frame({})
    assert len(frame) > 0 and set(frame["source"]) == {"default"}


def test_services_without_tags_have_no_tag_columns() -> None:
    frame = services_frame([ITEM, {**ITEM, "tags": []}, {**ITEM, "tags": None}])
    assert not [c for c in frame.columns if c.startswith("tag.")] and len(frame) == 3
    rows = fleet_html(frame).split("<tbody>")[1].split("</tr>")[:-1]
    assert [re.findall(r"<td[^>]*>([^<]*)</td>", row)[-1] for row in rows] == ["", "", ""]


# --- metrics ----------------------------------------------------------------------------------


def test_the_metrics_functions_take_no_metrics() -> None:
    empty = parse_prometheus("")
    assert len(empty) == 0 and empty["timestamp"].dtype == UTC
    assert len(rates(empty)) == 0 and len(derived(empty)) == 0
    assert len(key_metrics(empty)) == 0 and "memory_limit_bytes" in key_metrics(empty)
    none = concat_scrapes([])
    assert len(none) == 0 and list(none.columns) == list(empty.columns)
    history = History()
    assert history.add(empty) == 0 and len(history.derived(last=2)) == 0


def test_a_snapshot_of_no_services_has_the_columns_of_a_full_one() -> None:
    with FakeApi(0).client() as client:
        empty = fleet_snapshot(client, history=History())
    with FakeApi(1).client() as client:
        one = fleet_snapshot(client, history=History())
    assert len(empty) == 0 and empty.attrs["requests"] == 2
    assert list(empty.columns) == [c for c in one.columns if not c.startswith("tag.")]
    assert set(RATE_COLUMNS) <= set(empty.columns)


def test_a_service_with_no_samples_shows_blanks() -> None:
    # the org endpoint answers for the first service only: the others have no samples
    api = FakeApi(3, org_limit=1)
    with api.client() as client:
        table = FleetTable(client)
        api.k += 1
        table.refresh()
    frame = table.frame
    assert frame["memory_used_percent"].notna().tolist() == [True, False, False]
    assert frame["connections"].dtype == "Int64" and frame["cpu_percent"].isna().tolist()[1:]
    html = table.table.value
    assert html.count("<tr>") == 4
    assert "nan" not in html.lower() and "&lt;NA&gt;" not in html and "NaT" not in html
    assert "<NA>" not in html_table(frame)


# --- the fleet table ---------------------------------------------------------------------------


def test_a_fleet_table_of_no_services(tmp_path: Path) -> None:
    with FakeApi(0).client() as client:
        table = FleetTable(client)
        assert "No services in this organization." in table.table.value
        assert "0 of 0 services" in table.status.value
        table.state.value = "running"
        table.filter.value = "x"  # the TypeError of pandas 3, on an empty frame
        assert table.view().empty and not table.errors.outputs
        table.sort_by.value = "cpu_percent"
        table.ascending.value = False
        for fmt in ("csv", "parquet"):
            written = table.export(fmt, tmp_path)
            back = pd.read_csv(written) if fmt == "csv" else pd.read_parquet(written)
            assert len(back) == 0 and list(back.columns) == list(table.frame.columns)
        table.close()


def test_a_filter_that_matches_nothing() -> None:
    with FakeApi(3).client() as client:
        table = FleetTable(client)
        table.filter.value = "no-such-service"
        assert table.view().empty and "No service matches." in table.table.value
        assert "0 of 3 services" in table.status.value and not table.errors.outputs
        table.state.value = "deleting"  # a state no service is in, with the filter on
        table.filter.value = "pg-"
        assert table.view().empty and not table.errors.outputs
        table.state.value = "(all)"
        assert len(table.view()) == 2  # pg-001, pg-002


def test_export_frame_of_nothing_keeps_the_columns() -> None:
    frame = services_frame([])
    out = export_frame(frame)
    assert list(out.columns) == list(frame.columns) and len(out) == 0


# --- the other widgets, on an organization with no services ------------------------------------


def test_the_service_widgets_with_no_services_to_pick() -> None:
    with FakeApi(0).client() as client:
        picker = ServicePicker(client)
        assert picker.value is None and not picker.services and not picker.errors.outputs
        editors = [TagEditor(client, picker), ConfigEditor(client, picker)]
        editors.append(DeleteButton(client, picker))
        for editor in editors:
            assert not editor.errors.outputs, type(editor).__name__
            editor.close()
        picker.close()
