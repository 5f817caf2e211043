"""Who may call, and what a path names: the key check, the organization and the service.

Every route checks the key first (HTTP Basic with the sandbox's key ID and
secret, compared in constant time), then resolves the organization and the
service its path names; each failure is an :class:`HTTPProblem` in the API's
wording (401, 404, or 400 for a malformed service id).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pgcloud_nb.sandbox.api.wire import bad_request, ok, shown
from pgcloud_nb.sandbox.errors import HTTPProblem
from pgcloud_nb.sandbox.home import Credentials
from pgcloud_nb.sandbox.services.lifecycle import Lifecycle
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["Access"]


class Access:
    """The key check and path lookups, and the two organization routes."""

    def __init__(self, creds: Credentials, life: Lifecycle) -> None:
        self.creds = creds
        self.life = life

    def key_of(self, authorization: str) -> str | None:
        """The key ID if ``authorization`` carries the sandbox's key and secret, else None.

        Both parts are compared in constant time. The rate limit asks this too: only a
        request that proves the key spends the key's budget (:mod:`.realism`).
        """
        scheme, _, token = authorization.partition(" ")
        try:
            user, _, secret = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            user, secret = "", ""
        good = hmac.compare_digest(user.encode(), self.creds.key_id.encode()) & hmac.compare_digest(
            secret.encode(), self.creds.key_secret.encode()
        )
        return user if scheme.lower() == "basic" and good else None

    def check_auth(self, request: Request) -> None:
        if self.key_of(request.headers.get("authorization", "")) is None:
            raise HTTPProblem(
                401,
                "Unauthorized: invalid or missing API key"
                " (use HTTP Basic auth with key ID and secret)",
                {"WWW-Authenticate": 'Basic realm="ClickHouse Cloud API"'},
            )

    def org(self, request: Request) -> str:
        org_id = request.path_params["org_id"]
        if org_id != self.creds.org_id:
            raise HTTPProblem(404, f"NOT_FOUND: organization {shown(org_id)} not found")
        return org_id

    def service(self, request: Request) -> ServiceRow:
        self.org(request)
        service_id = request.path_params["service_id"]
        try:
            uuid.UUID(service_id)
        except ValueError:
            raise bad_request(
                f"BAD_REQUEST: postgresId: '{shown(service_id)}' is not a UUID"
            ) from None
        row = self.life.get(service_id)
        if row is None:
            raise HTTPProblem(404, f"NOT_FOUND: Postgres service {service_id} not found")
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
