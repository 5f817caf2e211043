"""The sandbox's realism knobs as one pure ASGI middleware: rate limit, latency, faults.

Each HTTP request goes through these steps, in this order:

1. **Latency**: ``settings.latency`` seconds of sleep before anything else, so
   every answer (429s included) is that much slower.
2. **Rate limit** (on by default, like the real API: 10 requests per 10 s per
   API key). Only a request that proves the key (its Basic ``Authorization``
   carries the right key ID *and* secret, checked by ``key_of``) spends that
   key's budget; any other request (no header, a wrong secret, a made-up key ID)
   is counted per client address. The key ID is no secret, so a wrong secret
   must not use up the real key's budget, and a stream of random key IDs must not
   escape the limit. A request past the limit gets a 429 with the error
   envelope, ``Retry-After`` and ``X-RateLimit-Reset``, and does not use up any
   budget.
3. **Fault injection**: one draw from ``random.Random(settings.seed)`` per
   request picks at most one kind from ``settings.faults``:

   - ``"500"``, ``"503"``, ``"429"``: answered here with the error envelope,
     before the handler runs, so the request has no side effect;
   - ``"drop"``: the handler runs (its side effect happens), then the
     connection is dropped after the response headers. uvicorn closes the
     transport, and the client sees a protocol error. Clients can thus be
     tested for not blindly resending a create.

Requests carrying the ``X-PgCloud-Sandbox-Probe`` header *and* the sandbox's key
(the liveness checks of :mod:`pgcloud_nb.sandbox.launcher`) skip all three.
Otherwise starting the sandbox would use up the user's budget, fail on an
injected 503, and shift the seeded fault sequence. Without the key the header
means nothing: anyone could otherwise send it to escape the limit.

Counters for tests are in :class:`FaultStats`: pass one in, or read the
middleware's own from ``app.state.fault_stats`` (set on the first scope it sees,
the lifespan's under a server).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from pgcloud_nb.sandbox.settings import FAULT_KINDS, Settings

__all__ = [
    "PROBE_HEADER",
    "FaultMiddleware",
    "FaultStats",
    "KeyOf",
    "RateLimiter",
    "rate_limit_key",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("pgcloud_nb.sandbox.api.realism")

PROBE_HEADER = "X-PgCloud-Sandbox-Probe"
_PROBE = PROBE_HEADER.lower().encode()

_MESSAGES = {
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


@dataclass
class FaultStats:
    """What the middleware did. ``answered`` counts answers delivered by the app."""

    answered: int = 0
    limited: int = 0
    probes: int = 0
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "limited": self.limited,
            "probes": self.probes,
            "injected": dict(self.injected),
        }

    def reset(self) -> None:
        self.answered = self.limited = self.probes = 0
        self.injected = dict.fromkeys(FAULT_KINDS, 0)


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key.

    This is a sliding-window log: it keeps the times of the accepted requests
    of each key. We chose it over a token bucket for two reasons. First, it
    enforces the documented rule exactly: no ``window``-long span ever holds
    more than ``limit`` requests. A bucket refills gradually, so it allows
    about ``limit`` + refill within one window. Code that passes here
    therefore passes the real API's limit, whether that is a fixed or a
    sliding window. Second, the wait is exact: the oldest accepted request
    leaves the window at a known time. The log costs at most ``limit``
    floats per key.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._log: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> float:
        """Take a slot: 0.0 if granted, else the seconds until one frees (nothing is taken)."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        log = self._log.setdefault(key, deque())
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) >= self.limit:
            return max(log[0] + self.window - now, 0.001)
        log.append(now)
        if len(self._log) > 1024:  # forget idle keys; unauthenticated callers can make many
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, log in self._log.items() if not log or log[-1] <= now - self.window]:
            del self._log[key]


KeyOf = Callable[[str], str | None]
"""The key ID an ``Authorization`` header proves (right ID and secret), else None."""


