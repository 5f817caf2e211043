"""Every exception pgcloud_nb raises, in one tree.

::

    PgCloudError
    ├── ConfigurationError          no credentials / no org / ambiguous org
    ├── CredentialsUnknownError     connect_service() on a service whose password we never saw
    ├── SandboxUnavailableError     the local sandbox could not be started (also a RuntimeError)
    ├── APIError                    the API answered with its error envelope
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── RateLimitError          429 (.retry_after)
    │   └── ServerError             5xx
    ├── UnexpectedResponseError     a body that is not the documented envelope
    ├── PrometheusParseError        a malformed line of Prometheus text (also a ValueError)
    ├── TransportError              connect/read/write failure (wraps the httpx error)
    └── WaitError
        ├── WaitTimeout             the wanted state did not come in time (also a TimeoutError)
        └── UnexpectedStateError    the service went somewhere it cannot come back from

``status_error()`` is the one place that maps an HTTP status to a class (as
stripe's requestor does). No error text ever carries a secret: bodies are passed
through :func:`~pgcloud_nb.redaction.redact` before they are quoted, URLs lose
their userinfo, and the text is redacted again whenever it is shown. Errors
survive pickling (multiprocessing, joblib).
"""

from __future__ import annotations

from typing import Any

from .redaction import redact, safe_url, snippet

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
    "PrometheusParseError",
    "RateLimitError",
    "SandboxUnavailableError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnexpectedStateError",
    "WaitError",
    "WaitTimeout",
    "status_error",
]


class PgCloudError(Exception):
    """Base class of every pgcloud_nb error.

    Text is redacted when the error is made (``args``) and again when shown, so
    a secret learned after the error was made (a password from a later create)
    is still masked.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(PgCloudError):
    """connect() could not work out the credentials, the organization or the URL."""


class CredentialsUnknownError(PgCloudError):
    """The client never saw this service's password (it came only in a create/reset response)."""


class SandboxUnavailableError(PgCloudError, RuntimeError):
    """connect() fell back to the local sandbox, and it could not be started or reached.

    The sandbox's own error is the ``__cause__``; its text (the server log's tail)
    is in the message. A ``RuntimeError`` too, as the sandbox's error always was.
    """


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
    """403: the key lacks the permission this operation needs (docs/api-behaviour.md §1.6)."""


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


class PrometheusParseError(PgCloudError, ValueError):
    """A line of a Prometheus exposition is malformed; ``lineno`` counts from 1."""

    def __init__(self, lineno: int, line: str, reason: str) -> None:
        self.lineno, self.line, self.reason = lineno, line, reason
        super().__init__(f"line {lineno}: {reason}: {line!r}")

    def __reduce__(self) -> tuple[Any, ...]:  # the constructor takes three arguments, not one
        return (type(self), (self.lineno, self.line, self.reason))


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
