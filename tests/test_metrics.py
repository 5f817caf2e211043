"""Prometheus text -> long frame, rates, derived series, History, fleet snapshot."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.mockapi import FakeApi
from fixtures.synth import FAMILIES, exposition, services
from prometheus_client.parser import text_string_to_metric_families

from pgcloud_nb.errors import PrometheusParseError
from pgcloud_nb.history import History
from pgcloud_nb.metrics import (
    concat_scrapes,
    derived,
    fleet_snapshot,
    key_metrics,
    parse_prometheus,
    rates,
)

PROM = Path(__file__).parent / "fixtures" / "prometheus"
T0 = pd.Timestamp("2026-06-01T12:00:00Z")
BASE = ["timestamp", "service_id", "service_name", "metric"]


def _scrapes(n_services: int, ks: range, **kw: object) -> list[pd.DataFrame]:
    svcs = services(n_services)
    return [
        parse_prometheus(exposition(svcs, k, **kw), timestamp=T0 + pd.Timedelta(minutes=k))  # type: ignore[arg-type]
        for k in ks
    ]


# --- parsing -----------------------------------------------------------------------------


def test_data_sheet_sample() -> None:
    frame = parse_prometheus((PROM / "datasheet.prom").read_text(), timestamp=T0)
    assert list(frame.columns) == [*BASE, "state", "postgres_status", "postgres_version", "value"]
    assert frame["timestamp"].dtype == pd.DatetimeTZDtype("us", "UTC")
    assert (frame["timestamp"] == T0).all()
    for col in ("service_id", "service_name", "metric", "state"):
        assert isinstance(frame[col].dtype, pd.CategoricalDtype)
    assert frame["value"].tolist() == [1.0, 1.0, 4.0, 100.0]
    assert frame["state"].tolist()[1:3] == ["active", "idle"]
    assert frame.loc[0, "postgres_version"] == "18"
    assert frame.attrs["org_id"] == "<org-uuid>"
    assert frame.attrs["types"]["PostgresServer_CacheHitRatio"] == "gauge"
    assert frame.attrs["help"]["PostgresServer_ActiveConnections"] == (
        "Number of active connections by state."
    )


def test_sandbox_org_scrape() -> None:
    """A real scrape of the sandbox's org endpoint (two services, one with a name that
    needs escapes), parsed as prometheus_client parses it, sample for sample."""
    text = (PROM / "sandbox_org.prom").read_text()
    frame = parse_prometheus(text, timestamp=T0)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert set(frame["metric"].astype(str)) == families
    assert len(set(frame["metric"].astype(str))) == 22  # every metric of the data sheet
    assert sorted(set(frame["service_name"].astype(str))) == ['fixture "b"\\x', "fixture-a"]
    theirs = sorted(
        (s.labels["postgres_service"], s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    )
    ours = sorted(zip(frame["service_id"].astype(str), frame["value"], strict=True))
    assert ours == theirs
    assert (frame["metric"].astype(str) == "PostgresServer_CPUSeconds_Total").any()


def test_total_names_are_kept_where_prometheus_client_renames_them() -> None:
    text = exposition(services(2))
    ours = set(parse_prometheus(text)["metric"].cat.categories)
    assert "PostgresServer_CPUSeconds_Total" in ours
    assert {f[0] for f in FAMILIES} == ours
    theirs = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert "PostgresServer_CPUSeconds_Total_total" in theirs  # renamed...
    assert "PostgresServer_CPUSeconds_Total" not in theirs  # ...so it no longer matches the API


def test_org_payload_matches_prometheus_client_sample_for_sample() -> None:
    text = exposition(services(100), 3)
    frame = parse_prometheus(text)
    assert len(frame) == 100 * 32
    labels = ("mode", "state", "database", "postgres_status", "postgres_version")
    ours = {
        (str(r["metric"]), str(r["service_id"]), str(r["service_name"]),
         *(None if pd.isna(r[c]) else str(r[c]) for c in labels)): r["value"]
        for r in frame.to_dict("records")
    }  # fmt: skip
    theirs = {
        (fam.name, s.labels["postgres_service"], s.labels["postgres_service_name"],
         *(s.labels.get(c) for c in labels)): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }  # fmt: skip
    assert ours == theirs


def test_escapes_special_values_timestamps_and_odd_spacing() -> None:
    text = (
        "# HELP m A help with a \\\\ backslash\\nand a newline.\n"
        "# TYPE m gauge\n"
        "# a plain comment\n"
        'm{postgres_service="s",postgres_service_name="a \\"q\\" \\\\ b\\nc",k="v",} NaN\n'
        'm{postgres_service="s2",postgres_service_name="x"} +Inf 1700000000123\n'
        'm { postgres_service = "s3" , postgres_service_name="y" } -Inf\n'
        "bare_metric 1.5e3\r\n"
        "   \n"
    )
    frame = parse_prometheus(text, timestamp=T0)
    assert frame.loc[0, "service_name"] == 'a "q" \\ b\nc'
    assert frame.loc[0, "k"] == "v"
    assert math.isnan(frame.loc[0, "value"])
    assert frame["value"].tolist()[1:] == [math.inf, -math.inf, 1500.0]
    assert frame.loc[1, "timestamp"] == pd.Timestamp(1700000000123, unit="ms", tz="UTC")
    assert frame.loc[0, "timestamp"] == T0
    assert pd.isna(frame.loc[3, "service_id"])
    assert frame.attrs["help"]["m"] == "A help with a \\ backslash\nand a newline."
    assert frame.attrs["org_id"] is None


def test_empty_payload() -> None:
    frame = parse_prometheus("")
    assert list(frame.columns) == [*BASE, "value"] and len(frame) == 0
    assert len(parse_prometheus("# only comments\n\n")) == 0


@pytest.mark.parametrize(
    ("name", "lineno", "reason"),
    [
        ("bad_label_escape", 2, "bad label escape"),
        ("missing_value", 3, "missing value"),
        ("bad_number", 3, "bad number '1,5'"),
        ("duplicate_help", 4, "duplicate HELP for PostgresServer_CPUCores"),
        ("duplicate_type", 2, "duplicate TYPE"),
        ("type_after_samples", 2, "TYPE for PostgresServer_CPUCores after its samples"),
        ("unterminated_labels", 2, "unterminated label set"),
        ("duplicate_label", 2, "duplicate label name"),
        ("unknown_type", 1, "unknown metric type 'histogramm'"),
        ("trailing_text", 1, "bad timestamp or trailing text"),
        ("indented_comment", 2, "does not start with a metric name"),
    ],
)
def test_malformed_line_is_quoted_with_its_number(name: str, lineno: int, reason: str) -> None:
    text = (PROM / f"{name}.prom").read_text()
    with pytest.raises(PrometheusParseError) as info:
        parse_prometheus(text)
    err = info.value
    assert err.lineno == lineno
    assert err.line == text.split("\n")[lineno - 1]
    assert reason in err.reason
    assert str(err).startswith(f"line {lineno}: ") and repr(err.line) in str(err)


@pytest.mark.parametrize("stamp", [str(2**63), str(-(2**63) - 5), "9300000000000000"])
def test_a_timestamp_past_what_a_column_holds_is_a_parse_error(stamp: str) -> None:
    # int64 ms is the format's range; past ~292 000 years µs overflow: no time is meant
    text = f"# TYPE m gauge\nm 1 1780000000000\nm 2 {stamp}\n"
    with pytest.raises(PrometheusParseError, match="line 3: timestamp out of range"):
        parse_prometheus(text)


def test_a_bad_line_deep_in_an_org_payload() -> None:
    lines = exposition(services(20)).split("\n")
    at = next(i for i in range(300, 400) if lines[i].startswith("PostgresServer_"))
    lines[at] = lines[at].rsplit(" ", 1)[0] + " 12x"
    with pytest.raises(PrometheusParseError, match=f"line {at + 1}: bad number '12x'"):
        parse_prometheus("\n".join(lines))


# --- rates and derived series --------------------------------------------------------------


def test_rates_across_a_counter_reset() -> None:
    svcs = services(2)
    scrapes = [
        parse_prometheus(exposition(svcs, k, reset_at={svcs[0].id: 3}),
                         timestamp=T0 + pd.Timedelta(minutes=k))
        for k in range(6)
    ]  # fmt: skip
    frame = concat_scrapes(scrapes)
    r = rates(frame)
    assert list(r.columns) == [*frame.columns, "reset"]
    commits = r[r["metric"] == "PostgresServer_TransactionsCommitted_Total"]
    first, second = (commits[commits["service_id"] == s.id] for s in svcs)
    # 400/s × load; the synthetic counter restarts from 0 at scrape 3
    assert first["reset"].tolist() == [False, False, True, False, False]
    assert first["value"].tolist() == pytest.approx([40.0, 40.0, 0.0, 40.0, 40.0])
    assert not second["reset"].any()
    assert second["value"].tolist() == pytest.approx([80.0] * 5)
    # gauges are not rates
    assert "PostgresServer_CacheHitRatio" not in set(r["metric"])


def test_reset_rate_counts_from_zero() -> None:
    text = '# TYPE c_Total counter\nc_Total{{postgres_service="s"}} {}\n'
    frame = concat_scrapes(
        parse_prometheus(text.format(v), timestamp=T0 + pd.Timedelta(seconds=10 * i))
        for i, v in enumerate([100, 160, 30, 90])
    )
    r = rates(frame)
    assert r["value"].tolist() == pytest.approx([6.0, 3.0, 6.0])
    assert r["reset"].tolist() == [False, True, False]


def test_derived_series() -> None:
    frame = concat_scrapes(_scrapes(4, range(3)))
    d = derived(frame)
    assert list(d.columns) == [
        "service_name",
        "cpu_percent",
        "commits_per_s",
        "rollbacks_per_s",
        "rollback_ratio",
        "cache_hit_ratio",
    ]
    assert d.index.names == ["timestamp", "service_id"]
    assert len(d) == 4 * 2
    svc = services(4)[1]  # 4 cores, load 0.2: busy share = 0.407 of the load per core
    row = d.xs(svc.id, level="service_id").iloc[0]
    assert row["cpu_percent"] == pytest.approx(100 * svc.load * 0.407, rel=1e-3)
    assert row["commits_per_s"] == pytest.approx(400 * svc.load)
    assert row["rollback_ratio"] == pytest.approx(2 / 402)
    assert 95 <= row["cache_hit_ratio"] <= 100


def test_key_metrics_is_the_latest_scrape() -> None:
    frame = concat_scrapes(_scrapes(3, range(2)))
    km = key_metrics(frame)
    assert list(km.index) == [s.id for s in services(3)]
    assert (km["scraped_at"] == T0 + pd.Timedelta(minutes=1)).all()
    assert km["cpu_cores"].tolist() == [2.0, 4.0, 8.0]
    assert (km["connections"] >= km["active_connections"]).all()
    assert km["postgres_status"].tolist() == ["running"] * 3


# --- History -------------------------------------------------------------------------------


def test_history_drops_identical_scrapes_and_old_ones() -> None:
    svcs = services(3)
    h = History(max_age=pd.Timedelta(minutes=10))
    assert h.add(exposition(svcs, 0), timestamp=T0) == 1
    # the endpoint refreshes each minute: a second scrape in the same minute repeats
    assert h.add(exposition(svcs, 0), timestamp=T0 + pd.Timedelta(seconds=20)) == 0
    assert h.dropped == 1
    for k in range(1, 15):
        h.add(exposition(svcs, k), timestamp=T0 + pd.Timedelta(minutes=k))
    assert h.n_scrapes == 11  # minutes 4..14
    assert h.frame()["timestamp"].min() == T0 + pd.Timedelta(minutes=4)
    assert h.bytes_per_sample <= 32


def test_history_rates_match_the_frame_rates() -> None:
    h = History()
    for f in _scrapes(5, range(4)):
        h.add(f)
    a = h.rates().sort_values([*BASE, "mode"]).reset_index(drop=True)
    b = rates(h.frame()).sort_values([*BASE, "mode"]).reset_index(drop=True)
    np.testing.assert_allclose(a["value"], b["value"])
    assert a["reset"].tolist() == b["reset"].tolist()
    pd.testing.assert_frame_equal(h.derived(), derived(h.frame()))


def test_history_parquet_round_trip(tmp_path: Path) -> None:
    svcs = services(4)
    h = History()
    for k in range(5):
        h.add(exposition(svcs, k, reset_at={svcs[2].id: 3}), timestamp=T0 + pd.Timedelta(minutes=k))
    path = tmp_path / "history.parquet"
    h.save(path)
    back = History.load(path)
    pd.testing.assert_frame_equal(back.frame(), h.frame())
    pd.testing.assert_frame_equal(back.rates(), h.rates())
    assert back.types == h.types and back.org_id == h.org_id
    # the analysis goes on: a new scrape lands after the loaded ones
    assert (
        back.add(
            exposition(svcs, 5, reset_at={svcs[2].id: 3}), timestamp=T0 + pd.Timedelta(minutes=5)
        )
        == 1
    )
    assert back.n_scrapes == 6
    # any Parquet reader sees the tidy long frame
    raw = pd.read_parquet(path)
    assert list(raw.columns)[:4] == BASE and len(raw) == 5 * 4 * 32


# --- fleet snapshot ------------------------------------------------------------------------


def test_fleet_snapshot_costs_two_requests() -> None:
    api = FakeApi(7)
    with api.client() as client:
        snap = fleet_snapshot(client)
    assert snap.attrs["requests"] == 2
    assert dict(api.calls) == {"list": 1, "org": 1}
    assert len(snap) == 7 and snap["cpu_cores"].notna().all()
    assert snap["tag.Environment"].tolist()[:2] == ["production", "staging"]


def test_fleet_snapshot_counts_only_its_own_requests() -> None:
    # A FleetTable's refresh sends from an executor thread on the same client while a
    # cell takes its snapshot: the cell's count must not include the table's requests.
    api = FakeApi(3)
    with api.client() as client:
        started, release = threading.Event(), threading.Event()
        counted: list[int] = []  # asserted here: a failed assert in the thread is only a warning

        def widget_job() -> None:
            with client.counting() as mine:
                client.list_services()
                started.set()
                release.wait(10)
                client.list_services()
            counted.append(mine.requests)

        job = threading.Thread(target=widget_job)
        job.start()
        assert started.wait(10), "the job's first request did not go out"
        before = client.request_count
        with client.counting() as outer:
            snap = fleet_snapshot(client)
            release.set()
            job.join(10)
        assert not job.is_alive() and counted == [2]
        assert snap.attrs["requests"] == 2 and outer.requests == 2  # nested tallies both count
        assert client.request_count - before == 3  # the job's second list, sent meanwhile


def test_fleet_snapshot_past_100_services_fetches_only_the_uncovered() -> None:
    api = FakeApi(130)
    with api.client() as client:
        history = History()
        snap = fleet_snapshot(client, history=history)
        api.k += 1
        again = fleet_snapshot(client, history=history)
    # the org endpoint covered 100; the other 30 came one by one: 2 + 30, not 1 + 130
    assert snap.attrs["requests"] == 32
    assert dict(api.calls) == {"list": 2, "org": 2, "service": 60}
    assert snap["id"].tolist() == [s.id for s in api.services]
    assert snap["memory_used_percent"].notna().all()
    assert again["cpu_percent"].notna().all()


@pytest.mark.slow
def test_fleet_snapshot_against_the_sandbox(sandbox: object) -> None:
    import pgcloud_nb

    info = sandbox
    client = pgcloud_nb.connect(
        api_key=info.key_id,
        api_secret=info.key_secret,  # type: ignore[attr-defined]
        org_id=info.org_id,
        base_url=info.url,
    )  # type: ignore[attr-defined]
    with client:
        made = [
            client.create_service(
                name=f"fleet-{i}",
                provider="aws",
                region="us-east-1",
                size="r8gd.medium",
                tags={"Environment": f"e{i}"},
            )
            for i in range(3)
        ]
        try:
            for svc in made:
                client.wait(svc.id, progress=False)
            text = client.prometheus()
            org = parse_prometheus(text)  # the sandbox's real output parses
            ids = {s.id for s in made}
            assert ids <= set(org["service_id"].astype(str))
            one = parse_prometheus(client.prometheus(made[0].id))
            assert set(one["service_id"].astype(str)) == {made[0].id}
            assert "PostgresServer_CPUSeconds_Total" in set(one["metric"])
            n = len(client.list_services())
            before = client.request_count
            snap = fleet_snapshot(client)
            assert client.request_count - before == 2 == snap.attrs["requests"]
            assert len(snap) == n
            mine = snap[snap["id"].isin(ids)]
            assert mine["cpu_cores"].notna().all()
            assert set(mine["tag.Environment"]) == {"e0", "e1", "e2"}
        finally:
            for svc in made:
                client.delete_service(svc.id)
