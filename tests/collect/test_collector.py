"""The collector against a real sandbox, into the embedded chDB store.

One sandbox (the session's, sampling every 2 s) and one service for the module; the
collector runs at a 2 s interval. Rounds, the requests a round spends, a round run
again (deduplicated), a dead API (one log line, no crash), and the background
process: no secret in its argv, environment or log, ``kill -9`` then a restart
without a duplicated sample, and the gap backfilled from ``/metrics``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pgcloud_nb import collect
from pgcloud_nb.client import Client
from pgcloud_nb.collect.collector import Collector, collector_retry
from pgcloud_nb.collect.store import Store
from pgcloud_nb.models import PostgresServiceListItem
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.sandbox import SandboxInfo

pytestmark = pytest.mark.slow
INTERVAL = 2.0  # the test sandbox samples every 2 s
SERIES = "ts, metric, service_id, mode, state, database"


@pytest.fixture(scope="module")
def service(pg: Client) -> Iterator[PostgresServiceListItem]:
    svc = pg.create_service(
        name="collector-test", region="us-east-1", size="r8gd.medium", tags={"test": "collector"}
    )
    pg.wait(svc.id)
    yield next(s for s in pg.list_services() if s.id == svc.id)
    pg.delete_service(svc.id)


def _store(path: Path) -> Store:
    return Store.open(f"chdb://{path}", wait=30)


def _duplicates(store: Store) -> int:
    rows = store.query(f"SELECT count() - uniqExact({SERIES}) AS d FROM samples")
    return int(rows["d"][0])


def test_rounds_spend_two_requests_and_a_rerun_is_stored_once(
    pg: Client, service: PostgresServiceListItem, tmp_path: Path, figures: dict[str, str]
) -> None:
    with _store(tmp_path / "history") as store:
        collector = Collector(pg, store, interval=INTERVAL)
        reports = []
        start = time.time()
        for i in range(3):
            # each round at its own slot, as the collector's loop runs them: on a loaded
            # machine a round may take long enough that a plain sleep skips a slot, which
            # the collector rightly backfills (a third request)
            slot = start + i * INTERVAL
            time.sleep(max(slot - time.time(), 0))
            reports.append(collector.run_round(now=slot))
        again = collector.run_round(now=reports[-1].at.timestamp())  # the same slot
        assert [r.requests for r in reports] == [2, 2, 2]  # the list and the org scrape
        assert all(r.samples > 0 for r in reports) and again.samples == 0
        assert store.rounds() == 3
        assert service.id in store.last_sample_at()
        assert set(store.services()["service_id"]) >= {service.id}
        assert _duplicates(store) == 0
        per = store.query(
            "SELECT count() AS n FROM samples WHERE service_id = {s:String} "
            "AND metric = 'PostgresServer_CPUSeconds_Total'",
            {"s": service.id},
        )
        assert int(per["n"][0]) >= 3 * 8  # eight CPU modes per round
    figures["Collector requests per round (sandbox, 1 service)"] = (
        f"{reports[0].requests} of an allowance of {reports[0].allowance}"
    )


def test_a_dead_api_logs_one_line_and_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sandbox: SandboxInfo
) -> None:
    dead = Client(
        key_id=sandbox.key_id,
        key_secret=sandbox.key_secret,
        org_id=sandbox.org_id,
        base_url="http://127.0.0.1:9",  # discard: nothing listens
        budget=Budget.unlimited(),
        retry=collector_retry(0.05),
    )
    dead.requester.sleep = lambda s: None  # the retries' own waits, not the collector's
    with _store(tmp_path / "history") as store, caplog.at_level(logging.INFO):
        collector = Collector(dead, store, interval=0.05)
        collector.run(threading.Event(), rounds=4)
        assert collector.rounds == 0 and collector.outage_since is not None
        assert store.rounds() == 0
    lines = [r for r in caplog.records if r.name == "pgcloud_nb.collect"]
    assert len(lines) == 1 and "API unavailable" in lines[0].getMessage()
    assert sandbox.key_secret not in caplog.text
    dead.close()


def _wait_rounds(home: Path, rounds: int, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = collect.status(home)
        if state is not None and int(state.get("rounds") or 0) >= rounds:
            return state
        time.sleep(0.2)
    raise AssertionError(f"no {rounds} rounds within {timeout} s: {collect.status(home)}")


def test_background_process_survives_kill_9_and_backfills_the_gap(
    pg: Client,
    service: PostgresServiceListItem,
    sandbox: SandboxInfo,
    tmp_path: Path,
    figures: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, history = tmp_path / "collector", tmp_path / "history"
    dsn = f"chdb://{history}"
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "store-pw-not-for-the-child")
    state = collect.start(
        pg, dsn=dsn, interval=INTERVAL, reserve=10, home=home, api_secret=sandbox.key_secret
    )
    pid = int(state["pid"])  # type: ignore[call-overload]
    try:
        # the secret never travels in argv or the environment, nor reaches the log
        for name in ("cmdline", "environ"):
            seen = Path(f"/proc/{pid}/{name}").read_bytes()
            assert sandbox.key_secret.encode() not in seen and b"store-pw" not in seen
        _wait_rounds(home, 3)
        os.kill(pid, signal.SIGKILL)
        while collect.status(home) is not None:
            time.sleep(0.05)
        time.sleep(4 * INTERVAL)  # a gap of several rounds
        state = collect.start(
            pg, dsn=dsn, interval=INTERVAL, reserve=10, home=home, api_secret=sandbox.key_secret
        )
        assert int(state["pid"]) != pid  # type: ignore[call-overload]
        _wait_rounds(home, 3)
    finally:
        assert collect.stop(home)
    assert collect.status(home) is None
    log = (home / "collector.log").read_text()
    assert sandbox.key_secret not in log
    with _store(history) as store:
        assert _duplicates(store) == 0
        filled = store.query(
            "SELECT count() AS n, min(ts) AS lo, max(ts) AS hi FROM samples "
            "WHERE backfilled AND service_id = {s:String}",
            {"s": service.id},
        )
        n = int(filled["n"][0])
        assert n > 0, "the gap after kill -9 was not backfilled"
        rates = store.rates(services=[service.id])
        commits = rates[rates["metric"] == "PostgresServer_TransactionsCommitted_Total"]
        assert len(commits) and (commits["value"] >= 0).all()
    figures["Collector backfill after kill -9"] = (
        f"{n} samples rebuilt from /metrics for a gap of ~{4 * INTERVAL:g} s, 0 duplicates"
    )
    assert isinstance(filled["lo"][0], pd.Timestamp)
