"""What a collector round needs and tells: the store and client it calls, its report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from ..ratelimit import Budget

__all__ = ["Client", "RoundReport", "RoundSkipped", "Store"]


class RoundSkipped(Exception):
    """A round that could not run for a local reason (the store busy): not an outage."""


class Store(Protocol):
    """What the collector needs of :class:`pgcloud_nb.collect.store.Store`."""

    def insert_scrape(
        self, frame: pd.DataFrame, *, round_id: str, backfilled: bool = False
    ) -> int: ...

    def record_services(self, services: Sequence[Any], *, at: datetime) -> None: ...

    def last_sample_at(self) -> dict[str, pd.Timestamp]: ...

    def query(self, sql: str, parameters: Any = None) -> pd.DataFrame: ...


class Client(Protocol):
    """The calls a round makes (a :class:`pgcloud_nb.Client` has them)."""

    org_id: str

    @property
    def request_count(self) -> int: ...

    @property
    def budget(self) -> Budget: ...

    def list_services(self) -> Sequence[Any]: ...

    def prometheus(self, service_id: str | None = None) -> str: ...

    def metrics(
        self, service_id: str, *, from_date: Any, to_date: Any, bucket_size_seconds: int | None
    ) -> Any: ...


@dataclass
class RoundReport:
    """What one round did; ``samples`` is 0 when the store already held the round."""

    round_id: str
    at: pd.Timestamp
    services: int
    samples: int
    requests: int
    allowance: int
    scraped_apart: int  # per-service scrapes of services past the org endpoint's 100
    deferred: int  # services past 100 left for a later round
    backfilled: int  # samples rebuilt from /metrics this round
    debts: int  # gaps still owed after the round
    rate_limited: int  # 429s the client absorbed during the round

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}
