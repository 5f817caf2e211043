"""The collector's loop on fakes (no API, no engine): what a store error, a busy store,
a stop request or a kill during a round leave behind."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixtures

from fixtures.synth import exposition, services

from pgcloud_nb.collect.backfill import Debt
from pgcloud_nb.collect.collector import Collector, RoundReport, RoundSkipped
from pgcloud_nb.ratelimit import Budget

SVCS = services(2, seed=9)


class FakeClient:
    org_id = "org"

    def __init__(self) -> None:
        self.request_count = 0
        self.budget = Budget.unlimited()
        self.metrics_calls = 0

    def list_services(self) -> list[dict[str, Any]]:
        self.request_count += 1
        return [{"id": s.id, "name": s.name} for s in SVCS]

    def prometheus(self, service_id: str | None = None) -> str:
        self.request_count += 1
        return exposition(SVCS, self.request_count)

    def metrics(self, service_id: str, **kw: Any) -> Any:
        self.metrics_calls += 1
        raise AssertionError("no backfill call once stopping")


class FakeStore:
    def __init__(self, fail: Exception | None = None, last: pd.Timestamp | None = None) -> None:
        self.fail, self.last = fail, last

    def insert_scrape(self, frame: pd.DataFrame, *, round_id: str, backfilled: bool = False) -> int:
        if self.fail is not None:
            raise self.fail
        return len(frame)

    def record_services(self, services: Any, *, at: Any) -> None:
        pass

    def last_sample_at(self) -> dict[str, pd.Timestamp]:
        return {s.id: self.last for s in SVCS} if self.last is not None else {}

    def query(self, sql: str, parameters: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"metric": [], "mode": [], "value": []})


@pytest.mark.parametrize(
    "error", [ClickHouseError("blip"), OSError("disk full"), ValueError("odd")]
)
def test_store_and_parse_errors_are_an_outage_not_the_end(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    collector = Collector(FakeClient(), FakeStore(fail=error), interval=0.01)
    with caplog.at_level(logging.INFO, logger="pgcloud_nb.collect"):
        collector.run(threading.Event(), rounds=3)  # carries on: no exception
    lines = [r for r in caplog.records if r.name == "pgcloud_nb.collect"]
    assert len(lines) == 1 and "round failed" in lines[0].getMessage()
    assert collector.outage_since is not None and collector.rounds == 0


def test_a_busy_store_warns_once_per_stretch_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    saves: list[int] = []

    class Busy(Collector):
        def run_round(self, now: float | None = None) -> RoundReport:
            raise RoundSkipped("the store is busy")

    collector = Busy(
        FakeClient(), FakeStore(), interval=0.01, on_outage=lambda c: saves.append(c.skipped)
    )
    with caplog.at_level(logging.DEBUG, logger="pgcloud_nb.collect"):
        collector.run(threading.Event(), rounds=3)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "busy" in warned[0].getMessage()
    assert collector.skipped == 3 and saves == [1, 2, 3]


def test_a_gap_is_saved_before_the_samples_that_hide_it() -> None:
    # kill -9 during the insert: the state file must already hold the gap
    saved: list[list[Debt]] = []
    long_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)
    store = FakeStore(fail=OSError("killed mid-insert"), last=long_ago)
    collector = Collector(
        FakeClient(), store, interval=60, on_debts=lambda c: saved.append(list(c.debts))
    )
    with pytest.raises(OSError):
        collector.run_round()
    assert [len(d) for d in saved] == [2] and saved[0][0].start == long_ago
    store.fail = None  # the next round owes the same gaps once, not twice
    collector._stop = threading.Event()
    collector._stop.set()  # and, asked to stop, stores its scrape but pays nothing yet
    assert collector.run_round().samples > 0
    assert len(collector.debts) == 2 and collector.client.metrics_calls == 0


def test_a_stop_request_ends_the_round_between_requests() -> None:
    client = FakeClient()
    collector = Collector(client, FakeStore(), interval=60)
    collector._stop = threading.Event()
    collector._stop.set()
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2)
    collector.debts = [Debt(SVCS[0].id, SVCS[0].name, start, start + pd.Timedelta(hours=1))]
    assert collector._pay(limit=100) == 0 and client.metrics_calls == 0
    assert len(collector.debts) == 1  # kept for the next run
