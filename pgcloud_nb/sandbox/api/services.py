"""The routes of the services themselves: list, create, read, patch, delete, and what acts on one.

That is the CRUD of ``/postgres``, the CA certificate, the password, the state
commands (restart, promote, switchover) and the new services made from another
one's backups (restores and read replicas: docs/api-behaviour.md, "Backups,
restores and read replicas"). Each route parses and validates its request,
calls the :class:`Lifecycle`, and shows the result; the lifecycle's errors are
answered by :mod:`.problems`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcloud_nb.sandbox.api.access import Access
from pgcloud_nb.sandbox.api.views import list_item, service_view
from pgcloud_nb.sandbox.api.wire import envelope, json_body, ok
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle
from pgcloud_nb.sandbox.services.naming import connection_string

__all__ = ["ServiceRoutes"]


class ServiceRoutes:
    def __init__(self, access: Access, life: Lifecycle) -> None:
        self.access = access
        self.life = life

    # -- CRUD --

    async def list_services(self, request: Request) -> Response:
        self.access.org(request)
        return ok([list_item(r) for r in self.life.services()])

    async def create_service(self, request: Request) -> Response:
        self.access.org(request)
        body = await json_body(request, "PostgresServicePostRequest")
        row, password = await self.life.create(body)
        # The one answer that carries the credentials (docs/api-behaviour.md §3.1).
        view = {
            **service_view(row),
            "password": password,
            "connectionString": connection_string(row, password),
        }
        return ok(view)

    async def get_service(self, request: Request) -> Response:
        return ok(service_view(self.access.service(request)))

    async def patch_service(self, request: Request) -> Response:
        row = self.access.service(request)
        body = await json_body(request, "PostgresServicePatchRequest")
        return ok(service_view(await self.life.update(row, body)))

    async def delete_service(self, request: Request) -> Response:
        row = self.access.service(request)
        await self.life.delete(row)
        return JSONResponse(envelope(200))

    # -- certificates, password, state --

    async def ca_certificates(self, request: Request) -> Response:
        row = self.access.service(request)
        pem = await self.life.ca_certificate(row)
        return Response(
            pem,
            media_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="postgres-ca-certificate.pem"'},
        )

    async def set_password(self, request: Request) -> Response:
        row = self.access.service(request)
        body = await json_body(request, "PostgresServiceSetPassword")
        given = body.get("password")
        password = await self.life.set_password(row, given)
        # The new password comes back only when the server made it (docs/api-behaviour.md §3.3).
        return ok({} if given is not None else {"password": password})

    async def set_state(self, request: Request) -> Response:
        row = self.access.service(request)
        body = await json_body(request, "PostgresServiceSetState", required=("command",))
        command = body["command"]
        if command == "restart":
            return ok(service_view(await self.life.restart(row)))
        if command == "promote":
            return ok(service_view(await self.life.promote(row)))
        return ok(service_view(await self.life.switchover(row)))

    # -- restores and read replicas (no password in either answer: docs/api-behaviour.md,
    # "Only create and password reset return credentials") --

    async def restored_service(self, request: Request) -> Response:
        source = self.access.service(request)
        body = await json_body(request, "PostgresServiceRestoreRequest")
        return ok(service_view(await self.life.restore(source, body)))

    async def read_replica(self, request: Request) -> Response:
        primary = self.access.service(request)
        body = await json_body(request, "PostgresServiceReadReplicaRequest")
        return ok(service_view(await self.life.replicate(primary, body)))
