"""pgcloud_nb: a notebook toolkit for the ClickHouse Cloud Managed Postgres API.

``pg = pgcloud_nb.connect()`` gives a :class:`Client` for every API operation;
with no cloud credentials it attaches to (or starts) the local sandbox.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .__about__ import __version__
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CredentialsUnknownError,
    NotFoundError,
    PermissionDeniedError,
    PgCloudError,
    PrometheusParseError,
    RateLimitError,
    SandboxUnavailableError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnexpectedStateError,
    WaitError,
    WaitTimeout,
)

if TYPE_CHECKING:
    import httpx

    from .client import Client
    from .ratelimit import Budget

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "CredentialsUnknownError",
    "NotFoundError",
    "PermissionDeniedError",
    "PgCloudError",
    "PrometheusParseError",
    "RateLimitError",
    "SandboxUnavailableError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnexpectedStateError",
    "WaitError",
    "WaitTimeout",
    "__version__",
    "connect",
]


def connect(
    api_key: str | None = None,
    api_secret: str | None = None,
    *,
    org_id: str | None = None,
    base_url: str | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
    sandbox: bool | None = None,
    transport: httpx.BaseTransport | None = None,
    budget: Budget | None = None,
) -> Client:
    """A :class:`Client` for the key found first among: arguments, environment, ``.env``.

    With no key anywhere it attaches to the local sandbox of ``$PGCLOUD_SANDBOX_HOME``
    (what ``pgcloud-nb lab`` sets), reading its key from that home, and starts it if
    needed (``sandbox=True`` forces that, ``sandbox=False`` forbids it); ``source`` is
    then ``"sandbox"``. An API that cannot be reached fails a call within seconds
    with a one-line :class:`TransportError`. The org is
    ``org_id``, else ``CLICKHOUSE_ORG_ID``, else the only org the key sees.
    ``budget`` defaults to the key's process-wide 10 requests / 10 s budget.
    """
    from .client import Client
    from .credentials import resolve
    from .ratelimit import budget_for

    creds = resolve(
        api_key, api_secret, org_id=org_id, base_url=base_url, env_file=env_file, sandbox=sandbox
    )
    client = Client(
        key_id=creds.key_id,
        key_secret=creds.key_secret,
        org_id=creds.org_id or "",
        base_url=creds.base_url,
        source=creds.source,
        budget=budget if budget is not None else budget_for(creds.base_url, creds.key_id),
        transport=transport,
    )
    if not creds.org_id:
        orgs = client.list_organizations()
        if len(orgs) != 1:
            client.close()
            raise ConfigurationError(
                f"this key sees {len(orgs)} organizations; pass org_id= or set CLICKHOUSE_ORG_ID"
                + (f" (one of: {', '.join(str(o.get('id')) for o in orgs)})" if orgs else "")
            )
        client.org_id = str(orgs[0]["id"])
    return client


def __getattr__(name: str) -> object:
    # `pgcloud_nb.Client` without importing httpx-heavy modules at package import.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'pgcloud_nb' has no attribute {name!r}")
