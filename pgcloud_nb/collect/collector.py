"""The collector: the fleet's Prometheus metrics into the store, one round per interval.

A round (:meth:`Collector.run_round`) spends, in this order:

1. the services list (1 request), recorded in the store so names, sizes, tags
   and states follow renames and deletes;
2. the organization's Prometheus scrape (1 request; it covers at most 100
   services, docs/api-behaviour.md §9.2);
3. per-service scrapes of the services that scrape left out past 100, the
   least recently scraped first, while the round's allowance lasts: the rest
   wait for a later round (a fleet of 250 is covered over several rounds);
4. backfill of the gaps the collector left (it was stopped, killed or the API
   was down), from each service's JSON ``/metrics`` history
   (:mod:`pgcloud_nb.collect.backfill`), with what is left of the allowance.

**How it shares the key's budget.** The API allows 10 requests per 10 s per key
(docs/api-behaviour.md §2.1) and a notebook on the same key needs most of them.
A collector process cannot share the notebook's in-process
:class:`~pgcloud_nb.ratelimit.Budget`, so it keeps to a fixed part of the window:

- it takes at most ``reserve`` requests (default 3) in any 10 s window (its own
  budget, :func:`collector_budget`), leaving 7 of 10 to everything else;
- a round spends at most ``max(3, reserve × interval / 10)`` requests (18 at the
  60 s interval): the list and the org scrape always, the rest by the order above
  (at least one, so a backfill moves on even at the sandbox's short intervals,
  where the budget then stretches the rounds rather than the window);
- a 429 means someone else needed more: the client waits what the API asks, and
  the collector halves its reserve (down to 1) for the rounds that follow,
  winning one back per clean round.

At the default 60 s, a fleet of up to 100 services costs 2 requests a minute,
3 % of the key's 60. Rounds start on multiples of the interval; the round id is
that slot (``<org>/<time>``), so a round run again after ``kill -9`` is one the
store already holds and is not stored twice. A dead API costs one log line per
outage; the collector backs off (doubling, up to 10 minutes) and carries on.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from clickhouse_connect.driver.exceptions import ClickHouseError

from ..errors import APIError, AuthenticationError, PermissionDeniedError, PgCloudError
from ..frames import metrics_frame
from ..metrics import ORG_PROMETHEUS_LIMIT, concat_scrapes, parse_prometheus
from ..ratelimit import Budget, RetryPolicy
from ..redaction import redact
from .backfill import Debt, backfill_frame, edge_values, windows
from .report import Client, RoundReport, RoundSkipped, Store

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_RESERVE",
    "Collector",
    "RoundReport",
    "RoundSkipped",
    "collector_budget",
    "collector_retry",
]

log = logging.getLogger("pgcloud_nb.collect")

DEFAULT_INTERVAL = 60.0  # the API refreshes its metrics about once a minute (§9.2)
DEFAULT_RESERVE = 3  # requests per window the collector may take of the key's 10
WINDOW = 10.0  # the API's rate-limit window, seconds (docs/api-behaviour.md §2.1)
MAX_BACKOFF = 600.0  # a dead API is asked again at least every 10 minutes


def collector_budget(reserve: int = DEFAULT_RESERVE) -> Budget:
    """The collector's own budget: ``reserve`` requests in any 10 s window."""
    return Budget(reserve, WINDOW)


def collector_retry(interval: float) -> RetryPolicy:
    """Give up on a call within about an interval: the next round asks again anyway."""
    return RetryPolicy(deadline=max(10.0, min(60.0, interval)), max_attempts=4)


