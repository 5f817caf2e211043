"""The fleet-history store on the embedded chDB backend (a real ClickHouse engine).

One store for the module: chDB runs one engine per process on one folder, so the
module opens its folder once and closes it at the end (the next module may then
open another folder). The data: org payloads of six services, 60 s apart, ending
an hour ago (inside the raw TTL), one service's counters reset mid-way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixtures

from fixtures.synth import exposition, services

from pgcloud_nb.collect import queries, rollups
from pgcloud_nb.collect.store import Store
from pgcloud_nb.history import History
from pgcloud_nb.metrics import COMMITS, concat_scrapes, derived, parse_prometheus, rates

SVCS = services(6, seed=3)
N = 24
RESET_AT = 10
T0 = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=2)
KEY = ["timestamp", "metric", "service_id", "mode", "state", "database"]


def scrape(k: int) -> pd.DataFrame:
    text = exposition(SVCS, k, reset_at={SVCS[2].id: RESET_AT})
    return parse_prometheus(text, timestamp=T0 + pd.Timedelta(minutes=k))


@pytest.fixture(scope="module")
def scrapes() -> list[pd.DataFrame]:
    return [scrape(k) for k in range(N)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@pytest.fixture(scope="module")
def store(folder: Path, scrapes: list[pd.DataFrame]) -> Iterator[Store]:
    with Store.open(f"chdb://{folder}", database="test_store") as st:
        for k, frame in enumerate(scrapes):
            st.insert_scrape(frame, round_id=f"round-{k}")
        yield st


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Labels as plain strings ('' where absent), rows in one order: comparable frames."""
    out = frame.copy()
    for col in ("service_id", "service_name", "metric", "mode", "state", "database"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    return out.sort_values(KEY, kind="stable").reset_index(drop=True)


def test_rounds_are_idempotent(store: Store, scrapes: list[pd.DataFrame]) -> None:
    samples = store.query("SELECT count() AS n FROM samples")["n"][0]
    assert samples == sum(len(f) for f in scrapes)
    assert store.insert_scrape(scrapes[3], round_id="round-3") == 0
    assert store.rounds() == N
    assert store.query("SELECT count() AS n FROM samples")["n"][0] == samples


def test_a_round_cut_short_is_completed_without_duplicates(store: Store) -> None:
    # kill -9 between the samples insert and the rounds row: the samples are in,
    # the round is not listed. Running the round again must add nothing twice,
    # neither to the samples nor to the hourly rollup fed by the view.
    frame = scrape(90)  # the next hour: the ranges the other tests read stay as they were
    before = store.query("SELECT count() AS n FROM samples")["n"][0]
    hourly = store.query("SELECT sum(count) AS n FROM samples_1h")["n"][0]
    store._insert_samples(frame, round_id="cut-short", backfilled=False)
    assert not store.has_round("cut-short")
    assert store.insert_scrape(frame, round_id="cut-short") == len(frame)
    assert store.has_round("cut-short")
    assert store.query("SELECT count() AS n FROM samples")["n"][0] == before + len(frame)
    assert store.query("SELECT sum(count) AS n FROM samples_1h")["n"][0] == hourly + len(frame)


def test_frame_round_trips(store: Store, scrapes: list[pd.DataFrame]) -> None:
    end = T0 + pd.Timedelta(minutes=N)
    got = store.frame(T0, end)
    want = concat_scrapes(scrapes)
    assert list(got.columns) == list(want.columns)
    assert got.attrs["types"] == want.attrs["types"]
    assert got.attrs["org_id"] == want.attrs["org_id"]
    assert got["timestamp"].dtype == want["timestamp"].dtype
    a, b = _plain(got), _plain(want)
    pd.testing.assert_frame_equal(a[KEY], b[KEY])
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())


