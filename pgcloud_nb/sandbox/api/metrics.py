"""The metrics routes: ``/metrics`` (bucketed JSON) and the two Prometheus text endpoints.

The samples come from the lifecycle (taken every ``sample_interval`` on the
real servers); :mod:`pgcloud_nb.sandbox.telemetry` shapes them: time series for
``/metrics``, the exposition format for ``/prometheus``.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.wire import bad_request, ok, parse_date, parse_int
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle
from pgcloud_nb.sandbox.store import ServiceRow
from pgcloud_nb.sandbox.telemetry.exposition import ServiceLabels, render_prometheus
from pgcloud_nb.sandbox.telemetry.timeseries import metrics_json, plan_buckets

__all__ = ["ORG_PROMETHEUS_MAX", "PROMETHEUS_TYPE", "MetricsRoutes"]

# docs/api-behaviour.md §9.2: the exact content type of the Prometheus endpoints.
PROMETHEUS_TYPE = "text/plain; charset=UTF-8"
# The org endpoint covers at most 100 services (docs/api-behaviour.md §9.2).
ORG_PROMETHEUS_MAX = 100


class MetricsRoutes:
    def __init__(self, access: Access, life: Lifecycle) -> None:
        self.access = access
        self.life = life

    async def metrics(self, request: Request) -> Response:
        row = self.access.service(request)
        start = parse_date(request, "from_date")
        end = parse_date(request, "to_date")
        assert start is not None and end is not None
        bucket = parse_int(request, "bucket_size_seconds", minimum=1)
        try:
            size = plan_buckets(start.timestamp(), end.timestamp(), bucket)
        except ValueError as exc:
            raise bad_request(f"BAD_REQUEST: {exc}") from None
        samples = self.life.samples(row, start.timestamp() - size, end.timestamp())
        return ok(metrics_json(samples, start.timestamp(), end.timestamp(), size))

    async def _exposition(self, rows: list[ServiceRow]) -> Response:
        samples = await asyncio.gather(*(self.life.latest_sample(r) for r in rows))
        entries = [
            (
                ServiceLabels(
                    org_id=self.access.creds.org_id,
                    service_id=r.id,
                    service_name=r.name,
                    status=r.state,
                    version=r.postgres_version,
                ),
                s,
            )
            for r, s in zip(rows, samples, strict=True)
        ]
        text = render_prometheus(entries)
        return Response(text, headers={"content-type": PROMETHEUS_TYPE})

    async def org_prometheus(self, request: Request) -> Response:
        self.access.org(request)
        return await self._exposition(self.life.services()[:ORG_PROMETHEUS_MAX])

    async def service_prometheus(self, request: Request) -> Response:
        return await self._exposition([self.access.service(request)])