def _authorization(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")  # as Starlette reads headers
    return ""


def rate_limit_key(scope: Scope, key_of: KeyOf | None) -> str:
    """``key:<key id>`` for a request that proves its key, else ``ip:<client address>``."""
    key_id = key_of(_authorization(scope)) if key_of is not None else None
    if key_id is not None:
        return "key:" + key_id
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def send_error(
    send: Send, status: int, error: str, headers: dict[str, str] | None = None
) -> None:
    """Answer with the API's error envelope ``{status, error, requestId}``."""
    body = json.dumps({"status": status, "error": error, "requestId": str(uuid.uuid4())}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Pure ASGI middleware applying ``settings``' latency, rate limit and faults."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        stats: FaultStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        key_of: KeyOf | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.key_of = key_of  # None: no request proves a key (all are counted per address)
        self.stats = stats if stats is not None else FaultStats()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_window, clock)
        self.rng = random.Random(settings.seed)
        self._published = False
        # Cumulative thresholds in FAULT_KINDS order, so a seed always gives the same sequence.
        self._thresholds: list[tuple[float, str]] = []
        total = 0.0
        for kind in FAULT_KINDS:
            if share := settings.faults.get(kind, 0.0):
                total += share
                self._thresholds.append((total, kind))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._published and (app := scope.get("app")) is not None:
            app.state.fault_stats = self.stats  # Starlette puts itself in every scope
            self._published = True
        if scope["type"] != "http":  # lifespan and websockets pass untouched
            await self.app(scope, receive, send)
            return
        budget = rate_limit_key(scope, self.key_of)
        if budget.startswith("key:") and any(n == _PROBE for n, _ in scope.get("headers", ())):
            self.stats.probes += 1
            await self.app(scope, receive, send)
            return
        if self.settings.latency > 0:
            await anyio.sleep(self.settings.latency)

        wait = self.limiter.acquire(budget)
        if wait:
            self.stats.limited += 1
            s = self.settings
            await send_error(
                send,
                429,
                f"Rate limit exceeded: {s.rate_limit} requests per {s.rate_window:g} s "
                f"per API key. Retry in {math.ceil(wait)} s.",
                _retry_headers(wait),
            )
            return

        kind = self._draw()
        if kind is None:
            await self.app(scope, receive, send)
            self.stats.answered += 1
            return
        # Said in server.log, so an odd answer is never a mystery.
        log.info("injected fault %s on %s %s", kind, scope["method"], scope["path"])
        self.stats.injected[kind] += 1
        if kind == "drop":
            await self.app(scope, receive, _dropping(send))
        else:
            status = int(kind)
            await send_error(
                send,
                status,
                f"{_MESSAGES[status]} (injected by the sandbox's fault settings)",
                _retry_headers(1.0) if status == 429 else None,
            )

    def _draw(self) -> str | None:
        if not self._thresholds:
            return None  # no draw, so adding faults later does not shift anything else
        r = self.rng.random()
        return next((kind for limit, kind in self._thresholds if r < limit), None)


def _retry_headers(wait: float) -> dict[str, str]:
    # Whole seconds, rounded up: a client that waits this long finds a free slot.
    # Terraform's provider reads X-RateLimit-Reset as seconds to wait (docs/api-behaviour.md §2.2).
    seconds = str(max(1, math.ceil(wait)))
    return {"Retry-After": seconds, "X-RateLimit-Reset": seconds}


def _dropping(send: Send) -> Send:
    """A ``send`` that forwards only the response headers, announcing a body never sent.

    When the app returns, uvicorn sees an incomplete response and closes the
    connection. The client has a Content-Length it can never read in full.
    """

    async def drop(message: Message) -> None:
        if message["type"] != "http.response.start":
            return
        headers = [
            (k, v)
            for k, v in message.get("headers", [])
            if k.lower() not in (b"content-length", b"transfer-encoding")
        ]
        length = next(
            (v for k, v in message.get("headers", []) if k.lower() == b"content-length"), b"0"
        )
        # A positive length, so even an empty answer is visibly cut short.
        headers.append((b"content-length", str(max(int(length), 1)).encode()))
        await send({**message, "headers": headers})

    return drop
