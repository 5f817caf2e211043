"""The sandbox's HTTP API: the routes of the Managed Postgres spec, over real clusters.

Paths, envelopes, status codes and content types follow the embedded spec;
where it is silent we follow API-NOTES.md and say so beside the choice. The app
is built from a list of routes, as starlette's own examples are; requests are
validated by :func:`pgcloud_nb.spec.validate_body` against the spec itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgcloud_nb.sandbox.api import realism
from pgcloud_nb.sandbox.api.insights import Insights
from pgcloud_nb.sandbox.api.views import config_view, list_item, restart_message, service_view
from pgcloud_nb.sandbox.api.wire import (
    APIError,
    bad_request,
    envelope,
    json_body,
    json_body_config,
    ok,
    parse_date,
    parse_int,
)
from pgcloud_nb.sandbox.errors import ConfigValueError
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.postgres.cluster import check_settings
from pgcloud_nb.sandbox.services.lifecycle import (
    Conflict,
    Lifecycle,
    connection_string,
    generate_password,
)
from pgcloud_nb.sandbox.services.restores import RequestRefused
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.sandbox.store import ServiceRow, Store
from pgcloud_nb.sandbox.telemetry.exposition import ServiceLabels, render_prometheus
from pgcloud_nb.sandbox.telemetry.samples import Sample
from pgcloud_nb.sandbox.telemetry.timeseries import metrics_json, plan_buckets

__all__ = ["create_app"]

log = logging.getLogger("pgcloud_nb.sandbox")

ORG_PATH = "/v1/organizations/{org_id}"
PG = ORG_PATH + "/postgres"
SVC = PG + "/{service_id}"
# API-NOTES §8: the exact content type of the Prometheus endpoints.
PROMETHEUS_TYPE = "text/plain; charset=UTF-8"
# The org endpoint covers at most 100 services (data sheet).
ORG_PROMETHEUS_MAX = 100


# -- the app --------------------------------------------------------------------


class SandboxAPI:
    """The routes' shared state: settings, credentials, store and lifecycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = SandboxHome(settings.home)
        self.home.ensure()
        self.creds = self.home.credentials()
        self.store = Store(self.home.db_path)
        self.life = Lifecycle(settings, self.store, self.home.clusters_dir, self.creds.org_id)
        self.insights = Insights(self.life)

    # -- auth and lookup --

    def check_auth(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            user, _, secret = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            user, secret = "", ""
        good = hmac.compare_digest(user.encode(), self.creds.key_id.encode()) & hmac.compare_digest(
            secret.encode(), self.creds.key_secret.encode()
        )
        if scheme.lower() != "basic" or not good:
            raise APIError(
                401,
                "Unauthorized: invalid or missing API key"
                " (use HTTP Basic auth with key ID and secret)",
                {"WWW-Authenticate": 'Basic realm="ClickHouse Cloud API"'},
            )

    def org(self, request: Request) -> str:
        org_id = request.path_params["org_id"]
        if org_id != self.creds.org_id:
            raise APIError(404, f"NOT_FOUND: organization {org_id} not found")
        return org_id

    def service(self, request: Request) -> ServiceRow:
        self.org(request)
        service_id = request.path_params["service_id"]
        try:
            uuid.UUID(service_id)
        except ValueError:
            raise bad_request(f"BAD_REQUEST: postgresId: '{service_id}' is not a UUID") from None
        row = self.store.get(service_id)
        if row is None:
            raise APIError(404, f"NOT_FOUND: Postgres service {service_id} not found")
        return row

    # -- organizations --

    def organization(self) -> dict[str, Any]:
        return {
            "id": self.creds.org_id,
            "name": "pgcloud-nb sandbox",
            "createdAt": "2026-01-01T00:00:00Z",
            "privateEndpoints": [],
            "byocConfig": [],
        }

    async def list_orgs(self, request: Request) -> Response:
        return ok([self.organization()])

    async def get_org(self, request: Request) -> Response:
        self.org(request)
        return ok(self.organization())

    # -- services CRUD --

    async def list_services(self, request: Request) -> Response:
        self.org(request)
        return ok([list_item(r) for r in self.store.rows()])

    async def create_service(self, request: Request) -> Response:
        self.org(request)
        body = await json_body(request, "PostgresServicePostRequest")
        self.check_quota()
        await self.check_pg_config(body)
        row, password = self.life.new_row(body)
        # The one answer that carries the credentials (API-NOTES §7).
        view = {
            **service_view(row),
            "password": password,
            "connectionString": connection_string(row, password),
        }
        return ok(view)

    def check_quota(self) -> None:
        """Creates, restores and replicas all make a service (a real server) of the org."""
        if len(self.store.rows()) >= self.settings.max_services:
            raise bad_request(
                f"BAD_REQUEST: the organization has reached its limit of "
                f"{self.settings.max_services} Postgres services"
            )

    async def check_pg_config(self, body: dict[str, Any]) -> None:
        """A pgConfig this PostgreSQL refuses is a 400 now, not a service that never starts."""
        settings = {k: str(v) for k, v in body.get("pgConfig", {}).items()}
        if not settings:
            return
        try:
            await self.life.run(check_settings, settings, self.life.template_dir)
        except ConfigValueError as exc:
            raise bad_request(
                f"BAD_REQUEST: request body.pgConfig.{exc.param}: {exc.message}"
            ) from None

    async def get_service(self, request: Request) -> Response:
        return ok(service_view(self.service(request)))

    async def patch_service(self, request: Request) -> Response:
        row = self.service(request)
        body = await json_body(request, "PostgresServicePatchRequest")
        if row.state == "deleting":
            raise Conflict("Service is deleting.")
        if not row.is_primary and {"size", "haType", "tags"} & body.keys():
            raise bad_request(
                "BAD_REQUEST: read replicas do not accept size, haType or tags changes"
            )
        changes: dict[str, Any] = {}
        if "size" in body:
            changes["size"] = body["size"]
        if "haType" in body:
            changes["ha_type"] = body["haType"]
        if "tags" in body:  # replaced wholesale; an omitted field stays as it is
            changes["tags"] = body["tags"]
        if "name" in body and body["name"] != row.name:
            row = await self.life.rename(row, body["name"])
        updated = self.store.update(row.id, **changes)
        assert updated is not None
        if "ha_type" in changes and changes["ha_type"] != row.ha_type:
            # API-NOTES §5.3: asynchronous; the service stays running meanwhile.
            self.life.spawn(self.life.ha.reconcile(row.id), f"standbys {row.id}")
        return ok(service_view(updated))

    async def delete_service(self, request: Request) -> Response:
        row = self.service(request)
        await self.life.delete(row)
        return JSONResponse(envelope(200))

    # -- certificates, password, state --

    async def ca_certificates(self, request: Request) -> Response:
        row = self.service(request)
        pem = await self.life.run(self.life.cluster(row).ca_pem)
        return Response(
            pem,
            media_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="postgres-ca-certificate.pem"'},
        )

    async def set_password(self, request: Request) -> Response:
        row = self.service(request)
        body = await json_body(request, "PostgresServiceSetPassword")
        given = body.get("password")
        password = given if given is not None else generate_password()
        await self.life.set_password(row, password)
        # The new password comes back only when the server made it (API-NOTES §5.8).
        return ok({} if given is not None else {"password": password})

    async def set_state(self, request: Request) -> Response:
        row = self.service(request)
        body = await json_body(request, "PostgresServiceSetState", required=("command",))
        command = body["command"]
        if command == "restart":
            return ok(service_view(await self.life.restart(row)))
        if command == "promote":
            if row.is_primary:  # API-NOTES §6: probably 400 [U]
                raise bad_request(
                    "BAD_REQUEST: only a read replica can be promoted; this service is a primary"
                )
            return ok(service_view(await self.life.restores.promote(row)))
        if not row.is_primary:  # API-NOTES §6: probably 400 [U]
            raise bad_request(
                "BAD_REQUEST: a read replica has no standby to switch over to; promote it instead"
            )
        return ok(service_view(await self.life.switchover(row)))

    # -- restores and read replicas (API-NOTES §5.6, §5.7) --

    async def restored_service(self, request: Request) -> Response:
        restores = self.life.restores
        return await self._new_from(
            request, "PostgresServiceRestoreRequest", restores.start_restore
        )

    async def read_replica(self, request: Request) -> Response:
        restores = self.life.restores
        return await self._new_from(
            request, "PostgresServiceReadReplicaRequest", restores.start_replica
        )

    async def _new_from(
        self,
        request: Request,
        schema_name: str,
        start: Callable[[ServiceRow, dict[str, Any]], ServiceRow],
    ) -> Response:
        """A new service made from an existing one's backups: a restore or a replica."""
        source = self.service(request)
        body = await json_body(request, schema_name)
        self.check_quota()
        await self.check_pg_config(body)
        try:
            row = start(source, body)
        except RequestRefused as exc:
            raise bad_request(str(exc)) from None
        return ok(service_view(row))  # no password (API-NOTES §7)

    # -- config --

    async def _current_max_connections(self, row: ServiceRow) -> str | None:
        if row.pg_config or row.state != "running":
            return None

        def show() -> str:
            with self.life.cluster(row).connect() as conn:
                found = conn.execute("SHOW max_connections").fetchone()
                return str(found[0]) if found else "100"

        try:
            return await self.life.run(show)
        except Exception:
            return None

    async def get_config(self, request: Request) -> Response:
        row = self.service(request)
        return ok(config_view(row, await self._current_max_connections(row)))

    async def write_config(self, request: Request) -> Response:
        row = self.service(request)
        body = await json_body_config(request)
        pg = {k: str(v) for k, v in body["pgConfig"].items()}
        bouncer = dict(body["pgBouncerConfig"])
        if request.method == "PATCH":  # merge; POST replaces both sections
            pg = {**row.pg_config, **pg}
            bouncer = {**row.pg_bouncer_config, **bouncer}
        try:
            pending = await self.life.apply_config(row, pg, bouncer)
        except ConfigValueError as exc:
            raise bad_request(
                f"BAD_REQUEST: request body.pgConfig.{exc.param}: {exc.message}"
            ) from None
        updated = self.store.get(row.id)
        assert updated is not None
        result = config_view(updated, await self._current_max_connections(updated))
        if pending:  # `message` only when a restart is needed (API-NOTES §5.9)
            result["message"] = restart_message(pending)
        return ok(result)

    # -- metrics --

    async def metrics(self, request: Request) -> Response:
        row = self.service(request)
        start = parse_date(request, "from_date")
        end = parse_date(request, "to_date")
        assert start is not None and end is not None
        bucket = parse_int(request, "bucket_size_seconds", minimum=1)
        try:
            size = plan_buckets(start.timestamp(), end.timestamp(), bucket)
        except ValueError as exc:
            raise bad_request(f"BAD_REQUEST: {exc}") from None
        rows = self.store.samples(row.id, start.timestamp() - size, end.timestamp())
        samples = [Sample.from_dict(d) for d in rows]
        return ok(metrics_json(samples, start.timestamp(), end.timestamp(), size))

    async def _latest(self, row: ServiceRow) -> Sample | None:
        if row.state != "running":
            return None
        data = self.store.latest_sample(row.id) or await self.life.sample(row)
        return Sample.from_dict(data) if data else None

    async def _exposition(self, rows: list[ServiceRow]) -> Response:
        samples = await asyncio.gather(*(self._latest(r) for r in rows))
        entries = [
            (
                ServiceLabels(
                    org_id=self.creds.org_id,
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
        self.org(request)
        return await self._exposition(self.store.rows()[:ORG_PROMETHEUS_MAX])

    async def service_prometheus(self, request: Request) -> Response:
        return await self._exposition([self.service(request)])

    # -- slow query patterns and logs (insights.py) --

    async def query_patterns(self, request: Request) -> Response:
        return ok(await self.insights.patterns(self.service(request), request))

    async def query_pattern(self, request: Request) -> Response:
        row = self.service(request)
        return ok(await self.insights.pattern(row, request.path_params["query_id"], request))

    async def logs(self, request: Request) -> Response:
        return ok(await self.insights.logs(self.service(request), request))


Handler = Callable[[Request], Awaitable[Response]]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    sb = SandboxAPI(settings)

    def authed(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            sb.check_auth(request)
            return await handler(request)

        return wrapped

    routes = [
        Route("/v1/organizations", authed(sb.list_orgs), methods=["GET"]),
        Route(ORG_PATH, authed(sb.get_org), methods=["GET"]),
        Route(PG, authed(sb.list_services), methods=["GET"]),
        Route(PG, authed(sb.create_service), methods=["POST"]),
        Route(PG + "/prometheus", authed(sb.org_prometheus), methods=["GET"]),
        Route(SVC, authed(sb.get_service), methods=["GET"]),
        Route(SVC, authed(sb.patch_service), methods=["PATCH"]),
        Route(SVC, authed(sb.delete_service), methods=["DELETE"]),
        Route(SVC + "/caCertificates", authed(sb.ca_certificates), methods=["GET"]),
        Route(SVC + "/password", authed(sb.set_password), methods=["PATCH"]),
        Route(SVC + "/state", authed(sb.set_state), methods=["PATCH"]),
        Route(SVC + "/config", authed(sb.get_config), methods=["GET"]),
        Route(SVC + "/config", authed(sb.write_config), methods=["POST", "PATCH"]),
        Route(SVC + "/metrics", authed(sb.metrics), methods=["GET"]),
        Route(SVC + "/prometheus", authed(sb.service_prometheus), methods=["GET"]),
        Route(SVC + "/readReplica", authed(sb.read_replica), methods=["POST"]),
        Route(SVC + "/restoredService", authed(sb.restored_service), methods=["POST"]),
        Route(SVC + "/slowQueryPatterns", authed(sb.query_patterns), methods=["GET"]),
        Route(SVC + "/slowQueryPatterns/{query_id}", authed(sb.query_pattern), methods=["GET"]),
        Route(SVC + "/logs", authed(sb.logs), methods=["GET"]),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return JSONResponse(
            envelope(exc.status, error=exc.message), exc.status, headers=exc.headers
        )

    async def conflict(request: Request, exc: Exception) -> Response:
        return JSONResponse(envelope(409, error=f"CONFLICT: {exc}"), 409)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # No path answers without auth: an unknown path is a 404 only for a good key.
        try:
            sb.check_auth(request)
        except APIError as denied:
            return await api_error(request, denied)
        text = {404: "NOT_FOUND: no such path", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.status_code, exc.detail
        )
        return JSONResponse(envelope(exc.status_code, error=text), exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            envelope(500, error="INTERNAL_ERROR: the sandbox failed; see server.log"), 500
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sb.life.resume()
        sampler = asyncio.get_running_loop().create_task(sb.life.sample_forever())
        # Cancelled with the lifecycle's other tasks by life.shutdown().
        sb.life.spawn(sb.insights.snapshot_forever(), "query statistics snapshots")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await sb.life.shutdown()
            sb.store.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(realism.FaultMiddleware, settings=settings)],
        exception_handlers={
            APIError: api_error,
            Conflict: conflict,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.state.sandbox = sb
    return app
