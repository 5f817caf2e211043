"""pgcloud_nb: a notebook toolkit for the ClickHouse Cloud Managed Postgres API.

``pg = pgcloud_nb.connect()`` gives a :class:`Client` for every API operation;
with no cloud credentials it attaches to (or starts) the local sandbox.
"""

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
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnexpectedStateError,
    WaitError,
    WaitTimeout,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "CredentialsUnknownError",
    "NotFoundError",
    "PermissionDeniedError",
    "PgCloudError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnexpectedStateError",
    "WaitError",
    "WaitTimeout",
    "__version__",
]
