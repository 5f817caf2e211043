"""What every group of the Client's operations stands on.

:class:`~pgcloud_nb.client.Client` is assembled from groups of operations, each
a subclass of :class:`ClientBase` in a module named after what it holds:
:mod:`~pgcloud_nb.provisioning` (create, read replica, restore),
:mod:`~pgcloud_nb.configuration` (pgConfig and pgBouncerConfig),
:mod:`~pgcloud_nb.observability` (metrics, slow queries, logs, Prometheus) and
:mod:`~pgcloud_nb.client` itself (read, update, delete, state commands,
password, waits, connections). They share what is here: one
:class:`~pgcloud_nb.requester.Requester` (the key's budget, retries, status →
error), the org's URL path, and the credentials seen so far.

Passwords arrive only in the create and password-reset responses
(docs/api-behaviour.md §3.1). The client keeps the ones it sees in memory, per service id and as
:class:`~pydantic.SecretStr`, so that
:meth:`~pgcloud_nb.client.Client.connect_service` can open a psycopg
connection later without the notebook ever printing them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from .ratelimit import Budget, RetryPolicy
from .redaction import remember_secret
from .requester import Requester, Tally

__all__ = ["ClientBase", "KnownCredentials"]


@dataclass
class KnownCredentials:
    """Credentials seen for one service (never printed: SecretStr)."""

    password: SecretStr
    connection_string: SecretStr | None = None


class ClientBase:
    """The plumbing of :class:`~pgcloud_nb.client.Client`: the key, the org, the requester."""

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str | SecretStr,
        org_id: str,
        base_url: str,
        source: str = "arguments",
        budget: Budget,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        secret = key_secret.get_secret_value() if isinstance(key_secret, SecretStr) else key_secret
        remember_secret(secret)
        self.org_id = org_id
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.key_id = key_id
        self._req = Requester(
            base_url=self.base_url,
            key_id=key_id,
            key_secret=secret,
            budget=budget,
            policy=retry,
            transport=transport,
            timeout=timeout,
        )
        self._known: dict[str, KnownCredentials] = {}
        self._created: set[str] = set()  # ids this client created: never "found" by dedup

    # -- plumbing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<pgcloud_nb.Client org={self.org_id} url={self.base_url} "
            f"key={self.key_id[:8]}… from {self.source}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._req.close()

    @property
    def budget(self) -> Budget:
        """The request budget shared by every client using this key."""
        return self._req.budget

    @property
    def request_count(self) -> int:
        """Requests actually sent by this client (retries included)."""
        return self._req.request_count

    def counting(self) -> AbstractContextManager[Tally]:
        """``with pg.counting() as tally:`` counts only the requests sent by the code inside.

        Unlike a difference of :attr:`request_count`, it leaves out what widgets and
        charts on the same client send meanwhile from their own jobs.
        """
        return self._req.counting()

    @property
    def last_request_id(self) -> str | None:
        return self._req.last_request_id

    @property
    def requester(self) -> Requester:
        return self._req

    def _path(self, service_id: str | None = None, *tail: str) -> str:
        path = f"/v1/organizations/{quote(self.org_id, safe='')}/postgres"
        if service_id is not None:
            path += "/" + quote(service_id, safe="")
        return "/".join([path, *(quote(t, safe="-") for t in tail)])

    def _remember(self, service_id: str, password: SecretStr | None, cs: SecretStr | None) -> None:
        if password is not None:
            self._known[service_id] = KnownCredentials(password, cs)
