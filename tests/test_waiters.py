"""Waiters on a fake clock: states, settle checks, fail-fast, timeouts, interrupts, pacing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgcloud_nb import waiters
from pgcloud_nb.client import Client
from pgcloud_nb.errors import UnexpectedStateError, WaitTimeout
from pgcloud_nb.ratelimit import Budget

ORG, SID = "org", "22222222-2222-4222-8222-222222222222"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(waiters, "_clock", c)
    monkeypatch.setattr(waiters, "_sleep", c.sleep)
    return c


def client_reading(*answers: dict[str, Any] | int, budget: Budget | None = None) -> Client:
    """A client whose GETs return the given services (or statuses) in turn, the last forever."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, int):
            return httpx.Response(answer, json={"status": answer, "error": "x", "requestId": "r"})
        return httpx.Response(200, json={"status": 200, "requestId": "r", "result": answer})

    return Client(
        key_id="k",
        key_secret="s",
        org_id=ORG,
        base_url="https://api.test",
        budget=budget or Budget.unlimited(),
        transport=httpx.MockTransport(handler),
    )


def svc(state: str, **fields: Any) -> dict[str, Any]:
    return {"id": SID, "name": "n", "state": state, **fields}


def test_waits_through_states_to_running(clock: Clock) -> None:
    client = client_reading(svc("creating"), svc("creating"), svc("running"))
    assert client.wait(SID, progress=False).state == "running"
    assert client.request_count == 3 and len(clock.sleeps) == 2


def test_settle_waits_for_patched_fields(clock: Clock) -> None:
    client = client_reading(
        svc("running", size="r8gd.large", tags=[]),
        svc("running", size="r8gd.xlarge", tags=[]),
        svc("running", size="r8gd.xlarge", tags=[{"key": "env", "value": "prod"}]),
    )
    done = client.wait(SID, settle={"size": "r8gd.xlarge", "tags": {"env": "prod"}}, progress=False)
    assert done.size == "r8gd.xlarge" and client.request_count == 3


def test_settle_timeout_names_the_fields(clock: Clock) -> None:
    client = client_reading(svc("running", haType="none"))
    with pytest.raises(WaitTimeout, match="haType is 'none', want 'async'"):
        client.wait(SID, settle={"haType": "async"}, timeout=10, progress=False)


def test_timeout(clock: Clock) -> None:
    client = client_reading(svc("creating"))
    with pytest.raises(WaitTimeout, match="still creating") as info:
        client.wait(SID, timeout=5, progress=False)
    assert info.value.service.state == "creating" and clock.now <= 5


def test_deleting_fails_fast(clock: Clock) -> None:
    client = client_reading(svc("creating"), svc("deleting"))
    with pytest.raises(UnexpectedStateError, match="being deleted"):
        client.wait(SID, progress=False)
    assert client.request_count == 2


def test_unavailable_gets_a_grace_then_fails(clock: Clock) -> None:
    client = client_reading(svc("unavailable"), svc("unavailable"), svc("running"))
    assert client.wait(SID, progress=False).state == "running"  # healed within the grace
    client = client_reading(svc("stopped"))
    with pytest.raises(UnexpectedStateError, match="stopped for"):
        client.wait(SID, progress=False)
    assert waiters.GRACE[waiters.ServiceState.STOPPED] < clock.now < 60


def test_404_while_waiting_for_running(clock: Clock) -> None:
    client = client_reading(404, svc("running"))
    assert client.wait(SID, progress=False).state == "running"  # brief 404 after create is fine
    client = client_reading(404)
    with pytest.raises(UnexpectedStateError, match="gone"):
        client.wait(SID, progress=False)
    assert clock.now <= waiters.NOT_FOUND_GRACE + 5


def test_unknown_state_is_waited_through(clock: Clock) -> None:
    client = client_reading(svc("hibernating"), svc("running"))
    assert client.wait(SID, progress=False).state == "running"


def test_wait_gone(clock: Clock) -> None:
    client = client_reading(svc("deleting"), svc("deleting"), 404)
    client.wait_gone(SID, progress=False)
    assert client.request_count == 3


def test_progress_bar_shows_state_and_closes_on_interrupt(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    closed: list[bool] = []

    class Bar:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def set_postfix_str(self, text: str, refresh: bool = True) -> None:
            shown.append(text)

        def close(self) -> None:
            closed.append(True)

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(waiters, "_sleep", interrupt)
    client = client_reading(svc("creating"))
    with pytest.raises(KeyboardInterrupt):
        client.wait(SID)
    assert shown == ["creating"] and closed == [True]


def test_poll_interval_follows_the_budget() -> None:
    now = [0.0]
    budget = Budget(10, 10.0, clock=lambda: now[0])
    client = client_reading(svc("running"), budget=budget)
    assert waiters.poll_interval(client) == 2.0  # half the window's budget at most
    for _ in range(8):
        budget.try_acquire()  # others (charts, widgets) are busy with the key
    assert waiters.poll_interval(client) == pytest.approx(5.0)
    assert waiters.poll_interval(client_reading(svc("running"))) == waiters.MIN_INTERVAL


def test_polling_alone_stays_within_half_the_budget(clock: Clock) -> None:
    budget = Budget(10, 10.0, clock=clock)
    client = client_reading(svc("creating"), budget=budget)
    with pytest.raises(WaitTimeout):
        client.wait(SID, timeout=60, progress=False)
    assert client.request_count <= 60 / 10 * 5 + 1
