"""Requests the collector spends per round for 10, 100 and 250 services, against the budget.

The API is the in-process fake of the list and Prometheus endpoints (its org
endpoint covers the first 100 services, docs/api-behaviour.md §9.2), on
``httpx.MockTransport``: this counts requests, not time. The store is the real
embedded one (chDB) in a throwaway folder. Rounds are 60 s apart on a made-up
clock; the key allows 60 requests a minute, of which the collector takes at most
its allowance (3 of every 10 s window: 18 a round).

Run: ``python tests/benchmarks/bench_collector.py [--rounds 12]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixtures

from fixtures.mockapi import FakeApi

from pgcloud_nb.collect.collector import DEFAULT_INTERVAL, WINDOW, Collector
from pgcloud_nb.collect.store import Store
from pgcloud_nb.ratelimit import DEFAULT_LIMIT

T0 = 1_780_000_000.0  # a round slot's start, seconds since the epoch


def measure(n: int, rounds: int, folder: Path) -> dict[str, float]:
    api = FakeApi(n)
    client = api.client()
    with Store.open(f"chdb://{folder / str(n)}") as store:
        collector = Collector(client, store, interval=DEFAULT_INTERVAL)
        reports = []
        for k in range(rounds):
            api.k = k
            reports.append(collector.run_round(now=T0 + k * DEFAULT_INTERVAL))
        covered = store.last_sample_at()
    client.close()
    past = max(0, n - 100)
    per_round = reports[-1].scraped_apart
    return {
        "services": n,
        "first": reports[0].requests,
        "mean": sum(r.requests for r in reports) / len(reports),
        "most": max(r.requests for r in reports),
        "allowance": reports[0].allowance,
        "needed": 2 + past,  # every service every round: list + org scrape + the rest one by one
        "apart": per_round,
        "cover": -(-past // per_round) if past and per_round else 1,
        "covered": len(covered),
        "samples": sum(r.samples for r in reports) / len(reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    key_per_round = DEFAULT_LIMIT * DEFAULT_INTERVAL / WINDOW
    folder = Path(tempfile.mkdtemp(prefix="pgcloud-nb-bench-collector-"))
    try:
        rows = [measure(n, args.rounds, folder) for n in (10, 100, 250)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"collector requests per round ({args.rounds} rounds, every {DEFAULT_INTERVAL:g} s; "
        f"the key allows {key_per_round:g} per round)"
    )
    print(
        f"{'services':>8} {'first':>6} {'mean':>6} {'most':>5} {'allowance':>9} {'share':>6} "
        f"{'needed':>7} {'apart':>6} {'rounds to cover':>16} {'stored':>7}"
    )
    for r in rows:
        share = r["most"] / key_per_round
        print(
            f"{r['services']:>8} {r['first']:>6} {r['mean']:>6.1f} {r['most']:>5} "
            f"{r['allowance']:>9} {share:>6.0%} {r['needed']:>7} {r['apart']:>6} "
            f"{r['cover']:>16} {r['covered']:>7}"
        )
        assert r["most"] <= r["allowance"], "a round spent more than its allowance"
    print(
        "needed: requests to scrape every service every round; apart: per-service scrapes "
        "of services past the org endpoint's 100 in a round (the rest wait their turn)"
    )


if __name__ == "__main__":
    main()
