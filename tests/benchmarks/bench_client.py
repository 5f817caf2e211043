"""Three figures for the client (request use, budget use, resilience), against real sandboxes.

    python tests/benchmarks/bench_client.py [--duration 30] [--lifecycles 5] [--figures 123]

1. Requests used by the seed lifecycle, against the minimum it needs.
2. The sandbox enforcing the real limit (10 requests / 10 s) while one waiter
   and three concurrent callers run: 429s surfaced to the user (aim 0) and
   budget use (aim >= 90%).
3. 20% of answers failing (500/503/429/dropped connections): lifecycles
   completed (aim: all) and duplicate services created (aim: 0). A duplicate is
   a second service under a lifecycle's name, seen right after its create; a
   service a failed lifecycle left behind is counted apart.

Each figure gets its own sandbox in a throwaway home; nothing else is touched.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.errors import RateLimitError
from pgcloud_nb.ratelimit import Budget, RetryPolicy
from pgcloud_nb.sandbox import Sandbox, Settings

REGION, SIZE = "us-east-1", "r8gd.large"
# list, create, wait (>= 1 GET), tags, config, restart, wait, delete, wait_gone, 2 × prometheus
SEED_MINIMUM = 11


def client_for(info: Any, budget: Budget | None = None) -> Client:
    return pgcloud_nb.connect(
        info.key_id,
        info.key_secret,
        org_id=info.org_id,
        base_url=info.url,
        env_file=None,
        sandbox=False,
        budget=budget,
    )


def seed_lifecycle(pg: Client, name: str, created: Callable[[], None] | None = None) -> None:
    """The DESIGN.md seed walkthrough, step by step; ``created`` runs after the create."""
    pg.list_services()
    svc = pg.create_service(name=name, region=REGION, size=SIZE, postgres_version="18")
    if created is not None:
        created()
    pg.wait(svc.id, progress=False, timeout=300)
    pg.update_service(svc.id, tags={"Environment": "production"})
    pg.replace_config(
        svc.id, pg_config={"max_connections": "42"}, pg_bouncer_config={}, allow_empty=True
    )
    pg.restart(svc.id)
    pg.wait(svc.id, progress=False, timeout=300)
    pg.prometheus(svc.id)
    pg.prometheus()
    pg.delete_service(svc.id)
    pg.wait_gone(svc.id, progress=False, timeout=300)


def figure_1(info: Any) -> None:
    pg = client_for(info)  # the real 10/10 budget, so polling paces itself as in the cloud
    start = time.monotonic()
    seed_lifecycle(pg, f"bench-seed-{uuid.uuid4().hex[:6]}")
    used = pg.request_count
    print("1. Seed lifecycle")
    print(
        f"   requests used: {used}   minimum: {SEED_MINIMUM}   "
        f"overhead: {used - SEED_MINIMUM} polls   ({time.monotonic() - start:.1f} s)"
    )


def figure_2(info: Any, duration: float) -> None:
    clients = [client_for(info) for _ in range(4)]  # one shared budget for the key
    budget = clients[0].budget
    while budget.remaining() < budget.limit:  # start on a full window, not figure 1's tail
        time.sleep(0.1)
    surfaced: list[Exception] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def waiter(pg: Client) -> None:
        while time.monotonic() < stop:
            try:
                svc = pg.create_service(
                    name=f"bench-wait-{uuid.uuid4().hex[:6]}", region=REGION, size=SIZE
                )
                pg.wait(svc.id, progress=False, timeout=300)
                pg.delete_service(svc.id)
                pg.wait_gone(svc.id, progress=False, timeout=300)
            except RateLimitError as exc:
                with lock:
                    surfaced.append(exc)

    def caller(pg: Client) -> None:
        while time.monotonic() < stop:
            try:
                pg.list_services()
            except RateLimitError as exc:
                with lock:
                    surfaced.append(exc)

    # Budget use counts the slots taken while everyone is busy, [start, stop); after
    # `stop` the waiter may still finish its poll alone, which is not what we measure.
    snapshot: list[int] = []
    first = budget.acquired
    timer = threading.Timer(duration, lambda: snapshot.append(budget.acquired - first))
    threads = [threading.Thread(target=waiter, args=(clients[0],))]
    threads += [threading.Thread(target=caller, args=(c,)) for c in clients[1:]]
    timer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timer.join()
    absorbed = sum(c.requester.rate_limited for c in clients)
    # The most a sliding window allows in `duration` seconds: `limit` per started window.
    allowed = budget.limit * math.ceil(duration / budget.window)
    print("2. Real rate limit (10 requests / 10 s), one waiter + three callers")
    print(f"   429s surfaced to the user: {len(surfaced)}   429s absorbed by retries: {absorbed}")
    print(
        f"   budget use: {snapshot[0]} requests in {duration:.0f} s = "
        f"{100 * snapshot[0] / allowed:.0f}% of the {allowed} allowed"
    )


class _Count(logging.Handler):
    """Counts the requester's log lines that say an earlier attempt had done the job."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done_before = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.done_before += "an earlier attempt did it" in record.getMessage()


