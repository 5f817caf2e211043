"""Waiters on a fake clock: states, settle checks, fail-fast, timeouts, interrupts, pacing."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from pgcloud_nb import waiters
from pgcloud_nb.client import Client
from pgcloud_nb.errors import UnexpectedStateError, WaitTimeout
from pgcloud_nb.models import PostgresService
from pgcloud_nb.ratelimit import MIN_POLL_INTERVAL, Budget

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


class Line:
    """Stands in for the progress line's output (widget or text): records what it shows."""

    def __init__(self, log: list[str], text: str) -> None:
        self.log = log
        log.append(text)

    def show(self, text: str) -> None:
        self.log.append(text)

    def close(self) -> None:
        self.log.append("closed")


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []
    monkeypatch.setattr(waiters, "_open_line", lambda text: Line(log, text))
    return log


def test_progress_line_closes_on_interrupt_saying_it_stopped(
    clock: Clock, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(waiters, "_sleep", interrupt)
    client = client_reading(svc("creating"))
    with pytest.raises(KeyboardInterrupt):
        client.wait(SID)
    assert lines == [
        "n: creating, waiting for running [00:00]",
        "n: creating, waiting for running [00:00] · stopped",
        "closed",
    ]


def test_progress_line_names_the_service_its_state_and_the_time_waited(
    clock: Clock, lines: list[str]
) -> None:
    """The line a person reads: the name, the state, the wait's end and the time since the
    wait began, from the first line on; no id."""
    client = client_reading(svc("creating", name="orders db"), svc("running", name="orders db"))
    client.wait(SID)
    waited = f"{clock.sleeps[0]:02.0f}"
    assert lines == [
        "orders db: creating, waiting for running [00:00]",
        f"orders db: running [00:{waited}]",
        "closed",
    ]
    lines.clear()
    client_reading(svc("deleting", name="old"), 404).wait_gone(SID)
    assert lines[0] == "old: deleting, waiting until gone [00:00]"
    assert lines[1].startswith("old: gone [00:") and lines[2:] == ["closed"]
    assert not any(SID[:8] in line for line in lines)


def test_progress_line_in_jupyter_is_text_alone_from_its_first_frame(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a kernel the line is one Label widget holding the whole text: no progress box
    (tqdm's notebook bar draws one before the text) and no frame without the state."""
    import ipywidgets
    from IPython import display as ipy_display

    shown: list[Any] = []
    monkeypatch.setattr(waiters, "_in_notebook", lambda: True)
    monkeypatch.setattr(ipy_display, "display", lambda *objs, **kw: shown.extend(objs))
    client = client_reading(svc("creating", name="orders db"), svc("running", name="orders db"))
    client.wait(SID)
    assert len(shown) == 1  # displayed once, then updated in place
    (label,) = shown
    assert isinstance(label, ipywidgets.Label) and "pgcloud-progress" in label._dom_classes
    assert re.fullmatch(r"orders db: running \[00:\d\d\]", label.value)
    assert not isinstance(label, ipywidgets.Box)  # nothing beside the text


def test_progress_line_outside_jupyter_is_tqdms_text_line(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    client_reading(svc("creating", name="orders db"), svc("running", name="orders db")).wait(SID)
    err = capsys.readouterr().err
    assert "orders db: creating, waiting for running [00:00]" in err
    assert re.search(r"orders db: running \[00:\d\d\]", err)


def test_a_wait_needs_only_the_budget_and_one_read(clock: Clock) -> None:
    # waiters.WaitClient, not Client: anything with a budget and get_service can be waited on.
    class Reader:
        budget = Budget(10, 10.0, clock=clock)

        def __init__(self) -> None:
            self.states = iter(["creating", "creating", "running"])

        def get_service(self, service_id: str) -> PostgresService:
            return PostgresService.model_validate(svc(next(self.states)))

    done = waiters.wait_for_state(Reader(), SID, progress=False)
    assert done.state == "running"
    assert clock.sleeps == [2.0, 2.0]  # the budget's poll interval: half its window's slots


def test_polling_alone_stays_within_half_the_budget(clock: Clock) -> None:
    budget = Budget(10, 10.0, clock=clock)
    client = client_reading(svc("creating"), budget=budget)
    with pytest.raises(WaitTimeout):
        client.wait(SID, timeout=60, progress=False)
    assert client.request_count <= 60 / 10 * 5 + 1


# -- one set of rules: the blocking waits and the widgets' jobs drive the same StatePoll ------


def drive(job: Any, clock: Clock) -> Any:
    """Run a widget job to the end on the fake clock (calls inline, pauses on the clock)."""
    from pgcloud_nb.jobs import Call

    value: Any = None
    while True:
        try:
            step = job.send(value)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Call):
            value = step.fn()  # StatePoll.look answers a 404 instead of raising it
        else:
            value = None
            clock.sleep(step)


def outcome(run: Any) -> tuple[str, str]:
    try:
        result = run()
    except (UnexpectedStateError, WaitTimeout) as exc:
        return type(exc).__name__, str(exc)
    return "done", result.state.value if result is not None else "gone"


SCENARIOS = [
    ("running", (svc("creating"), svc("running")), 1800),
    ("running", (404, svc("running")), 1800),
    ("running", (404,), 1800),
    ("running", (svc("creating"), svc("deleting")), 1800),
    ("running", (svc("unavailable"), svc("unavailable"), svc("running")), 1800),
    ("running", (svc("stopped"),), 1800),
    ("running", (svc("hibernating"), svc("running")), 1800),
    ("running", (svc("creating"),), 5),
    ("stopped", (svc("unavailable"), svc("stopped")), 1800),
    (None, (svc("deleting"), svc("deleting"), 404), 1800),
    (None, (svc("deleting"),), 5),
]


@pytest.mark.parametrize(("state", "answers", "timeout"), SCENARIOS)
def test_widget_wait_follows_the_same_rules(
    clock: Clock, state: str | None, answers: tuple[Any, ...], timeout: float
) -> None:
    from pgcloud_nb.jobs import StatusLine, wait_job

    blocking = client_reading(*answers)
    if state is None:
        want = outcome(lambda: blocking.wait_gone(SID, timeout=timeout, progress=False))
    else:
        want = outcome(lambda: blocking.wait(SID, state, timeout=timeout, progress=False))
    spent, clock.now = clock.now, 0.0

    job_client = client_reading(*answers)
    status = StatusLine()
    got = outcome(
        lambda: drive(wait_job(job_client, SID, state, status=status, timeout=timeout), clock)
    )
    assert got == want
    assert job_client.request_count == blocking.request_count and clock.now == spent
    if got[0] == "done":
        assert status.value.startswith(f"✓ n: {got[1]} after ") or (
            got[1] == "gone" and status.value.startswith("✓ n: gone after ")
        )
    else:  # the failure is on the line too, in the theme's error colour
        assert "✗ n: " in status.value or f"✗ {SID}: " in status.value
        assert "var(--jp-error-color1" in status.value


def test_state_poll_decides_without_waiting(clock: Clock) -> None:
    from pgcloud_nb.errors import NotFoundError

    poll = waiters.StatePoll(SID, "running", timeout=60)
    gone = NotFoundError(404, "x", request_id="r")
    assert not poll.observe(gone) and poll.shown == "not found yet" and poll.service is None
    assert not poll.observe(PostgresService.model_validate(svc("creating")))
    assert poll.shown == "creating" and poll.pause(waiters_client()) == MIN_POLL_INTERVAL
    assert poll.observe(PostgresService.model_validate(svc("running")))
    assert poll.service is not None and poll.service.state == "running"
    clock.now = waiters.NOT_FOUND_GRACE
    poll.elapsed = clock.now - poll.started
    with pytest.raises(UnexpectedStateError, match="gone"):
        poll.observe(gone)
    poll.elapsed = 60.0
    with pytest.raises(WaitTimeout, match=rf"n \({SID}\) → running: still"):
        poll.pause(waiters_client())


def waiters_client() -> Client:
    return client_reading(svc("running"))
