"""Waiting for a service to reach a state, or to be gone.

A progress line shows the service's name, its state and the time waited (a
one-line widget in Jupyter, tqdm's text line elsewhere). The poll interval
comes from the key's budget (:meth:`~pgcloud_nb.ratelimit.Budget.poll_interval`):
polling alone never takes more than half of the window's requests, and it slows
down further when other users of the key (charts, widgets) leave little free.
Waits fail fast instead of running into their timeout when the service goes
somewhere it will not come back from; Ctrl-C / "interrupt kernel" ends the line
(it says "stopped") and propagates.

A wait needs only :class:`WaitClient` (the budget and one GET), not the whole
client: the client calls in here, never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import NotFoundError, UnexpectedStateError, WaitTimeout
from .models import OpenEnum, PostgresService, ResourceTagsV1, ServiceState
from .ratelimit import Budget

__all__ = ["StatePoll", "WaitClient", "wait_for_gone", "wait_for_state"]

DEFAULT_TIMEOUT = 1800.0  # TF waits up to 30 min for a create
# States a wait for `running` tolerates for a while: `unavailable` heals by itself
# (docs/api-behaviour.md §5.3); `stopped` has no start command in the API, so it gets a short grace.
GRACE = {ServiceState.UNAVAILABLE: 300.0, ServiceState.STOPPED: 30.0}
NOT_FOUND_GRACE = 10.0  # a just-created service may not be readable at once

# Module-level so tests can run waits on a fake clock.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


class WaitClient(Protocol):
    """What a wait reads: the key's shared budget (for its pace) and one service."""

    @property
    def budget(self) -> Budget: ...

    def get_service(self, service_id: str) -> PostgresService: ...


class _Bar:
    """The progress line, or nothing when ``progress`` is False.

    It reads ``my-db: creating, waiting for running [00:02]``: the service's
    name, its state and the time waited since the wait began, from its first
    frame on. It appears with the first answer, so it never shows a line
    without a state. In a Jupyter kernel it is a one-line widget of its own:
    tqdm's notebook bar would put an empty progress box before the text (a
    wait has no total to fill it with). Elsewhere it is tqdm's text line.
    """

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._line: _Line | None = None
        self.text = ""  # the line as last shown, elapsed time included

    def show(self, text: str, elapsed: float) -> None:
        if not self._enabled:
            return
        self.text = f"{text} [{_interval(elapsed)}]"
        if self._line is None:
            self._line = _open_line(self.text)
        else:
            self._line.show(self.text)

    def close(self, finished: bool = True) -> None:
        """End the line; a wait that did not finish (interrupted, failed) says so on it."""
        if self._line is None:
            return
        if not finished:
            self.text += " · stopped"
            self._line.show(self.text)
        self._line.close()


class _Line(Protocol):
    def show(self, text: str) -> None: ...

    def close(self) -> None: ...


def _interval(seconds: float) -> str:
    """``00:02``, ``12:05``, ``1:02:03``: tqdm's own way of writing a duration."""
    from tqdm import tqdm

    return str(tqdm.format_interval(max(0.0, seconds)))


class _WidgetLine:
    """The line as an ipywidgets Label in the cell's output: text only, no progress box."""

    def __init__(self, text: str) -> None:
        import ipywidgets
        from IPython.display import display

        self.widget = ipywidgets.Label(value=text)
        self.widget.add_class("pgcloud-progress")
        display(self.widget)

    def show(self, text: str) -> None:
        self.widget.value = text

    def close(self) -> None:
        """Nothing to end: the label stays in the output with the wait's last line."""


class _TextLine:
    """The line as tqdm's text bar (a terminal, a script, a kernel without ipywidgets)."""

    def __init__(self, text: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc=text, bar_format="{desc}")

    def show(self, text: str) -> None:
        self.bar.set_description_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _in_notebook() -> bool:
    """Whether output goes to a Jupyter frontend that draws widgets (tqdm.auto's own test)."""
    from tqdm import auto, notebook

    return issubclass(auto.tqdm, notebook.tqdm)


def _open_line(text: str) -> _Line:
    return _WidgetLine(text) if _in_notebook() else _TextLine(text)


def _value(value: Any) -> Any:
    if isinstance(value, OpenEnum):
        return value.value
    if isinstance(value, list) and all(isinstance(v, ResourceTagsV1) for v in value):
        return {t.key: t.value for t in value}
    return value


def _field(service: PostgresService, name: str) -> Any:
    fields = type(service).model_fields
    for attr, info in fields.items():
        if name in (attr, info.alias):
            return _value(getattr(service, attr))
    return _value((service.model_extra or {}).get(name))