def figure_3(info: Any, lifecycles: int) -> None:
    pg = client_for(info, Budget.unlimited())
    pg.requester.policy = RetryPolicy(deadline=300, max_attempts=40)
    names = [f"bench-fault-{uuid.uuid4().hex[:6]}" for _ in range(lifecycles)]
    seen: dict[str, set[str]] = {name: set() for name in names}  # ids listed under each name
    completed, failures, recovered = 0, [], 0
    counter = _Count()
    http_log = logging.getLogger("pgcloud_nb.http")
    http_log.addHandler(counter)
    level = http_log.level
    http_log.setLevel(logging.INFO)
    try:
        for name in names:

            def created(name: str = name) -> None:
                seen[name] |= {s.id for s in pg.list_services() if s.name == name}

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    seed_lifecycle(pg, name, created)
                    completed += 1
                except Exception as exc:  # a benchmark reports every failure
                    failures.append(f"{name}: {exc!r}")
            recovered += sum("was lost" in str(w.message) for w in caught)
    finally:
        http_log.removeHandler(counter)
        http_log.setLevel(level)
    leftovers = [s for s in pg.list_services() if s.name in names]
    for s in leftovers:
        seen[s.name].add(s.id)
    duplicates = sum(len(ids) - 1 for ids in seen.values() if ids)
    print("3. 20% injected faults (500/503/429/dropped connections)")
    print(
        f"   lifecycles completed: {completed}/{lifecycles}   "
        f"duplicate services created: {duplicates}   "
        f"services left by failed lifecycles: {len(leftovers)}"
    )
    print(
        f"   requests: {pg.request_count}   retries: {pg.requester.retries}   "
        f"lost creates found by name instead of resent: {recovered}   "
        f"resends that found the first attempt done (404/409): {counter.done_before}"
    )
    for line in failures:
        print(f"   failed: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds for figure 2")
    parser.add_argument("--lifecycles", type=int, default=5, help="lifecycles for figure 3")
    parser.add_argument("--figures", default="123", help="which figures to measure, e.g. 3")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgcloud-nb-bench-"))
    root.chmod(0o755)  # PostgreSQL runs as another user and must reach the clusters
    flavours = {
        "limited": {"rate_limit": 10, "rate_window": 10.0},
        "faulty": {
            "rate_limit": 0,
            "faults": {"500": 0.05, "503": 0.05, "429": 0.05, "drop": 0.05},
        },
    }
    if "3" not in args.figures:
        del flavours["faulty"]
    if not {"1", "2"} & set(args.figures):
        del flavours["limited"]
    sandboxes = {}
    try:
        for name, knobs in flavours.items():
            sb = Sandbox(root / name, Settings(home=root / name, **knobs))  # type: ignore[arg-type]
            sandboxes[name] = (sb, sb.start())
        if "1" in args.figures:
            figure_1(sandboxes["limited"][1])
        if "2" in args.figures:
            figure_2(sandboxes["limited"][1], args.duration)
        if "3" in args.figures:
            figure_3(sandboxes["faulty"][1], args.lifecycles)
    finally:
        for sb, _ in sandboxes.values():
            sb.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
