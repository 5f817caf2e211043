"""A stand-in for the sandbox app: tests the server process without PostgreSQL.

It answers ``GET /v1/organizations`` with the home's credentials, behind the real
fault middleware. Its lifespan leaves a marker file at shutdown. ``STANDIN_FAIL``
makes startup fail; ``STANDIN_SLOW_STOP=<s>`` makes shutdown take that long.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgcloud_nb.sandbox.api.realism import FaultMiddleware
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.settings import Settings

SHUTDOWN_MARKER = "standin-shutdown"


def create_app(settings: Settings) -> Starlette:
    home = SandboxHome(settings.home)
    creds = home.credentials()
    expected = "Basic " + base64.b64encode(f"{creds.key_id}:{creds.key_secret}".encode()).decode()

    def key_of(authorization: str) -> str | None:
        return creds.key_id if authorization == expected else None

    async def orgs(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != expected:
            body = {"status": 401, "error": "unauthorized", "requestId": str(uuid.uuid4())}
            return JSONResponse(body, 401)
        result = [{"id": creds.org_id, "name": "sandbox"}]
        return JSONResponse({"status": 200, "requestId": str(uuid.uuid4()), "result": result})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if os.environ.get("STANDIN_FAIL"):
            raise RuntimeError("standin startup failed on purpose")
        yield
        await asyncio.sleep(float(os.environ.get("STANDIN_SLOW_STOP") or 0))
        (home.path / SHUTDOWN_MARKER).write_text(str(os.getpid()))

    return Starlette(
        routes=[Route("/v1/organizations", orgs)],
        # As the real app: only the right key and secret spend (or skip) the key's budget.
        middleware=[Middleware(FaultMiddleware, settings=settings, key_of=key_of)],
        lifespan=lifespan,
    )