def unsettled(service: PostgresService, settle: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fields of ``settle`` that do not read back yet, with their current values."""
    out = {}
    for name, wanted in (settle or {}).items():
        want = _value(wanted)
        if isinstance(wanted, list) and all(isinstance(t, dict) for t in wanted):
            want = {t["key"]: t.get("value") for t in wanted}
        have = _field(service, name)
        if have != want:
            out[name] = have
    return out


class StatePoll:
    """The rules of one wait, without any waiting: what to do after each poll.

    Blocking waits (:func:`wait_for_state`, :func:`wait_for_gone`) and the
    widgets' jobs on the kernel's loop drive the same object::

        poll = StatePoll(service_id, "running")     # state None: until gone (404)
        while not poll.observe(poll.look(client)):  # True: done; raises: failed
            show(poll.shown)
            sleep(poll.pause(client))               # raises WaitTimeout past the timeout
        return poll.service

    :meth:`look` is the only blocking part (one GET): a loop can run it
    elsewhere and hand the answer to :meth:`observe`.
    """

    def __init__(
        self,
        service_id: str,
        state: str | None = "running",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        settle: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.service_id = service_id
        self.name = name  # the service's name, as the last answer gave it
        self.target = None if state is None else ServiceState(state)
        self.want = "gone" if self.target is None else self.target.value
        self.timeout = timeout
        self.settle = settle
        self.started = _clock()
        self.elapsed = 0.0  # seconds since the start, taken when the last poll began
        self.service: PostgresService | None = None  # what the last poll read (None: 404)
        self.shown = ""  # the last poll's outcome, for a progress display
        self._bad_since: dict[str, float] = {}

    @property
    def label(self) -> str:
        """The service's name (its id until an answer names it)."""
        return self.name or self.service_id

    @property
    def desc(self) -> str:
        """The wait, for error messages: the name (when known), the full id and the target."""
        named = f"{self.name} ({self.service_id})" if self.name else self.service_id
        return f"{named} → {self.want}"

    @property
    def progress(self) -> str:
        """One line for a progress display: name, state, and what the wait is for."""
        state = self.shown or "not read yet"
        if state.startswith(self.want):  # reached ("running", "running, settling size")
            return f"{self.label}: {state}"
        waiting = "until gone" if self.target is None else f"for {self.want}"
        return f"{self.label}: {state}, waiting {waiting}"

    def look(self, client: WaitClient) -> PostgresService | NotFoundError:
        """Poll once (a blocking GET): the service, or the 404 it answered."""
        self.elapsed = _clock() - self.started
        try:
            return client.get_service(self.service_id)
        except NotFoundError as exc:
            return exc

    def observe(self, seen: PostgresService | NotFoundError) -> bool:
        """Take the last poll's answer: True when the wait is over.

        Raises :class:`UnexpectedStateError` when the service went where it will
        not come back from (gone, deleting, unavailable or stopped too long).
        """
        elapsed = self.elapsed
        if isinstance(seen, NotFoundError):
            self.service = None
            if self.target is None:
                self.shown = "gone"
                return True
            if elapsed < NOT_FOUND_GRACE:
                self.shown = "not found yet"
                return False
            raise UnexpectedStateError(
                f"service {self.service_id} is gone (404) while waiting for {self.want}"
            ) from seen
        self.service = seen
        self.name = seen.name or self.name
        current = seen.state or ServiceState("unknown")
        self.shown = current.value
        target = self.target
        if target is None:
            return False
        if current == target:
            pending = unsettled(seen, self.settle)
            if not pending:
                return True
            self.shown = f"{current.value}, settling {', '.join(pending)}"
            return False
        if current == ServiceState.DELETING:
            raise UnexpectedStateError(
                f"service {self.service_id} is being deleted; it will never be {self.want}",
                service=seen,
            )
        grace = GRACE.get(current) if target == ServiceState.RUNNING else None
        if grace is not None:
            first = self._bad_since.setdefault(current.value, elapsed)
            if elapsed - first > grace:
                raise UnexpectedStateError(
                    f"service {self.service_id} has been {current.value} for "
                    f"{elapsed - first:.0f}s",
                    service=seen,
                )
        else:
            self._bad_since.clear()
        return False

    def pause(self, client: WaitClient) -> float:
        """Seconds until the next poll (from the budget); WaitTimeout if that passes the timeout."""
        pause = client.budget.poll_interval()
        if self.elapsed + pause > self.timeout:
            raise self._timed_out()
        return pause

    def _timed_out(self) -> WaitTimeout:
        svc, settle = self.service, self.settle
        if svc is not None and svc.state == self.target and settle:
            return WaitTimeout(
                f"{self.desc}: fields did not settle in {self.timeout:.0f}s: "
                + ", ".join(
                    f"{k} is {v!r}, want {settle[k]!r}" for k, v in unsettled(svc, settle).items()
                ),
                service=svc,
            )
        return WaitTimeout(
            f"{self.desc}: still {self.shown} after {self.timeout:.0f}s", service=svc
        )


def _run(client: WaitClient, poll: StatePoll, progress: bool) -> PostgresService | None:
    """Drive ``poll`` to the end, sleeping between polls; owns the progress bar."""
    bar = _Bar(progress)
    finished = False
    try:
        while not poll.observe(poll.look(client)):
            bar.show(poll.progress, poll.elapsed)
            _sleep(poll.pause(client))
        bar.show(poll.progress, poll.elapsed)
        finished = True
        return poll.service
    finally:  # also on KeyboardInterrupt: the line never stays claiming to wait
        bar.close(finished)


def wait_for_state(
    client: WaitClient,
    service_id: str,
    state: str = "running",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    settle: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> PostgresService:
    """Poll until the service is in ``state`` and every ``settle`` field reads back."""
    poll = StatePoll(service_id, state, timeout=timeout, settle=settle)
    svc = _run(client, poll, progress)
    assert svc is not None  # a wait for a state ends on a service, never on a 404
    return svc


def wait_for_gone(
    client: WaitClient, service_id: str, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True
) -> None:
    """Poll until GET answers 404 (after a delete)."""
    _run(client, StatePoll(service_id, None, timeout=timeout), progress)
