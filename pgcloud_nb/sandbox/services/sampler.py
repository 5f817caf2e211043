"""The services' metrics: one sample of each running server every ``sample_interval``, kept a month.

What a sample holds and how each figure is measured is
:mod:`pgcloud_nb.sandbox.telemetry.sampling`'s; this module decides when to
take one (under the service's lock, so never mid-restart), stores it with the
service's running counter totals, and reads the stored ones back for the
``/metrics`` and ``/prometheus`` answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pgcloud_nb.sandbox.services.context import Context
from pgcloud_nb.sandbox.store import ServiceRow
from pgcloud_nb.sandbox.telemetry.samples import Sample
from pgcloud_nb.sandbox.telemetry.sampling import ProcessCounters, collect
from pgcloud_nb.sizes import size_spec

__all__ = ["SAMPLE_RETENTION_S", "Sampler"]

log = logging.getLogger("pgcloud_nb.sandbox")

# Samples older than this are dropped; the real API keeps about a month of metrics.
SAMPLE_RETENTION_S = 30 * 24 * 3600


class Sampler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._counters: dict[str, ProcessCounters] = {}

    def counters(self, row: ServiceRow) -> ProcessCounters:
        acc = self._counters.get(row.id)
        if acc is None:
            acc = ProcessCounters.from_dict(row.counters or {})
            self._counters[row.id] = acc
        return acc

    def forget(self, service_id: str) -> None:
        """Drop a deleted service's counters."""
        self._counters.pop(service_id, None)

    def _collect(self, row: ServiceRow) -> Sample | None:
        cluster = self.ctx.cluster(row)
        pid = cluster.postmaster_pid()
        spec = size_spec(row.size)
        if pid is None or spec is None:
            return None
        with cluster.connect() as conn:
            return collect(conn, pid, cluster.pgdata, spec, self.counters(row))

    async def sample(self, row: ServiceRow) -> dict[str, Any] | None:
        """Take one sample of a running service and store it."""
        ctx = self.ctx
        async with ctx.lock(row.id):
            current = ctx.store.get(row.id)
            if current is None or current.state != "running":
                return None
            try:
                found = await ctx.run(self._collect, current)
            except Exception as exc:  # a server mid-restart cannot be sampled
                log.warning("sampling %s failed: %s", row.id, exc)
                return None
            if found is None:
                return None
            data = found.to_dict()
            ctx.store.add_sample(row.id, found.taken_at, data, self.counters(row).to_dict())
            return data

    async def forever(self) -> None:
        store = self.ctx.store
        last_prune = 0.0
        while True:
            for row in store.rows():
                if row.state == "running":
                    await self.sample(row)
            if time.time() - last_prune > 3600:
                store.prune_samples(time.time() - SAMPLE_RETENTION_S)
                last_prune = time.time()
            await asyncio.sleep(self.ctx.settings.sample_interval)

    # -- what the API shows

    async def latest(self, row: ServiceRow) -> Sample | None:
        """The newest stored sample of a running service (one taken now if none is)."""
        if row.state != "running":
            return None
        data = self.ctx.store.latest_sample(row.id) or await self.sample(row)
        return Sample.from_dict(data) if data else None

    def between(self, row: ServiceRow, since: float, until: float) -> list[Sample]:
        """The stored samples of ``row`` taken from ``since`` to ``until`` (epoch seconds)."""
        return [Sample.from_dict(d) for d in self.ctx.store.samples(row.id, since, until)]
