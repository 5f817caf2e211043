"""The routes of a service's configuration: read it, replace it (POST) or merge into it (PATCH).

A write answers with the whole configuration, plus the documented ``message``
when some of it needs a restart to take effect (docs/api-behaviour.md, "The
restart message"). A value PostgreSQL refuses changes nothing and is a 400
naming the parameter. A write to a service whose server is down is kept and
loaded at its next start (docs/api-behaviour.md, "Config writes while the
server is down").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.views import config_view, restart_message
from pgcloud_nb.sandbox.api.wire import json_body_config, ok
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle

__all__ = ["ConfigRoutes"]


class ConfigRoutes:
    def __init__(self, access: Access, life: Lifecycle) -> None:
        self.access = access
        self.life = life

    async def get_config(self, request: Request) -> Response:
        row = self.access.service(request)
        return ok(config_view(row, await self.life.max_connections(row)))

    async def write_config(self, request: Request) -> Response:
        row = self.access.service(request)
        body = await json_body_config(request)
        pg = {k: str(v) for k, v in body["pgConfig"].items()}
        bouncer = dict(body["pgBouncerConfig"])
        # PATCH merges into the stored config, read under the service's lock so that
        # writes at once keep each other's keys; POST replaces both sections.
        updated, pending = await self.life.apply_config(
            row, pg, bouncer, merge=request.method == "PATCH"
        )
        result = config_view(updated, await self.life.max_connections(updated))
        if pending:  # `message` only when a restart is needed (docs/api-behaviour.md §8.3)
            result["message"] = restart_message(pending)
        return ok(result)
