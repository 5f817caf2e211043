"""Three figures for metrics (parsing, history, requests per snapshot), printed (no pass/fail).

1. Parsing a 100-service org payload into the long frame, against
   prometheus_client's parser plus building the same frame from its output.
2. A History of 24 h of 60 s scrapes of 100 services: bytes per sample, and the
   time to compute every counter's rate (and the derived series).
3. Requests per fleet snapshot, against the 1 + N of a naive loop.

Run: ``python tests/benchmarks/bench_metrics.py [--hours 24]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixtures

from fixtures.mockapi import FakeApi
from fixtures.synth import exposition, services

from pgcloud_nb.history import History
from pgcloud_nb.metrics import fleet_snapshot, parse_prometheus
from pgcloud_nb.prometheus import label_columns

COMMON = {"clickhouse_org", "postgres_service", "postgres_service_name"}


def via_prometheus_client(text: str, stamp: pd.Timestamp) -> pd.DataFrame:
    """The same long frame, built from prometheus_client's parse (names as it gives them)."""
    rows: list[tuple[str, dict[str, str], float]] = [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]
    extra = label_columns({k for _, lb, _ in rows for k in lb} - COMMON)
    cols: dict[str, object] = {
        "timestamp": pd.DatetimeIndex([stamp] * len(rows)),
        "service_id": pd.Categorical([lb.get("postgres_service") for _, lb, _ in rows]),
        "service_name": pd.Categorical([lb.get("postgres_service_name") for _, lb, _ in rows]),
        "metric": pd.Categorical([name for name, _, _ in rows]),
    }
    for label in extra:
        cols[label] = pd.Categorical([lb.get(label) for _, lb, _ in rows])
    cols["value"] = np.array([v for _, _, v in rows], dtype=np.float64)
    return pd.DataFrame(cols)


def best(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` wall-clock runs, in seconds (the least disturbed one)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def figure_parse() -> None:
    text = exposition(services(100), 10)
    stamp = pd.Timestamp.now(tz="UTC")
    ours = best(lambda: parse_prometheus(text, timestamp=stamp), 30)
    theirs = best(lambda: via_prometheus_client(text, stamp), 5)
    assert len(parse_prometheus(text)) == len(via_prometheus_client(text, stamp))
    print("1. parse a 100-service org payload into the long frame")
    print(f"   payload: {len(text) / 1024:.0f} KiB, {text.count(chr(10))} lines, 3200 samples")
    print(f"   pgcloud_nb:                     {ours * 1e3:8.2f} ms")
    print(f"   prometheus_client + same frame: {theirs * 1e3:8.2f} ms")
    print(f"   ratio: {theirs / ours:.1f}x faster (aim: >= 10x)")


def figure_history(hours: float) -> None:
    svcs = services(100)
    n = int(hours * 60)
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    h = History(max_age=pd.Timedelta(hours=hours))
    start = time.perf_counter()
    for k in range(n):
        h.add(exposition(svcs, k), timestamp=t0 + pd.Timedelta(minutes=k))
    fill = time.perf_counter() - start
    rates_s = best(h.rates, 3)
    derived_s = best(h.derived, 3)
    long_bytes = h.frame(last=60).memory_usage(deep=True).sum() / (60 * 3200)
    print(f"2. history of {hours:g} h of 60 s scrapes of 100 services")
    print(f"   {h.n_scrapes} scrapes, {h.n_samples:,} samples (filled in {fill:.1f} s)")
    print(
        f"   bytes per sample: {h.bytes_per_sample:.1f} (aim: <= 32; "
        f"a long frame with categoricals: {long_bytes:.1f})"
    )
    print(f"   all counter rates: {rates_s:.2f} s (aim: <= 2 s); derived series: {derived_s:.2f} s")


def figure_requests() -> None:
    print("3. requests per fleet snapshot (org endpoint covers 100 services)")
    for n in (10, 100, 150, 250):
        api = FakeApi(n)
        with api.client() as client:
            snap = fleet_snapshot(client)
            before = client.request_count
            client.list_services()
            for svc in api.services:
                client.prometheus(svc.id)  # the naive loop: one call per service
            naive = client.request_count - before
        print(
            f"   {n:4d} services: {snap.attrs['requests']:4d} requests "
            f"(naive loop: {naive}, {naive / snap.attrs['requests']:.1f}x more)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    figure_parse()
    figure_history(args.hours)
    figure_requests()


if __name__ == "__main__":
    main()
