"""Sending one API call: budget, auth, envelope, status → error, retries.

The one function that turns an answer into a result or an error lives here,
as in stripe's ``_api_requestor``. Every attempt first takes a slot from the
key's shared :class:`~pgcloud_nb.ratelimit.Budget`.

Retry rules:

- 429: wait ``Retry-After`` / ``X-RateLimit-Reset`` (else backoff), pause the
  whole budget for that long, retry. A 429 means the request was not served,
  so even a create is safe to resend.
- a connection that cannot be made (refused, connect timeout, bad URL scheme):
  a short, bounded retry (:data:`CONNECT_WAITS`, a couple of seconds in all; none for
  a bad scheme), then a :class:`~pgcloud_nb.errors.TransportError` whose one line names
  the URL and the fix (start the sandbox, or check ``CLICKHOUSE_API_URL``). Nothing was
  sent, so nothing can be duplicated; but an API that is not listening will not start
  listening within the policy's two minutes either, and a notebook must not hang on it.
  The httpx exception stays the ``__cause__``, cut to one line (no chain of httpcore
  frames).
- 5xx and other transport failures: exponential backoff with full jitter, inside the
  policy's total deadline. Such an attempt may have been served with its answer lost.
- any other 4xx: raised at once, except those that prove an earlier attempt worked.

A call whose earlier attempt may have been served is resent, looked for, or not sent again,
by the rules of :mod:`pgcloud_nb.resend` (docs/api-behaviour.md §2.3), which the arguments
``recover``, ``gone_ok``, ``under_way`` and ``once`` of :meth:`Requester.call` pick.

What to ask for and how to read a success come from the embedded spec
(:func:`pgcloud_nb.contract.operation`): the ``Accept`` header names the media types
the operation declares (``application/x-pem-file`` for the CA bundle,
``text/plain`` for Prometheus, JSON elsewhere), and a success whose declared
type is not JSON is returned as text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx

from .__about__ import __version__
from .contract import operation
from .errors import (
    APIError,
    PgCloudError,
    RateLimitError,
    TransportError,
    UnexpectedResponseError,
    status_error,
)
from .parsing import When, iso_time, parse_model, parse_models
from .ratelimit import Budget, RetryPolicy, retry_after_seconds
from .redaction import safe_url, snippet
from .resend import LAST_LOOK, UnderWay, deadline, done_before, look, maybe_done

__all__ = ["Requester", "Tally", "When", "iso_time", "parse_model", "parse_models"]

log = logging.getLogger("pgcloud_nb.http")


# JSON may escape a lone UTF-16 surrogate (\ud800); Python decodes it into a str no UTF-8
# encoder (a notebook's output, pandas' Arrow strings) accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Failures raised before a byte of the request left: resending can never duplicate anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# No connection could be made to the API: retried only briefly (module docstring).
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)
# Waits before the retries of a connection that could not be made: 4 attempts in ~2 s.
CONNECT_WAITS = (0.25, 0.5, 1.0)
CONNECT_WINDOW = 3.0  # no retry once connecting has failed for this long (connect timeouts)
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (reads keep the client's timeout)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Tally:
    """Requests sent by one piece of code: see :meth:`Requester.counting`."""

    requests: int = 0


# The tallies open in this thread or task, with the requester each one counts for. A
# ContextVar, not a field: a widget's job sends requests from an executor thread while a
# cell's code counts its own on the kernel's thread, and neither may see the other's.
_TALLIES: ContextVar[tuple[tuple[Requester, Tally], ...]] = ContextVar(
    "pgcloud_nb_tallies", default=()
)


class Requester:
    """Sends calls for one key; shared by a Client and everything built on it."""

    def __init__(
        self,
        *,
        base_url: str,
        key_id: str,
        key_secret: str,
        budget: Budget,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.budget = budget
        self.policy = policy or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url,
            auth=httpx.BasicAuth(key_id, key_secret),
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            headers={"Accept": "application/json", "User-Agent": f"pgcloud-nb/{__version__}"},
        )
        self._lock = threading.Lock()
        self.request_count = 0  # attempts actually sent
        self.retries = 0
        self.rate_limited = 0  # 429s received (and absorbed, unless they ran out of retries)
        self.last_request_id: str | None = None
        self.sleep: Callable[[float], None] = time.sleep  # tests swap these
        self.clock: Callable[[], float] = time.monotonic

    def close(self) -> None:
        self._http.close()

    @contextlib.contextmanager
    def counting(self) -> Iterator[Tally]:
        """Count the requests this code sends, not those of other threads or tasks.

        ``request_count`` counts every request of the key's client, so a difference
        of it also counts what a widget's refresh sent meanwhile from its job.
        """
        tally = Tally()
        token = _TALLIES.set((*_TALLIES.get(), (self, tally)))
        try:
            yield tally
        finally:
            _TALLIES.reset(token)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        result: bool = True,
        recover: Callable[[], Any] | None = None,
        gone_ok: bool = False,
        under_way: str | None = None,
        once: bool = False,
        envelope: bool = False,
    ) -> Any:
        """The envelope's ``result``, or the text body of an operation that declares no JSON.

        ``result=False``: the answer may come without a result (DELETE, and a
        password reset that sent the password). ``recover``, ``gone_ok``, ``under_way``
        and ``once``: how a call that is not idempotent is resent (:mod:`pgcloud_nb.resend`);
        when an earlier attempt did the job it returns None (``gone_ok``) or an
        :class:`~pgcloud_nb.resend.UnderWay` (``under_way``). ``envelope``: the whole answer,
        for a list whose paging fields sit beside ``result`` (``nextCursor``).
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        op = operation(method, path)
        text = op is not None and not op.json
        headers = {"Accept": op.accept if op is not None else "application/json"}
        until = deadline(self.clock() + self.policy.deadline)  # sooner inside a lookup
        attempt = 0
        unreachable = 0  # attempts that could not open a connection
        since: float | None = None  # when the first of them started
        earlier: PgCloudError | None = None  # what the last attempt that may have been served met
        while True:
            attempt += 1
            self.budget.acquire()
            with self._lock:
                self.request_count += 1
            for owner, tally in _TALLIES.get():
                if owner is self:
                    tally.requests += 1
            started = self.clock()
            wait: float | None = None
            try:
                response = self._http.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.HTTPError as exc:
                sent = not isinstance(exc, _NOT_SENT)
                if isinstance(exc, _UNREACHABLE):
                    unreachable += 1
                    since = since if since is not None else started
                    elapsed = self.clock() - since
                    message = self._unreachable(exc, unreachable, elapsed)
                else:
                    message = f"{type(exc).__name__}: {exc}"
                error: PgCloudError = TransportError(message, method=method, url=path, sent=sent)
                error.__cause__ = _one_line(exc)
                if isinstance(exc, _UNREACHABLE):
                    if (
                        isinstance(exc, httpx.UnsupportedProtocol)
                        or unreachable > len(CONNECT_WAITS)
                        or elapsed > CONNECT_WINDOW
                    ):
                        raise error from exc  # exc is cut to one line above
                    wait = CONNECT_WAITS[unreachable - 1]
            else:
                status = response.status_code
                log.debug(
                    "%s %s -> %s in %.2fs",
                    method,
                    safe_url(response.request.url),
                    status,
                    self.clock() - started,
                )
                if status < 400:
                    return self._parse(response, text=text, result=result, whole=envelope)
                api_error = self._error(response)
                if earlier is not None and done_before(api_error, gone_ok, under_way):
                    log.info("%s %s: an earlier attempt did it (%s)", method, path, api_error)
                    return UnderWay(api_error, earlier) if api_error.status == 409 else None
                if isinstance(api_error, RateLimitError):
                    with self._lock:
                        self.rate_limited += 1
                    wait = api_error.retry_after
                    if wait is not None and wait > self.policy.max_retry_after:
                        raise api_error
                    wait = wait if wait is not None else self.policy.backoff(attempt)
                    self.budget.penalize(wait)
                    sent = False  # a 429 was not served
                elif status >= 500:
                    sent = True
                else:
                    raise api_error
                error = api_error
            earlier = error if sent else earlier
            checkable = recover if earlier is not None else None
            if once and earlier is not None:
                raise maybe_done(error, method, path)
            if wait is None:
                wait = self.policy.backoff(attempt)
            last = attempt >= self.policy.max_attempts or self.clock() + wait > until
            if last and checkable is None:
                raise error
            if not last:
                log.info("retrying %s %s in %.1fs after: %s", method, path, wait, error)
                self.sleep(wait)
            if checkable is not None:
                # Looked for just before the resend, after the wait (what the lost attempt
                # made has had the longest time to show in the list), and once more on giving
                # up: then one attempt per request, the call's time being up.
                found = look(checkable, error, method, path, until=LAST_LOOK if last else until)
                if found is not None:
                    return found
                if last:
                    raise maybe_done(error, method, path)
            with self._lock:
                self.retries += 1

    def _unreachable(self, exc: httpx.HTTPError, attempts: int, elapsed: float) -> str:
        """One line: which URL could not be reached, why, and what to do about it."""
        url = self._http.base_url
        if isinstance(exc, httpx.UnsupportedProtocol):
            return (f"cannot reach the API at {safe_url(url)}: not an http(s) URL; "
                    "check CLICKHOUSE_API_URL (or connect(base_url=...))")  # fmt: skip
        reason = str(exc) or type(exc).__name__
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f} s"
        if url.host in _LOCAL_HOSTS or url.host.endswith(".localhost"):
            fix = ("is the sandbox running? Start it with `pgcloud-nb sandbox start` "
                   "(or call pgcloud_nb.connect() again), or check CLICKHOUSE_API_URL")  # fmt: skip
        else:
            fix = "check the network, and CLICKHOUSE_API_URL (or connect(base_url=...))"
        return f"cannot reach the API at {safe_url(url)} ({reason}; {tries}): {fix}"

    def _parse(
        self, response: httpx.Response, *, text: bool, result: bool, whole: bool = False
    ) -> Any:
        if text:
            return response.text
        url = str(response.request.url)
        try:
            body = response.json()
        except ValueError:
            raise UnexpectedResponseError(
                "the answer is not JSON", status=response.status_code, body=response.text, url=url
            ) from None
        if _SURROGATE_ESCAPE.search(response.content):
            body = _without_surrogates(body)
        if not isinstance(body, dict) or (result and "result" not in body):
            raise UnexpectedResponseError(
                "the answer is not the API's {status, requestId, result} envelope",
                status=response.status_code,
                body=response.text,
                url=url,
            )
        rid = body.get("requestId")
        self.last_request_id = rid if isinstance(rid, str) else None
        return body if whole else body.get("result")

    def _error(self, response: httpx.Response) -> APIError:
        """The typed error for a status >= 400 (the stripe-style single mapping)."""
        status = response.status_code
        message = request_id = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
            rid = body.get("requestId")
            request_id = rid if isinstance(rid, str) else None
        if message is None:
            # Error statuses keep their class (a proxy's 502 page is still a ServerError).
            quoted = snippet(response.text, 160) if response.text else "an empty body"
            message = (
                f"{response.reason_phrase or 'error'} (not the API's error envelope: {quoted})"
            )
        self.last_request_id = request_id
        cls = status_error(status)
        extra: dict[str, Any] = {}
        if cls is RateLimitError:
            extra["retry_after"] = retry_after_seconds(response.headers)
        return cls(
            status,
            message,
            request_id=request_id,
            method=response.request.method,
            url=str(response.request.url),
            body=response.text,
            **extra,
        )


def _one_line(exc: BaseException) -> BaseException:
    """``exc`` without its traceback and chain: shown as one line under the error it caused.

    httpx wraps httpcore's exception, which wraps the socket's; printed in full that is
    well over a hundred lines of library frames in a notebook, for one refused connection.
    """
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def _without_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate, in keys and strings, replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value