def test_sql_rates_equal_pandas_rates(store: Store, scrapes: list[pd.DataFrame]) -> None:
    end = T0 + pd.Timedelta(minutes=N)
    want = _plain(rates(concat_scrapes(scrapes)))
    got = _plain(store.rates(T0, end))
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[KEY], want[KEY])
    np.testing.assert_allclose(got["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-12)
    assert got["reset"].astype(bool).tolist() == want["reset"].tolist()
    assert got["reset"].astype(bool).sum() > 0  # the reset is in the data, and seen


def test_sql_derived_equal_pandas_derived(store: Store, scrapes: list[pd.DataFrame]) -> None:
    end = T0 + pd.Timedelta(minutes=N)
    want = derived(concat_scrapes(scrapes)).reset_index()
    got = store.derived(T0, end)
    assert len(got) == len(want) > 0
    assert got["service_id"].astype(str).tolist() == want["service_id"].astype(str).tolist()
    for col in ("cpu_percent", "commits_per_s", "rollbacks_per_s", "cache_hit_ratio"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-12)


def test_hourly_rollup_matches_the_samples(store: Store, scrapes: list[pd.DataFrame]) -> None:
    got = store.query(
        "SELECT hour, service_id, sum(count) AS n, min(min) AS lo, max(max) AS hi, "
        "avgMerge(avg) AS mean, argMaxMerge(last) AS last, "
        "quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(quantiles)[3] AS p95 FROM samples_1h "
        "WHERE metric = 'PostgresServer_MemoryUsedPercent' AND hour < {end:DateTime('UTC')} "
        "GROUP BY hour, service_id ORDER BY hour, service_id",
        {"end": (T0 + pd.Timedelta(minutes=N)).to_pydatetime()},
    )
    frame = concat_scrapes(scrapes)
    mem = frame[frame["metric"] == "PostgresServer_MemoryUsedPercent"].copy()
    mem["hour"] = mem["timestamp"].dt.floor("h")
    mem = mem.sort_values("timestamp")
    g = mem.groupby(["hour", "service_id"], observed=True)["value"]
    want = pd.DataFrame(
        {"n": g.size(), "lo": g.min(), "hi": g.max(), "mean": g.mean(), "last": g.last()}
    ).reset_index()
    assert len(got) == len(want) > 0
    for col in ("n", "lo", "hi", "mean", "last"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float))
    # the t-digest answers in Float32: within the hour's range, up to its precision
    p95, slack = got["p95"].to_numpy(float), 1e-6 * got["hi"].to_numpy(float)
    assert ((p95 >= got["lo"] - slack) & (p95 <= got["hi"] + slack)).all()
    assert (p95 > got["mean"]).all()  # the values climb within the hour


def test_history_loads_a_range(store: Store, scrapes: list[pd.DataFrame]) -> None:
    start, end = T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(minutes=15)
    history = History.from_store(store, start, end)
    assert history.n_scrapes == 10
    direct = History(max_age=None)
    for frame in scrapes[5:15]:
        direct.add(frame)
    assert history.n_samples == direct.n_samples
    got, want = history.derived(), direct.derived()
    assert len(got) == len(want) > 0
    assert got.index.equals(want.index)
    np.testing.assert_allclose(got["cpu_percent"], want["cpu_percent"])
    np.testing.assert_allclose(got["commits_per_s"], want["commits_per_s"])


def test_last_sample_at(store: Store) -> None:
    last = store.last_sample_at()
    scan = store.query("SELECT service_id, max(ts) AS ts FROM samples GROUP BY service_id")
    assert set(last) == {s.id for s in SVCS}
    assert last == {str(s): t for s, t in zip(scan["service_id"], scan["ts"], strict=True)}


def _pandas_commits(frame: pd.DataFrame) -> pd.DataFrame:
    """Per service: commits (increases, a decrease counted from zero), resets, seconds."""
    c = frame[frame["metric"] == COMMITS].sort_values(["service_id", "timestamp"])
    c = c.assign(service_id=c["service_id"].astype(str))
    prev = c.groupby("service_id")["value"].shift()
    dt = c.groupby("service_id")["timestamp"].diff().dt.total_seconds()
    c = c.assign(inc=np.where(c["value"] < prev, c["value"], c["value"] - prev), dt=dt)
    c = c.assign(reset=c["value"] < prev)[prev.notna()]
    g = c.groupby("service_id")
    return pd.DataFrame(
        {"commits": g["inc"].sum(), "resets": g["reset"].sum(), "dt": g["dt"].sum()}
    )


def _pandas_p95(frame: pd.DataFrame) -> pd.DataFrame:
    d = derived(frame).reset_index().dropna(subset=["cpu_percent"])
    d = d.assign(hour=d["timestamp"].dt.floor("h"), service_id=d["service_id"].astype(str))
    g = d.groupby(["hour", "service_id"])["cpu_percent"]
    return pd.DataFrame({"p95": g.quantile(0.95), "mean": g.mean(), "n": g.size()})


def test_fleet_questions_equal_pandas_over_hours_and_late_rounds(store: Store) -> None:
    # Two more hours: the second one's middle arrives last (as a backfill would), so
    # the per-hour counter table must be recomputed, not appended to, to stay exact.
    for ks, name in (
        (range(95, 101), "early"),
        (range(108, 116), "after"),
        (range(101, 108), "late"),
    ):
        frame = concat_scrapes([scrape(k) for k in ks])
        store.insert_scrape(frame, round_id=f"hours-{name}", backfilled=name == "late")
    frame = store.frame()  # everything the module stored, whatever ran before
    assert frame["timestamp"].dt.floor("h").nunique() >= 2

    want = _pandas_commits(frame)
    got = queries.top_commits(store, n=len(SVCS)).set_index("service_id")
    got.index = got.index.astype(str)
    assert set(got.index) == set(want.index)
    want = want.reindex(got.index)
    np.testing.assert_allclose(got["commits"], want["commits"], rtol=1e-12)
    np.testing.assert_allclose(got["commits_per_s"], want["commits"] / want["dt"], rtol=1e-12)
    assert got["resets"].tolist() == want["resets"].tolist()
    assert want["resets"].sum() > 0  # the reset is in the data, and counted

    want_p95 = _pandas_p95(frame)
    p95 = queries.cpu_p95_per_hour(store)
    p95 = p95.assign(service_id=p95["service_id"].astype(str)).set_index(["hour", "service_id"])
    assert len(p95) == len(want_p95) > len(SVCS)
    p95 = p95.reindex(want_p95.index)
    np.testing.assert_allclose(p95["p95_cpu_percent"], want_p95["p95"], rtol=1e-9)
    np.testing.assert_allclose(p95["mean_cpu_percent"], want_p95["mean"], rtol=1e-9)
    assert p95["scrapes"].tolist() == want_p95["n"].tolist()


def test_a_store_without_the_derived_tables_is_migrated_on_open(store: Store) -> None:
    # A store made by the schema before the derived tables: opening it creates them
    # and fills them from raw samples, once.
    before = queries.top_commits(store, n=len(SVCS)), queries.cpu_p95_per_hour(store)
    for view in rollups.VIEWS:
        store.client.command(f"DROP VIEW {view}")
    for table in rollups.TABLES:
        store.client.command(f"DROP TABLE {table}")
    with Store.open(f"chdb://{store.client.path}", database=store.database) as again:
        steps = again.query("SELECT step FROM migrations")["step"]
        assert sorted(steps) == ["counters_1h", "cpu_1h", "service_scrapes"]
        assert rollups.migrate(again.client, again.database) == []  # nothing runs twice
        after = queries.top_commits(again, n=len(SVCS)), queries.cpu_p95_per_hour(again)
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-12)
    # the view is back: a new round reaches the per-scrape table
    n = store.query("SELECT count() AS n FROM service_scrapes")["n"][0]
    store.insert_scrape(scrape(130), round_id="after-migration")
    assert store.query("SELECT count() AS n FROM service_scrapes")["n"][0] == n + len(SVCS)


def test_drop_leaves_no_table_or_view_of_the_history(store: Store, folder: Path) -> None:
    # Another database in the same folder: the module's store stays for the other tests.
    assert store.query("SELECT count() AS n FROM samples")["n"].iloc[0] > 0
    with Store.open(f"chdb://{folder}", database="test_dropped") as st:
        st.insert_scrape(scrape(0), round_id="round-0")
        st.drop()
        left = st.query("SELECT name FROM system.tables WHERE database = 'test_dropped'")
    assert left.empty, left
    assert store.query("SELECT count() AS n FROM samples")["n"].iloc[0] > 0  # untouched
