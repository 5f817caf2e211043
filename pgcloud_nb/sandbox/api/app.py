"""The sandbox's HTTP API: the routes of the Managed Postgres spec, over real clusters.

Paths, envelopes, status codes and content types follow the embedded spec;
where it is silent we follow docs/api-behaviour.md and cite it beside the choice. The app
is built from one list of routes, as starlette's own examples are; the
handlers live by resource (:mod:`.access` for the key and the organization,
:mod:`.services`, :mod:`.config`, :mod:`.metrics`, :mod:`.insights`), and every
error is answered through one table (:mod:`.problems`). Requests are validated
by :func:`pgcloud_nb.spec.validate_body` against the spec itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgcloud_nb.sandbox.api import realism
from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.backups import BackupRoutes
from pgcloud_nb.sandbox.api.config import ConfigRoutes
from pgcloud_nb.sandbox.api.insights import InsightRoutes
from pgcloud_nb.sandbox.api.metrics import MetricsRoutes
from pgcloud_nb.sandbox.api.problems import PROBLEMS, problem
from pgcloud_nb.sandbox.api.services import ServiceRoutes
from pgcloud_nb.sandbox.api.wire import envelope, prepare_validation
from pgcloud_nb.sandbox.errors import HTTPProblem
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.sandbox.store import Store

__all__ = ["create_app"]

log = logging.getLogger("pgcloud_nb.sandbox")

ORG_PATH = "/v1/organizations/{org_id}"
PG = ORG_PATH + "/postgres"
SVC = PG + "/{service_id}"

Handler = Callable[[Request], Awaitable[Response]]


class SandboxAPI:
    """The routes' shared state: settings, credentials, store, lifecycle, and the handlers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = SandboxHome(settings.home)
        self.home.ensure()
        self.creds = self.home.credentials()
        self.store = Store(self.home.db_path)
        self.life = Lifecycle(settings, self.store, self.home.clusters_dir)
        self.access = Access(self.creds, self.life)

    def routes(self) -> list[Route]:
        """Every path of the API; each checks the key before anything else.

        Order matters where paths overlap: ``/postgres/prometheus`` comes before
        ``/postgres/{service_id}``, which would take it for a service id.
        """
        access, life = self.access, self.life
        svc = ServiceRoutes(access, life)
        config = ConfigRoutes(access, life)
        metrics = MetricsRoutes(access, life)
        insights = InsightRoutes(access, life)
        backups = BackupRoutes(access, life)

        def authed(handler: Handler) -> Handler:
            async def wrapped(request: Request) -> Response:
                access.check_auth(request)
                return await handler(request)

            return wrapped

        table: list[tuple[str, Handler, list[str]]] = [
            ("/v1/organizations", access.list_orgs, ["GET"]),
            (ORG_PATH, access.get_org, ["GET"]),
            (PG, svc.list_services, ["GET"]),
            (PG, svc.create_service, ["POST"]),
            (PG + "/prometheus", metrics.org_prometheus, ["GET"]),
            (SVC, svc.get_service, ["GET"]),
            (SVC, svc.patch_service, ["PATCH"]),
            (SVC, svc.delete_service, ["DELETE"]),
            (SVC + "/caCertificates", svc.ca_certificates, ["GET"]),
            (SVC + "/password", svc.set_password, ["PATCH"]),
            (SVC + "/state", svc.set_state, ["PATCH"]),
            (SVC + "/config", config.get_config, ["GET"]),
            (SVC + "/config", config.write_config, ["POST", "PATCH"]),
            (SVC + "/metrics", metrics.metrics, ["GET"]),
            (SVC + "/prometheus", metrics.service_prometheus, ["GET"]),
            (SVC + "/readReplica", svc.read_replica, ["POST"]),
            (SVC + "/restoredService", svc.restored_service, ["POST"]),
            # The live API's backups list, newer than the spec file (docs/api-behaviour.md).
            (SVC + "/backups", backups.list_backups, ["GET"]),
            (SVC + "/slowQueryPatterns", insights.query_patterns, ["GET"]),
            (SVC + "/slowQueryPatterns/{query_id}", insights.query_pattern, ["GET"]),
            (SVC + "/logs", insights.logs, ["GET"]),
        ]
        return [Route(path, authed(handler), methods=methods) for path, handler, methods in table]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    sb = SandboxAPI(settings)

    async def answer(request: Request, exc: Exception) -> Response:
        found = problem(exc)
        return JSONResponse(
            envelope(found.status, error=found.message), found.status, headers=found.headers
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # No path answers without auth: an unknown path is a 404 only for a good key.
        try:
            sb.access.check_auth(request)
        except HTTPProblem as denied:
            return await answer(request, denied)
        text = {404: "NOT_FOUND: no such path", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.status_code, exc.detail
        )
        return JSONResponse(envelope(exc.status_code, error=text), exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await answer(request, exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prepare_validation()  # jsonschema's import, while the server starts and answers
        await sb.life.start()
        try:
            yield
        finally:
            await sb.life.shutdown()
            sb.store.close()

    app = Starlette(
        routes=sb.routes(),
        # The rate limit spends a key's budget only for requests that prove the key.
        middleware=[
            Middleware(realism.FaultMiddleware, settings=settings, key_of=sb.access.key_of)
        ],
        exception_handlers={
            **{cls: answer for cls in PROBLEMS},
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    # No redirect to the path with (or without) a trailing slash: Starlette builds its
    # Location from the Host header, and answers it before any handler checks the key.
    # Such a path is a 404 like any unknown one (a 401 without the key).
    app.router.redirect_slashes = False
    app.state.sandbox = sb
    return app
