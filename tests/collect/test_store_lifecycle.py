"""The store's life beyond rounds, on embedded chDB: service renames and deletes, TTL
expiry with the rollup outliving raw samples, Parquet import, the fleet questions,
and chDB's one-folder-per-process rule. One store (one folder) for the module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixtures

from fixtures.synth import exposition, services

from pgcloud_nb.collect import queries
from pgcloud_nb.collect.store import Store, _resolve
from pgcloud_nb.history import History
from pgcloud_nb.metrics import parse_prometheus
from pgcloud_nb.redaction import redact

SVCS = services(4, seed=5)
NOW = pd.Timestamp.now(tz="UTC").floor("h")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("history")
    with Store.open(f"chdb://{folder}", database="test_lifecycle") as st:
        yield st


def _listed(**changes: dict[str, object]) -> list[dict[str, object]]:
    out = []
    for s in SVCS:
        svc: dict[str, object] = {
            "id": s.id,
            "name": s.name,
            "size": "small",
            "region": "us-east-1",
            "state": "running",
            "postgresVersion": s.version,
            "tags": [{"key": "team", "value": "core"}],
            "password": "must-not-be-stored",
        }
        svc.update(changes.get(s.id, {}))
        out.append(svc)
    return out


def test_an_empty_store_answers_with_columns(store: Store) -> None:
    assert store.last_sample_at() == {} and store.rounds() == 0
    assert list(store.services().columns)[:2] == ["service_id", "name"]
    assert len(store.frame()) == 0 and "timestamp" in store.frame().columns
    assert list(store.rates().columns)[:2] == ["timestamp", "service_id"]


def test_labels_beyond_the_data_sheet_round_trip(store: Store) -> None:
    at = NOW - pd.Timedelta(hours=5)
    text = (
        'PostgresServer_Foo_Total{postgres_service="s-1",postgres_service_name="a",'
        'shard="2"} 5\nPostgresServer_Foo_Total{postgres_service="s-1",'
        'postgres_service_name="a",mode="user"} 7\n'
    )
    frame = parse_prometheus(text, timestamp=at)
    assert store.insert_scrape(frame, round_id="extra-labels") == 2
    back = store.frame(at, at + pd.Timedelta(seconds=1))
    assert list(back.columns) == [
        "timestamp",
        "service_id",
        "service_name",
        "metric",
        "mode",
        "shard",
        "value",
    ]
    assert back["shard"][0] == "2" and back["shard"].isna().tolist() == [False, True]
    assert back["mode"][1] == "user" and back["mode"].isna().tolist() == [True, False]
    store.client.command("DELETE FROM samples WHERE service_id = 's-1'")


def test_services_follow_renames_and_deletes(store: Store) -> None:
    t1, t2, t3 = (NOW - pd.Timedelta(minutes=m) for m in (30, 20, 10))
    store.record_services(_listed(), at=t1)
    store.record_services(_listed(), at=t2)  # unchanged: nothing new
    assert store.query("SELECT count() AS n FROM services")["n"][0] == len(SVCS)
    renamed = _listed(**{SVCS[0].id: {"name": "renamed", "tags": {"team": "data"}}})
    store.record_services([s for s in renamed if s["id"] != SVCS[1].id], at=t3)
    current = store.services().set_index("service_id")
    assert current.loc[SVCS[0].id, "name"] == "renamed"
    assert dict(current.loc[SVCS[0].id, "tags"]) == {"team": "data"}
    assert pd.Timestamp(current.loc[SVCS[0].id, "first_seen"]) == t1  # kept across the rename
    assert SVCS[1].id not in current.index
    every = store.services(deleted=True).set_index("service_id")
    assert bool(every.loc[SVCS[1].id, "deleted"])
    assert pd.Timestamp(every.loc[SVCS[1].id, "seen_at"]) == t3
    assert every.loc[SVCS[1].id, "name"] == SVCS[1].name
    dump = store.query("SELECT * FROM services").to_string()
    assert "must-not-be-stored" not in dump


def test_ttl_expires_raw_samples_and_keeps_rollups(store: Store) -> None:
    old = NOW - pd.Timedelta(days=3)
    for k in range(3):
        frame = parse_prometheus(exposition(SVCS, k), timestamp=old + pd.Timedelta(minutes=k))
        store.insert_scrape(frame, round_id=f"old-{k}", backfilled=True)
    recent = parse_prometheus(exposition(SVCS, 3), timestamp=NOW - pd.Timedelta(minutes=5))
    store.insert_scrape(recent, round_id="recent")
    assert store.query("SELECT countIf(backfilled) AS n FROM samples")["n"][0] == 3 * len(recent)
    try:
        store.set_ttl(raw=timedelta(days=1))
        store.optimize()
        left = store.query("SELECT min(ts) AS first, count() AS n FROM samples")
        assert left["n"][0] == len(recent)
        assert left["first"][0] == NOW - pd.Timedelta(minutes=5)
        hours = store.query("SELECT min(hour) AS first FROM samples_1h")["first"][0]
        assert pd.Timestamp(hours) == old.floor("h")  # the rollup outlives the raw samples
    finally:
        store.set_ttl()


def test_parquet_import_is_idempotent_and_round_trips(store: Store, tmp_path: Path) -> None:
    start = NOW - pd.Timedelta(hours=2)
    history = History(max_age=None)
    for k in range(5):
        history.add(
            parse_prometheus(exposition(SVCS, k), timestamp=start + pd.Timedelta(minutes=k))
        )
    path = tmp_path / "history.parquet"
    history.save(path)
    assert store.import_parquet(path) == history.n_samples
    assert store.import_parquet(path) == 0
    back = History.from_store(store, start, start + pd.Timedelta(minutes=5))
    assert back.n_samples == history.n_samples
    pd.testing.assert_frame_equal(back.derived(), history.derived())


def test_fleet_questions_answer(store: Store) -> None:
    # the same two hours of scrapes as the Parquet import above, for every question
    start, end = NOW - pd.Timedelta(hours=2), NOW - pd.Timedelta(hours=1)
    p95 = queries.cpu_p95_per_hour(store, start, end)
    assert set(p95["service_id"].astype(str)) == {s.id for s in SVCS}
    assert (p95["p95_cpu_percent"] > 0).all() and (p95["scrapes"] == 4).all()
    trends = queries.connection_trends(store, start, end)
    assert len(trends) == len(SVCS) and trends["hours"].eq(1).all()
    growth = queries.storage_growth(store, start, end)
    assert (growth["used_percent"] > 0).all() and (growth["limit_bytes"] > 0).all()
    top = queries.top_commits(store, start, end, n=2)
    assert len(top) == 2 and top["commits"].is_monotonic_decreasing
    per_s = top["commits"] / (4 * 60)
    pd.testing.assert_series_equal(top["commits_per_s"], per_s, check_names=False)


def test_one_folder_per_process(store: Store, tmp_path: Path) -> None:
    # chDB holds one engine per process: a second folder waits for the first to close
    with pytest.raises(ClickHouseError, match="already initialized"):
        Store.open(f"chdb://{tmp_path / 'other'}")
    # the same folder opens again, sharing the engine
    with Store.open(f"chdb://{store.client.path}", database=store.database) as again:
        assert again.rounds() == store.rounds()


def test_server_settings_are_shown_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs, database, shown = _resolve("https://default:s3cret-pw@example.invalid:8443/fleet")
    assert database == "fleet" and kwargs["secure"] is True
    assert "s3cret-pw" not in shown and "example.invalid" in shown
    monkeypatch.delenv("PGCLOUD_HISTORY_DSN", raising=False)
    monkeypatch.setenv("CLICKHOUSE_HOST", "abc.clickhouse.cloud")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "other-pw")
    kwargs, database, shown = _resolve(None)
    assert kwargs["host"] == "abc.clickhouse.cloud" and kwargs["secure"] is True
    assert database is None and shown == "https://abc.clickhouse.cloud"
    assert "other-pw" not in redact("failed: password other-pw refused")


HOLD = """
import sys
from pgcloud_nb.collect.store import Store
with Store.open(sys.argv[1], database="held") as st:
    st.insert_scrape(st.frame(), round_id="held")
    print("open", flush=True)
    sys.stdin.read()  # hold the folder until the test closes our stdin
