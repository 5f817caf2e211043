"""The shared request budget and the retry policy's arithmetic."""

from __future__ import annotations

import random
import threading
import time

import pytest

from pgcloud_nb import ratelimit
from pgcloud_nb.ratelimit import Budget, RetryPolicy, budget_for, retry_after_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_and_frees_slots() -> None:
    clock = FakeClock()
    budget = Budget(3, 10.0, clock=clock)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert budget.remaining() == 0
    assert budget.delay() == pytest.approx(10.0 + ratelimit.MARGIN)
    clock.now += 5
    assert not budget.try_acquire()  # still inside the window: sliding, not fixed
    clock.now += 5 + ratelimit.MARGIN
    assert budget.remaining() == 3 and budget.delay() == 0.0
    assert budget.try_acquire()
    assert budget.usage() == pytest.approx(1 / 3)


def test_penalize_pauses_everyone() -> None:
    clock = FakeClock()
    budget = Budget(10, 10.0, clock=clock)
    budget.penalize(4.0)
    assert budget.delay() == pytest.approx(4.0)
    assert not budget.try_acquire() and budget.remaining() == 0
    clock.now += 4.0
    assert budget.try_acquire() and budget.penalties == 1


def test_unlimited_budget_never_waits() -> None:
    budget = Budget.unlimited()
    assert all(budget.try_acquire() for _ in range(1000))
    assert budget.delay() == 0.0 and budget.usage() == 0.0
    assert budget.remaining() == ratelimit.UNLIMITED


def test_acquire_blocks_until_a_slot_frees_and_times_out() -> None:
    budget = Budget(2, 0.3)
    start = time.monotonic()
    for _ in range(3):
        budget.acquire()
    assert time.monotonic() - start >= 0.3
    budget.acquire()
    with pytest.raises(TimeoutError):
        budget.acquire(timeout=0.01)


def test_threads_share_the_budget_without_exceeding_it() -> None:
    budget = Budget(5, 0.5)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            budget.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert len(stamps) == 12
    for i in range(len(stamps) - 5):  # any 6 consecutive sends span at least one window
        assert stamps[i + 5] - stamps[i] >= 0.5


def test_budget_for_is_one_per_key_and_url() -> None:
    a = budget_for("https://api.example/", "key-a")
    assert budget_for("https://api.example", "key-a") is a
    assert budget_for("https://api.example", "key-b") is not a
    assert budget_for("https://other.example", "key-a") is not a
    assert (a.limit, a.window) == (10, 10.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:10 GMT"}, 10.0),
        ({"x-ratelimit-reset": "7"}, 7.0),
        ({"x-ratelimit-reset": str(1767225600 + 6)}, 6.0),  # epoch seconds
        ({"x-ratelimit-reset": str((1767225600 + 2) * 1000)}, 2.0),  # epoch milliseconds
        ({"retry-after": "2", "x-ratelimit-reset": "9"}, 2.0),  # Retry-After wins
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert retry_after_seconds(headers, now=now) == expected


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(1)
    for attempt in range(1, 10):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # full jitter spreads over the whole range


def test_poll_interval_follows_the_budget() -> None:
    now = [0.0]
    budget = Budget(10, 10.0, clock=lambda: now[0])
    assert budget.poll_interval() == 2.0  # half the window's budget at most
    for _ in range(8):
        budget.try_acquire()  # others (charts, widgets) are busy with the key
    assert budget.poll_interval() == pytest.approx(5.0)
    assert Budget.unlimited().poll_interval() == ratelimit.MIN_POLL_INTERVAL
    budget.penalize(60.0)  # after a 429 nothing is free: five times slower than at ease
    assert budget.poll_interval() == pytest.approx(10.0)
    assert Budget(1, 100.0).poll_interval() == ratelimit.MAX_POLL_INTERVAL  # capped


def test_pacing_of_background_refreshers() -> None:
    budget = Budget(10, 10.0)
    assert budget.paced(1.0, 0.1) == pytest.approx(10.0)  # 10% of 10/10 s: one a 10 s
    assert budget.paced(60.0, 0.2) == 60.0  # already slower than its share
    assert budget.has_room()
    for _ in range(6):
        budget.try_acquire()
    assert not budget.has_room()  # under half free: skip a beat
    assert budget.has_room(reserve=0.4)
    unlimited = Budget.unlimited()
    assert unlimited.paced(0.5, 0.1) == 0.5 and unlimited.has_room()
