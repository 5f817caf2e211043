"""One request budget per API key in the whole process, and the retry policy.

The real API allows 10 requests per 10 s per key (docs/api-behaviour.md §2.1). Waiters,
charts, widgets and the user's own calls all draw from the same
:class:`Budget`, so together they never outrun it: :func:`budget_for` hands out
one instance per ``(base_url, key id)``.

The budget is a sliding window of send times. Threads block in
:meth:`Budget.acquire`; asyncio code (charts on the kernel's loop) must not
block, so it asks :meth:`Budget.delay` / :meth:`Budget.try_acquire` instead.
A 429 from the server means our view of the window was wrong (another process
uses the key): :meth:`Budget.penalize` pauses every user of the key.

Pacing lives here too, so that every poller asks the same object how often it
may ask: :meth:`Budget.poll_interval` (waiters: at most half the window's
slots, slower when they run low), :meth:`Budget.paced` (an auto-refresher's
interval, stretched to its share) and :meth:`Budget.has_room` (whether a
background refresh may spend a request now, leaving the user's own calls theirs).
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Budget", "RetryPolicy", "budget_for", "retry_after_seconds"]

DEFAULT_LIMIT = 10
DEFAULT_WINDOW = 10.0
# The server counts a request when it arrives, we count it when we send it; this
# margin absorbs latency jitter so our window never looks shorter than the server's.
MARGIN = 0.15
UNLIMITED = 2**31 - 1  # remaining() of an unlimited budget
# Bounds of a wait's poll interval: never busier than this, never deafer than that.
MIN_POLL_INTERVAL = 0.5
MAX_POLL_INTERVAL = 30.0


class Budget:
    """At most ``limit`` requests in any ``window`` seconds (``limit=0``: unlimited)."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 0 or window <= 0:
            raise ValueError("a budget needs limit >= 0 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._cond = threading.Condition()
        self.acquired = 0  # slots handed out since creation (for benchmarks)
        self.penalties = 0  # 429s reported

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(0)

    def __repr__(self) -> str:
        if not self.limit:
            return "Budget(unlimited)"
        return f"Budget({self.limit}/{self.window:g}s, {self.remaining()} free)"

    def _span(self) -> float:
        return self.window + MARGIN

    def _prune(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self._span():
            self._sent.popleft()

    def _delay(self, now: float) -> float:
        wait = max(0.0, self._paused_until - now)
        if self.limit:
            self._prune(now)
            if len(self._sent) >= self.limit:
                wait = max(wait, self._sent[0] + self._span() - now)
        return wait

    def delay(self) -> float:
        """Seconds until a request could be sent (0.0: now). Never blocks."""
        with self._cond:
            return self._delay(self._clock())

    def remaining(self) -> int:
        """Free slots in the current window (``limit`` when unlimited)."""
        with self._cond:
            now = self._clock()
            if now < self._paused_until:
                return 0
            if not self.limit:
                return UNLIMITED
            self._prune(now)
            return self.limit - len(self._sent)

    def _take(self, now: float) -> None:
        if self.limit:
            self._sent.append(now)
        self.acquired += 1

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now; never blocks (safe on an event loop)."""
        with self._cond:
            now = self._clock()
            if self._delay(now) > 0:
                return False
            self._take(now)
            return True

    def acquire(self, timeout: float | None = None) -> float:
        """Block until a slot is free, take it, and return the seconds waited.

        Raises ``TimeoutError`` if no slot frees up within ``timeout`` seconds.
        """
        start = self._clock()
        with self._cond:
            while True:
                now = self._clock()
                wait = self._delay(now)
                if wait <= 0:
                    self._take(now)
                    return now - start
                if timeout is not None and now + wait > start + timeout:
                    raise TimeoutError(f"no request slot within {timeout:.1f}s ({self!r})")
                # Condition.wait releases the lock, so other threads can query meanwhile.
                self._cond.wait(wait)

    def penalize(self, seconds: float) -> None:
        """Pause every user of this budget for ``seconds`` (after a 429)."""
        with self._cond:
            self.penalties += 1
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
            self._cond.notify_all()

    def usage(self) -> float:
        """Share of the window's slots in use, 0.0–1.0 (for gauges in widgets)."""
        if not self.limit:
            return 0.0
        return 1.0 - self.remaining() / self.limit

    # -- pacing: how often pollers may ask ------------------------------------------------

    def poll_interval(self) -> float:
        """Seconds between a wait's polls: at most half the window's slots, slower when few free."""
        if not self.limit:
            return MIN_POLL_INTERVAL
        interval = self.window / max(1.0, self.limit / 2)
        free = self.remaining() / self.limit
        if free < 0.5:  # others are busy with the key: give them room
            interval *= 0.5 / max(free, 0.1)
        return min(MAX_POLL_INTERVAL, max(MIN_POLL_INTERVAL, interval))

    def paced(self, interval: float, share: float) -> float:
        """``interval``, stretched so that one poller alone takes at most ``share`` of the slots."""
        if not self.limit:
            return interval
        return max(interval, self.window / (self.limit * share))

    def has_room(self, reserve: float = 0.5) -> bool:
        """Whether a background refresh may spend a request now.

        Auto-refreshers (fleet table, charts) skip a beat when less than ``reserve``
        of the window is free, so the user's own calls and waits keep their share.
        """
        if not self.limit:
            return True
        return self.delay() == 0 and self.remaining() >= self.limit * reserve


_budgets: dict[tuple[str, str], Budget] = {}
_budgets_lock = threading.Lock()


def budget_for(base_url: str, key_id: str) -> Budget:
    """The process-wide budget of one key on one API (made at first use, 10/10 s)."""
    key = (base_url.rstrip("/"), key_id)
    with _budgets_lock:
        if key not in _budgets:
            _budgets[key] = Budget()
        return _budgets[key]


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait per ``Retry-After`` (seconds or HTTP date) or ``X-RateLimit-Reset``.

    ``X-RateLimit-Reset`` is read as seconds when small and as a Unix epoch when
    it looks like one (the real API's form is undocumented, docs/api-behaviour.md §2.2).
    """
    wall = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - wall)
            except (ValueError, TypeError):
                pass
    value = headers.get("x-ratelimit-reset")
    if value:
        try:
            number = float(value)
        except ValueError:
            return None
        if number > 1e12:  # epoch milliseconds
            number /= 1000
        return max(0.0, number - wall) if number > 1e9 else max(0.0, number)
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS style) inside a total deadline."""

    deadline: float = 120.0  # seconds for all attempts of one call, waits included
    base: float = 0.5
    cap: float = 10.0
    max_attempts: int = 8
    max_retry_after: float = 60.0  # a server asking for longer than this gets an error instead

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``attempt`` (1-based): uniform in [0, min(cap, base·2^n)]."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return (rng or random).uniform(0, ceiling)