"""
WAIT = """
import sys
from pgcloud_nb.collect.store import Store
with Store.open(sys.argv[1], database="held", wait=float(sys.argv[2])) as st:
    print(st.rounds())
"""


@pytest.mark.slow  # three processes, each loading the engine
def test_another_process_waits_for_the_folder(tmp_path: Path) -> None:
    # Two processes cannot hold one embedded folder at once; open(wait=...) takes turns.
    dsn = f"chdb://{tmp_path / 'shared'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = [sys.executable, "-c"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "env": env}
    holder = subprocess.Popen([*run, HOLD, dsn], **pipes)  # type: ignore[call-overload]
    try:
        assert holder.stdout.readline().strip() == "open"
        t0 = time.monotonic()
        refused = subprocess.run([*run, WAIT, dsn, "0"], capture_output=True, text=True, env=env)
        startup = time.monotonic() - t0
        assert refused.returncode != 0 and "StoreBusyError" in refused.stderr
        waiter = subprocess.Popen([*run, WAIT, dsn, "120"], **pipes)  # type: ignore[call-overload]
        time.sleep(startup + 1)  # the waiter is past its imports and retrying
        assert waiter.poll() is None
        holder.stdin.close()
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err[-2000:]
        assert out.strip() == "1"
    finally:
        if holder.stdin and not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(timeout=60)
