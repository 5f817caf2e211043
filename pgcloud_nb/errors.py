"""Every exception pgcloud_nb raises, in one tree.

::

    PgCloudError
    ├── ConfigurationError          no credentials / no org / ambiguous org
    ├── CredentialsUnknownError     connect_service() on a service whose password we never saw
    ├── APIError                    the API answered with its error envelope
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── RateLimitError          429 (.retry_after)
    │   └── ServerError             5xx
    ├── UnexpectedResponseError     a body that is not the documented envelope
    ├── TransportError              connect/read/write failure (wraps the httpx error)
    └── WaitError
        ├── WaitTimeout             the wanted state did not come in time
        └── UnexpectedStateError    the service went somewhere it cannot come back from

``status_error()`` is the one place that maps an HTTP status to a class (as
stripe's requestor does). No error text ever carries a secret: bodies are passed
through :func:`redact` before they are quoted, and URLs lose their userinfo.
"""

from __future__ import annotations

import re
import threading
from typing import Any

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
    "redact",
    "status_error",
]

MASK = "**********"
SNIPPET_LIMIT = 300

# "password": "…" / "connectionString": "…" / key_secret=… in JSON, form or log text.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?(?:password|connection_?string|secret|key_secret|api_secret|token)["']?\s*[:=]\s*)
    (?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}"']+)
    """
)
# postgres://user:pw@host → postgres://user:***@host (any scheme)
_URI_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"']+):[^@\s\"']*@")
_ANY_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"']*@")
_BASIC_AUTH = re.compile(r"(?i)(authorization\s*[:=]\s*\"?basic\s+)[A-Za-z0-9+/=]+")

# Secrets this process has seen (API secrets, service passwords): masked wherever they appear,
# even in text no pattern above would recognise (a password echoed inside an error message).
_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Have :func:`redact` mask ``value`` wherever it appears from now on."""
    if value and len(value) >= 4:  # too short a string would mask ordinary words
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` with passwords, connection strings, URI userinfo and known secrets masked."""
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    text = _URI_USERINFO.sub(lambda m: m.group(1) + f":{MASK}@", text)
    text = _BASIC_AUTH.sub(lambda m: m.group(1) + MASK, text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def snippet(text: str, limit: int = SNIPPET_LIMIT) -> str:
    """A redacted, single-line, truncated quote of a body for an error message."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def safe_url(url: object) -> str:
    """The URL without userinfo (and so without credentials)."""
    return redact(_ANY_USERINFO.sub(r"\1", str(url)))


class PgCloudError(Exception):
    """Base class of every pgcloud_nb error.

    Text is redacted again when shown, so a secret learned after the error was
    made (a password from a later create) is still masked.
    """

    def __str__(self) -> str:
        return redact(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(PgCloudError):
    """connect() could not work out the credentials, the organization or the URL."""


class CredentialsUnknownError(PgCloudError):
    """The client never saw this service's password (it came only in a create/reset response)."""


class APIError(PgCloudError):
    """The API answered with a status >= 400 and (usually) its error envelope.

    ``message`` is the envelope's ``error`` text, ``request_id`` its ``requestId``
    (quote it to support), ``body`` a redacted snippet of the raw answer.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        request_id: str | None = None,
        method: str = "",
        url: str = "",
        body: str = "",
    ) -> None:
        self.status = status
        self.message = redact(message)
        self.request_id = request_id
        self.method = method
        self.url = safe_url(url) if url else ""
        self.body = snippet(body) if body else ""
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.url else ""
        rid = f" [requestId {self.request_id}]" if self.request_id else ""
        return redact(f"{self.status}: {self.message}{where}{rid}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, message={redact(self.message)!r}, "
            f"request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # keep errors picklable (multiprocessing, joblib)
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[APIError], state: dict[str, Any]) -> APIError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


class BadRequestError(APIError):
    """400: the API refused the request; ``message`` names the field."""


class AuthenticationError(APIError):
    """401: the key id or secret is wrong, or the key was revoked."""


class PermissionDeniedError(APIError):
    """403: the key lacks the permission this operation needs (API-NOTES §1.1)."""


class NotFoundError(APIError):
    """404: no such service (never existed, or deleted)."""


class ConflictError(APIError):
    """409: the service is busy (a transition is in flight) or replicas depend on it."""


class RateLimitError(APIError):
    """429: the key's budget (10 requests / 10 s) is spent; ``retry_after`` in seconds."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None, **kw: Any):
        self.retry_after = retry_after
        super().__init__(status, message, **kw)


class ServerError(APIError):
    """5xx: the API failed; retried with backoff before it reaches you."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def status_error(status: int) -> type[APIError]:
    """The error class for an HTTP status (unlisted 4xx → ``APIError``)."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)


class UnexpectedResponseError(PgCloudError):
    """The answer is not the documented envelope (HTML from a proxy, truncated JSON, …)."""

    def __init__(self, reason: str, *, status: int | None = None, body: str = "", url: str = ""):
        self.reason = reason
        self.status = status
        self.body = snippet(body) if body else ""
        self.url = safe_url(url) if url else ""
        parts = [reason]
        if status is not None:
            parts.append(f"HTTP {status}")
        if self.url:
            parts.append(self.url)
        text = "; ".join(parts)
        super().__init__(f"{text}; body: {self.body!r}" if body else text)


class TransportError(PgCloudError):
    """The request failed below HTTP (connect refused, timeout, dropped connection).

    ``sent`` says whether the request may have reached the server: for a create,
    that decides between resending it and looking for the service by name.
    """

    def __init__(self, message: str, *, method: str = "", url: str = "", sent: bool = True):
        self.method = method
        self.url = safe_url(url) if url else ""
        self.sent = sent
        where = f" ({method} {self.url})" if self.url else ""
        super().__init__(redact(message) + where)


class WaitError(PgCloudError):
    """Base of waiter failures; ``service`` is the last state read (or None)."""

    def __init__(self, message: str, *, service: Any = None) -> None:
        self.service = service
        super().__init__(message)


class WaitTimeout(WaitError, TimeoutError):
    """The wanted state (or settled fields) did not appear before the timeout."""


class UnexpectedStateError(WaitError):
    """The service reached a state the wait cannot end well from (deleting, gone, stopped…)."""