class Collector:
    """Rounds of scrapes into a store; :meth:`run` repeats them until stopped.

    ``client``'s budget paces the requests (in the collector's own process it
    is :func:`collector_budget`). ``debts`` is where the gaps still owed are
    kept between runs (the process's state file); ``on_round`` sees each report.
    """

    def __init__(
        self,
        client: Client,
        store: Store,
        *,
        interval: float = DEFAULT_INTERVAL,
        reserve: int = DEFAULT_RESERVE,
        debts: Iterable[Debt] = (),
        on_round: Callable[[Collector, RoundReport], None] | None = None,
        on_outage: Callable[[Collector], None] | None = None,
        on_debts: Callable[[Collector], None] | None = None,
        clock: Callable[[], float] = time.time,
        rate_limited: Callable[[], int] | None = None,
    ) -> None:
        if not (math.isfinite(interval) and interval > 0) or reserve < 1:
            raise ValueError("the collector needs interval > 0 and reserve >= 1")
        self.client, self.store = client, store
        self.interval, self.reserve, self.max_reserve = float(interval), reserve, reserve
        self.debts: list[Debt] = list(debts)
        self.on_round, self.on_outage, self.on_debts = on_round, on_outage, on_debts
        self.clock = clock
        self._rate_limited = rate_limited or (lambda: 0)
        self.rounds = 0
        self.last: RoundReport | None = None
        self.outage_since: float | None = None
        self.skipped = 0  # rounds skipped because the store was busy
        self._skipping = False  # in a stretch of skipped rounds (warned once per stretch)
        self._stop: threading.Event | None = None  # run()'s: a round ends early when set
        self._last_ok: float | None = None  # wall time of the last stored round
        self._scraped_at: dict[str, float] = {}  # per-service scrapes: when, for the rotation
        self._edges: dict[str, tuple[pd.Timestamp, dict[str, float]]] = {}

    def __repr__(self) -> str:
        return (
            f"Collector(every {self.interval:g}s, reserve {self.reserve}/{WINDOW:g}s, "
            f"{self.rounds} rounds, {len(self.debts)} gaps owed)"
        )

    @property
    def allowance(self) -> int:
        """Requests one round may spend (see the module docstring)."""
        return max(3, math.floor(self.reserve * self.interval / WINDOW))

    def slot(self, now: float) -> float:
        return math.floor(now / self.interval) * self.interval

    # -- one round -----------------------------------------------------------------------

    def run_round(self, now: float | None = None) -> RoundReport:
        """Scrape, store, backfill; API errors propagate (:meth:`run` handles them)."""
        now = self.clock() if now is None else now
        at = pd.Timestamp(now, unit="s", tz="UTC").as_unit("us")
        slot = pd.Timestamp(self.slot(now), unit="s", tz="UTC")
        round_id = f"{self.client.org_id}/{slot.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z"
        start_count, start_429 = self.client.request_count, self._rate_limited()
        allowance = self.allowance
        gap = self._last_ok is None or now - self._last_ok > 1.5 * self.interval
        before = self.store.last_sample_at() if gap else {}

        services = list(self.client.list_services())
        self.store.record_services(services, at=at.to_pydatetime())
        scrapes = [parse_prometheus(self.client.prometheus(), timestamp=at)]
        apart, deferred = self._scrape_apart(services, scrapes, at, start_count + allowance)
        frame = concat_scrapes(scrapes)
        # The gaps are owed (and saved, on_debts) before the samples are stored: once
        # stored, last_sample_at() no longer shows the gap, so a kill -9 in between
        # would lose it for good.
        if self._owe(frame, before, at) and self.on_debts is not None:
            self.on_debts(self)
        samples = self.store.insert_scrape(frame, round_id=round_id)
        self._last_ok = now
        backfilled = self._pay(start_count + allowance)

        limited = self._rate_limited() - start_429
        self._adapt(limited)
        self.rounds += 1
        self.outage_since = None
        self.last = RoundReport(
            round_id=round_id,
            at=at,
            services=len(services),
            samples=samples,
            requests=self.client.request_count - start_count,
            allowance=allowance,
            scraped_apart=apart,
            deferred=deferred,
            backfilled=backfilled,
            debts=len(self.debts),
            rate_limited=limited,
        )
        if self.on_round is not None:
            self.on_round(self, self.last)
        return self.last

    def _scrape_apart(
        self, services: list[Any], scrapes: list[pd.DataFrame], at: pd.Timestamp, limit: int
    ) -> tuple[int, int]:
        """Per-service scrapes of what the org scrape left out past 100, stalest first."""
        if len(services) <= ORG_PROMETHEUS_LIMIT:
            return 0, 0  # below 100 it leaves out only services with nothing to show (§9.2)
        covered = set(scrapes[0]["service_id"].dropna().astype(str))
        left = [sid for s in services if (sid := str(_field(s, "id"))) not in covered]
        left.sort(key=lambda sid: self._scraped_at.get(sid, 0.0))
        done = 0
        for sid in left:
            if self.client.request_count >= limit or self.stopping:
                break
            try:
                scrapes.append(parse_prometheus(self.client.prometheus(sid), timestamp=at))
            except APIError as e:
                if e.status != 404:  # 404: deleted since the list was taken
                    raise
            self._scraped_at[sid] = at.timestamp()
            done += 1
        return done, len(left) - done

    # -- gaps ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether run() was asked to stop: a round ends after its request in course."""
        return self._stop is not None and self._stop.is_set()

    def _owe(self, frame: pd.DataFrame, before: dict[str, pd.Timestamp], at: pd.Timestamp) -> int:
        """Record a gap for each service whose previous sample is more than 1.5 rounds old;
        returns how many. A gap owed already from the same sample (its round's samples
        were not stored) is replaced by the longer one."""
        added = 0
        edges = edge_values(frame)
        names = frame.groupby("service_id", observed=True)["service_name"].first()
        least = pd.Timedelta(seconds=1.5 * self.interval)
        for sid, last in before.items():
            if sid not in edges or at - last <= least:
                continue
            known = self._edges.get(sid)
            prior = known[1] if known is not None and abs(known[0] - last) < _MS else None
            if prior is None:  # a restart: the values before the gap are in the store
                prior = self._values_at(sid, last)
            name = str(names.get(sid, "")) if sid in names.index else ""
            self.debts = [
                d
                for d in self.debts
                if not (d.service_id == sid and d.cursor is None and abs(d.start - last) < _MS)
            ]
            self.debts.append(Debt(sid, name, last, at, dict(prior), edges[sid]))
            added += 1
        self._edges = {sid: (at, values) for sid, values in edges.items()}
        return added

    def _values_at(self, service_id: str, at: pd.Timestamp) -> dict[str, float]:
        """Counters and static gauges of one service's sample at ``at``, from the store."""
        rows = self.store.query(
            "SELECT metric, mode, value FROM samples WHERE service_id = {s:String} "
            "AND ts = toDateTime64({t:String}, 6, 'UTC') AND NOT backfilled",
            {"s": service_id, "t": at.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S.%f")},
        )
        frame = pd.DataFrame(
            {
                "service_id": [service_id] * len(rows),
                "metric": rows["metric"].astype(str),
                "mode": rows["mode"].astype(str).replace("", None),
                "value": rows["value"],
            }
        )
        return edge_values(frame).get(service_id, {})

    def _pay(self, limit: int) -> int:
        """Backfill owed windows, oldest gap first, while the round's allowance lasts."""
        filled = 0
        while self.debts and self.client.request_count < limit and not self.stopping:
            debt = self.debts[0]
            todo = windows(debt, self.interval)
            if not todo:
                self.debts.pop(0)
                continue
            lo, hi, bucket = todo[0]
            try:
                answer = self.client.metrics(
                    debt.service_id, from_date=lo, to_date=hi, bucket_size_seconds=bucket
                )
            except APIError as e:
                if e.status >= 500 or e.status == 429:
                    raise
                # 404: the service is gone; 400: a window the API no longer holds
                log.info("backfill of %s dropped: %s", debt.service_id, redact(str(e)))
                self.debts.pop(0)
                continue
            frame = backfill_frame(metrics_frame(answer), debt, bucket, final=len(todo) == 1)
            filled += self.store.insert_scrape(
                frame, round_id=debt.round_id(self.client.org_id, lo, hi), backfilled=True
            )
            debt.advance(hi, frame)
            if len(todo) == 1:
                self.debts.pop(0)
        return filled

    def _adapt(self, limited: int) -> None:
        """Halve the reserve after a 429, win one back per clean round (module docstring)."""
        if limited:
            self.reserve = max(1, self.reserve // 2)
        elif self.reserve < self.max_reserve:
            self.reserve += 1
        budget = self.client.budget
        if budget.limit and budget.limit <= self.max_reserve:  # only a budget of our own
            budget.limit = self.reserve

    # -- forever -------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        rounds: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Rounds on the interval's slots until ``stop`` is set (or ``rounds`` were tried).

        The first round runs at once. API, store or parse failures start an outage:
        one log line, then retries with doubling waits (jittered, at most
        :data:`MAX_BACKOFF`). A busy store skips the slot (one warning per stretch).
        A refused key (401/403) ends the run: it will not heal by waiting.
        """
        stop = self._stop = stop or threading.Event()
        rng = rng or random.Random()
        failures = tried = 0
        while not stop.is_set() and (rounds is None or tried < rounds):
            tried += 1
            try:
                self.run_round()
            except (AuthenticationError, PermissionDeniedError):
                log.error("the API refused the collector's key; stopping")
                raise
            except RoundSkipped as e:
                self._skipped(e)
                stop.wait(max(0.0, self.slot(self.clock()) + self.interval - self.clock()))
                continue
            except (PgCloudError, ClickHouseError, OSError, ValueError) as e:
                # The API, the store (a server's blip, a full disk) or an odd exposition:
                # all are waited out the same way, one log line per outage.
                failures += 1
                if self.outage_since is None:
                    self.outage_since = self.clock()
                    what = "API unavailable" if isinstance(e, PgCloudError) else "round failed"
                    log.warning(
                        "%s (%s); retrying with backoff until it works", what, redact(_summary(e))
                    )
                    if self.on_outage is not None:
                        self.on_outage(self)
                wait = min(MAX_BACKOFF, self.interval * 2 ** min(failures, 16))
                stop.wait(wait * rng.uniform(0.5, 1.0))
                continue
            failures, self.outage_since, self._skipping = 0, None, False
            if rounds is None or tried < rounds:
                stop.wait(max(0.0, self.slot(self.clock()) + self.interval - self.clock()))

    def _skipped(self, e: RoundSkipped) -> None:
        self.skipped += 1
        if not self._skipping:
            self._skipping = True
            log.warning(
                "round skipped: %s; rounds are skipped until it is free (a notebook "
                "holding the embedded store open stops the collector)",
                e,
            )
        else:
            log.debug("round skipped: %s", e)
        if self.on_outage is not None:
            self.on_outage(self)  # the state file shows the count


_MS = pd.Timedelta(milliseconds=1)


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _summary(e: Exception) -> str:
    status = getattr(e, "status", None)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{type(e).__name__}{f' {status}' if status else ''}: {text[:160]}"
