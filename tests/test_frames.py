"""API results -> DataFrames: dtypes, column order, secrets, typed config values."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from pgcloud_nb.columns import TEXT_DTYPE
from pgcloud_nb.contract import property_kinds
from pgcloud_nb.frames import (
    config_frame,
    executions_frame,
    logs_frame,
    metrics_frame,
    services_frame,
    slow_queries_frame,
)
from pgcloud_nb.models import (
    PostgresInstanceUpdateConfigResponse,
    PostgresLogEntry,
    PostgresMetrics,
    PostgresService,
    PostgresServiceListItem,
    PostgresSlowQueryPattern,
)
from pgcloud_nb.pgparams import PG_DEFAULTS

UTC = pd.DatetimeTZDtype("us", "UTC")
TEXT = pd.Series(pd.array([], dtype=TEXT_DTYPE)).dtype  # "str" on pandas 3
ITEM: dict[str, Any] = {
    "id": "67b4f3c1-0000-4000-8000-000000000001", "name": "my postgres", "provider": "aws",
    "region": "us-west-2", "postgresVersion": "18", "size": "r8gd.large", "storageSize": "118",
    "haType": "none", "state": "running", "createdAt": "2026-05-25T16:42:16+00:00",
    "isPrimary": True, "tags": [{"key": "Environment", "value": "production"}],
}  # fmt: skip
CREATED: dict[str, Any] = {
    **ITEM, "id": "67b4f3c1-0000-4000-8000-000000000002", "name": "fresh", "state": "creating",
    "size": "c6gd.large", "tags": [{"key": "Team", "value": "data"}], "createdAt": None,
    "password": "Sup3rSecretPassw0rd", "hostname": "fresh-67b4.pg.example",
    "connectionString": "postgres://postgres:Sup3rSecretPassw0rd@fresh-67b4.pg.example:5432/postgres",
}  # fmt: skip
FIXED = [
    "id", "name", "state", "provider", "region", "postgresVersion", "size", "haType",
    "isPrimary", "createdAt", "storageSize", "vcpus", "memoryGib", "storageGib",
]  # fmt: skip


def test_services_frame_types_and_order() -> None:
    frame = services_frame([ITEM, CREATED])
    assert list(frame.columns) == [*FIXED, "hostname", "tag.Environment", "tag.Team"]
    for col in ("state", "provider", "postgresVersion", "size", "haType", "tag.Team"):
        assert isinstance(frame[col].dtype, pd.CategoricalDtype), col
    # categories come from the spec's enums, so every state is there even if unseen
    assert "replaying_wal" in frame["state"].cat.categories
    assert frame["createdAt"].dtype == UTC
    assert frame.loc[0, "createdAt"] == pd.Timestamp("2026-05-25T16:42:16Z")
    assert pd.isna(frame.loc[1, "createdAt"])
    assert frame["storageSize"].dtype == "Int64" and frame.loc[0, "storageSize"] == 118
    assert frame.loc[0, ["vcpus", "memoryGib", "storageGib"]].tolist() == [2, 16.0, 118]
    assert frame.loc[1, "vcpus"] == 2 and frame.loc[1, "memoryGib"] == 4.0
    assert frame["isPrimary"].dtype == "boolean"
    assert frame.loc[0, "tag.Environment"] == "production" and pd.isna(
        frame.loc[1, "tag.Environment"]
    )


def test_services_frame_never_holds_secrets() -> None:
    for frame in (services_frame([ITEM, CREATED]),
                  services_frame([PostgresService.model_validate(CREATED)])):  # fmt: skip
        assert not {"password", "connectionString"} & set(frame.columns)
        text = frame.to_csv() + frame.to_html() + repr(frame)
        assert "Sup3rSecretPassw0rd" not in text


def test_models_and_dicts_give_the_same_frame() -> None:
    from_dicts = services_frame([ITEM])
    from_models = services_frame([PostgresServiceListItem.model_validate(ITEM)])
    pd.testing.assert_frame_equal(from_models, from_dicts)


def test_unknown_values_are_kept() -> None:
    frame = services_frame([{**ITEM, "size": "future-size", "state": "hibernating"}])
    assert frame.loc[0, "size"] == "future-size" and pd.isna(frame.loc[0, "vcpus"])
    assert frame.loc[0, "state"] == "hibernating"


def test_empty_services_frame_keeps_its_columns() -> None:
    frame = services_frame([])
    assert list(frame.columns) == FIXED and len(frame) == 0
    assert frame["createdAt"].dtype == UTC


MESSAGE = (
    "The changes in the following parameters require a database restart to take effect: "
    "max_connections, work_mem. You can restart the database by using the restart endpoint."
)


def test_config_frame_typed_values_restart_and_source() -> None:
    response = PostgresInstanceUpdateConfigResponse.model_validate({
        "pgConfig": {"max_connections": "42", "work_mem": "4MB", "statement_timeout": "60s",
                     "random_page_cost": "1.1", "wal_compression": "lz4", "min_wal_size": 80,
                     "idle_session_timeout": "2000", "autovacuum_work_mem": "-1"},
        "pgBouncerConfig": {"default_pool_size": "16", "listen_port": "6432"},
        "message": MESSAGE,
    })  # fmt: skip
    frame = config_frame(response)
    assert list(frame.columns) == ["section", "key", "value", "raw", "kind", "needs_restart",
                                   "source"]  # fmt: skip
    row = frame.set_index("key")
    assert row.loc["max_connections", "value"] == 42
    assert row.loc["work_mem", "value"] == 4 * 2**20
    assert row.loc["min_wal_size", "value"] == 80 * 2**20  # bare number: MB for this key
    assert row.loc["statement_timeout", "value"] == pd.Timedelta(seconds=60)
    assert row.loc["idle_session_timeout", "value"] == pd.Timedelta(milliseconds=2000)
    assert row.loc["random_page_cost", "value"] == 1.1
    assert row.loc["wal_compression", ["value", "kind"]].tolist() == ["lz4", "text"]
    assert row.loc["autovacuum_work_mem", "value"] == -1
    assert row.loc["default_pool_size", "value"] == 16
    assert row.loc["work_mem", "raw"] == "4MB"
    # restart: from the documented set and from the API's message
    restart = set(frame.loc[frame["needs_restart"], "key"])
    assert {"max_connections", "work_mem", "max_worker_processes", "listen_port"} <= restart
    assert "statement_timeout" not in restart
    # defaults fill the 31 keys; user keys say so
    pg = frame[frame["section"] == "pgConfig"]
    assert len(pg) == len(PG_DEFAULTS) == 31
    assert row.loc["max_connections", "source"] == "user"
    assert row.loc["max_wal_size", "source"] == "default"
    assert frame.attrs["message"] == MESSAGE


def test_config_frame_null_values_stay_null() -> None:
    frame = config_frame({"pgConfig": {"work_mem": None}, "pgBouncerConfig": {}}, defaults=False)
    assert frame["value"].tolist() == [None] and pd.isna(frame.loc[0, "raw"])


def test_config_frame_from_a_get_without_defaults() -> None:
    frame = config_frame({"pgConfig": {"max_connections": "100"}, "pgBouncerConfig": None},
                         defaults=False)  # fmt: skip
    assert frame["key"].tolist() == ["max_connections"]
    assert frame["needs_restart"].tolist() == [True]
    assert frame["needs_restart"].dtype == bool


def test_metrics_frame() -> None:
    metrics = PostgresMetrics.model_validate({"metrics": [
        {"key": "cpu_usage", "name": "CPU", "unit": "%", "description": "CPU usage",
         "series": [{"label": "user", "dataPoints": [{"timestamp": 1780000000, "value": 1.5},
                                                     {"timestamp": 1780000060, "value": 2}]},
                    {"label": "system", "dataPoints": [{"timestamp": 1780000000, "value": 0.5}]}]},
        {"key": "connection_count", "name": "Connections", "unit": "count", "description": "",
         "series": [{"label": "active", "dataPoints": [{"timestamp": 1780000000, "value": 3}]}]},
    ]})  # fmt: skip
    frame = metrics_frame(metrics)
    assert list(frame.columns) == ["timestamp", "key", "name", "unit", "label", "value"]
    assert frame["timestamp"].dtype == UTC
    assert frame.loc[0, "timestamp"] == pd.Timestamp(1780000000, unit="s", tz="UTC")
    assert frame["value"].tolist() == [1.5, 2.0, 0.5, 3.0]
    assert frame["value"].dtype == "float64"
    assert isinstance(frame["key"].dtype, pd.CategoricalDtype)
    assert frame.attrs["descriptions"]["cpu_usage"] == "CPU usage"
    assert len(metrics_frame({"metrics": []})) == 0


PATTERN: dict[str, Any] = {
    "queryId": "-4748036479882663975", "queryText": "select 1", "dbName": "postgres",
    "dbUser": "postgres", "dbOperation": "SELECT", "app": "psql", "callCount": "12",
    "errorCount": 0, "totalDurationUs": 1200, "avgDurationUs": 100, "maxDurationUs": 300,
    "p50DurationUs": 90, "p95DurationUs": 250, "p99DurationUs": 290, "totalRows": 12,
    "totalSharedBlksRead": 0, "totalSharedBlksHit": 24, "totalCpuTimeUs": 800, "totalWalBytes": 0,
}  # fmt: skip


def test_slow_queries_frame() -> None:
    frame = slow_queries_frame([PostgresSlowQueryPattern.model_validate(PATTERN), PATTERN])
    assert list(frame.columns)[:5] == ["queryId", "dbName", "dbUser", "dbOperation", "app"]
    assert frame.columns[-1] == "queryText"
    assert frame["queryId"].tolist() == ["-4748036479882663975"] * 2  # an id, kept as text
    assert frame["callCount"].dtype == "Int64" and frame["callCount"].tolist() == [12, 12]
    assert isinstance(frame["dbOperation"].dtype, pd.CategoricalDtype)


def test_executions_frame() -> None:
    execution = {**{k: 0 for k in ("durationUs", "rows", "walBytes")}, "timestamp":
                 "2026-05-25T16:42:16.123Z", "queryId": "1", "dbName": "d", "dbUser": "u",
                 "dbOperation": "SELECT", "app": "a", "queryText": "q", "pid": "4242",
                 "serverRole": "primary"}  # fmt: skip
    worker = {**execution, "pid": "worker-12"}  # the spec types pid as a string
    frame = executions_frame({"aggregate": PATTERN, "recentExecutions": [execution, worker]})
    assert frame["pid"].tolist() == ["4242", "worker-12"] and frame["pid"].dtype == TEXT
    assert frame["timestamp"].dtype == UTC
    assert list(frame.columns)[:3] == ["timestamp", "queryId", "dbName"]


def test_logs_frame_orders_severities() -> None:
    entries = [
        PostgresLogEntry.model_validate({"timestamp": "2026-05-25T16:42:16Z", "severity": "LOG",
                                         "body": "checkpoint starting"}),
        {"timestamp": "2026-05-25T16:42:17+00:00", "severity": "ERROR", "body": '{"a": 1}'},
        {"timestamp": "2026-05-25T16:42:18Z", "severity": "WEIRD", "body": "x"},
    ]  # fmt: skip
    frame = logs_frame(entries)
    assert list(frame.columns) == ["timestamp", "severity", "body"]
    assert frame["severity"].cat.ordered
    assert frame.loc[frame["severity"] >= "WARNING", "body"].tolist() == ['{"a": 1}', "x"]
    assert frame["timestamp"].dtype == UTC


@pytest.mark.parametrize("bad", [42, "text", None])
def test_frames_reject_what_is_not_an_api_object(bad: object) -> None:
    with pytest.raises(TypeError):
        services_frame([bad])


def test_columns_are_typed_from_the_spec() -> None:
    # Every column of the frames has the dtype its field's type in the spec calls for.
    expected = {"integer": {"Int64"}, "number": {"Float64"}, "boolean": {"boolean"},
                "date-time": {"datetime64[us, UTC]"},
                "string": {str(TEXT), "category"}}  # fmt: skip
    frames = {
        "PostgresService": services_frame([ITEM]),
        "PostgresSlowQueryPattern": slow_queries_frame([PATTERN]),
        "PostgresQueryExecution": executions_frame([]),
        "PostgresLogEntry": logs_frame([]),
    }
    checked = 0
    for component, frame in frames.items():
        for column, kind in property_kinds(component).items():
            if column not in frame:
                continue  # secrets, lists, fields a record did not carry
            allowed = expected.get(kind, {"category"})  # enum:<name> is a categorical
            assert str(frame[column].dtype) in allowed, (component, column, kind)
            checked += 1
    assert checked >= 70


BIG = 2**64 + 1  # legal JSON and legal for the spec's "integer"


def test_integers_past_int64_are_kept_as_floats() -> None:
    patterns = slow_queries_frame([{**PATTERN, "totalWalBytes": BIG}, PATTERN])
    assert patterns["totalWalBytes"].dtype == "Float64"
    assert patterns.loc[0, "totalWalBytes"] == float(BIG)
    assert patterns["callCount"].dtype == "Int64"  # the other columns keep their type
    past_float = slow_queries_frame([{**PATTERN, "totalRows": 10**400}])
    assert past_float.loc[0, "totalRows"] == float("inf")
    points = [{"timestamp": BIG, "value": BIG}, {"timestamp": 1780000000, "value": 10**400}]
    series = [{"label": "l", "dataPoints": points}]
    metrics = metrics_frame({"metrics": [{"key": "k", "name": "n", "unit": "u", "series": series}]})
    assert pd.isna(metrics.loc[0, "timestamp"]) and metrics.loc[0, "value"] == float(BIG)
    assert metrics.loc[1, "value"] == float("inf")
    config = config_frame({"pgConfig": {"statement_timeout": BIG, "work_mem": BIG},
                           "pgBouncerConfig": {}}, defaults=False)  # fmt: skip
    row = config.set_index("key")
    assert row.loc["statement_timeout", ["value", "kind"]].tolist() == [str(BIG), "text"]
    assert row.loc["work_mem", "value"] == BIG * 1024  # bytes, exact


def test_values_that_are_not_their_type_become_na() -> None:
    odd = [{**PATTERN, "callCount": v} for v in ("NaN", "inf", "", "abc", None, "12", 5.0)]
    frame = slow_queries_frame(odd)
    assert frame["callCount"].dtype == "Float64"  # inf is no Int64
    values = frame["callCount"].tolist()
    assert values[1] == float("inf") and values[5:] == [12.0, 5.0]
    assert all(pd.isna(v) for v in (values[0], *values[2:5]))
    logs = logs_frame([
        {"timestamp": t, "severity": "LOG", "body": "x"}
        for t in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "2016-12-31T23:59:60Z",
                  "2026-05-25t16:42:16.123456789z", "2026-02-30T00:00:00Z", "yesterday", None)
    ])  # fmt: skip
    stamps = logs["timestamp"].tolist()
    assert stamps[0] == pd.Timestamp("0001-01-01", tz="UTC")
    # in UTC past year 9999, which datetime cannot hold: pandas' µs timestamps can
    assert stamps[1] == pd.Timestamp("9999-12-31T23:59:59Z") + pd.Timedelta(hours=12).as_unit("us")
    assert stamps[2] == pd.Timestamp("2016-12-31T23:59:59.999999Z")  # the leap second
    assert stamps[3] == pd.Timestamp("2026-05-25T16:42:16.123456Z")
    assert all(pd.isna(s) for s in stamps[4:])


def test_text_a_frame_cannot_store_is_repaired() -> None:
    # A lone surrogate is legal JSON ("\\ud800") but no UTF-8: pandas' Arrow strings refuse it.
    frame = logs_frame([{"timestamp": "2026-05-25T16:42:16Z", "severity": "LOG\ud800",
                         "body": "a\udfffb", "extra\ud800": "x"}])  # fmt: skip
    assert frame.loc[0, "body"] == "a\ufffdb" and frame.loc[0, "severity"] == "LOG\ufffd"
    assert "extra\ufffd" in frame.columns


def test_extra_fields_never_clash_with_derived_columns() -> None:
    frame = services_frame([{**ITEM, "vcpus": 96, "nested": [[1, 2], [3, 4]]}])
    assert frame.loc[0, "vcpus"] == 96  # the API's own field wins over the size table
    assert frame.loc[0, "nested"] == [[1, 2], [3, 4]]
    assert services_frame([{**ITEM, "tags": None}])["id"].tolist() == [ITEM["id"]]


# --- readable display ---------------------------------------------------------------------


def test_readable_shows_ids_bytes_and_numbers_compactly_and_leaves_the_frame() -> None:
    from pgcloud_nb.tables import readable

    frame = services_frame([ITEM, {**CREATED, "name": "<b>bold</b> & co"}]).assign(
        memory_limit_bytes=pd.array([17179869184, None], dtype="Int64"),
        cpu_percent=[12.3456, float("nan")],
        commits=[3458400.0, 0.004975],
        uptime=[pd.Timedelta(seconds=3725), pd.NaT],
    )
    before = frame.copy()
    html = readable(frame)._repr_html_()
    pd.testing.assert_frame_equal(frame, before)  # the display changes, the frame does not
    assert 'title="67b4f3c1-0000-4000-8000-000000000001"' in html
    assert "><code>67b4f3c1…</code></td>" in html
    assert ">67b4f3c1-0000" not in html  # no whole UUID to wrap over lines
    assert 'title="17,179,869,184 bytes"' in html and ">16.0 GiB</td>" in html
    assert ">12.35</td>" in html and ">3,458,400</td>" in html and ">0.004975</td>" in html
    # JupyterLab's CSS lets td and th wrap: each cell says nowrap itself
    cells = re.findall(r"<t[dh](?: [^>]*)?>", html)
    assert len(cells) > 20 and all("white-space:nowrap" in c for c in cells)
    assert ">1h 2m 5s</td>" in html and ">2026-05-25 16:42:16</td>" in html
    assert "e+" not in html and "nan" not in html.lower() and "NaT" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html and "<b>bold" not in html
    assert 'style="overflow-x:auto;max-width:100%"' in html and "white-space:nowrap" in html
    assert repr(readable(frame)) == repr(frame)


def test_readable_names_the_unit_of_a_long_metrics_frame() -> None:
    from pgcloud_nb.tables import readable

    metrics = PostgresMetrics.model_validate({"metrics": [
        {"key": "mem", "name": "Memory", "unit": "bytes", "description": "d",
         "series": [{"label": "used", "dataPoints": [{"timestamp": 1780000000, "value": 2**31}]}]},
        {"key": "io", "name": "Writes", "unit": "bytes/s", "description": "d",
         "series": [{"label": "w", "dataPoints": [{"timestamp": 1780000000, "value": 1536}]}]},
        {"key": "cpu", "name": "CPU", "unit": "%", "description": "d",
         "series": [{"label": "cpu", "dataPoints": [{"timestamp": 1780000000, "value": 42.5}]}]},
    ]})  # fmt: skip
    html = readable(metrics_frame(metrics))._repr_html_()
    assert ">2.0 GiB</td>" in html and ">1.5 KiB/s</td>" in html and ">42.50</td>" in html
