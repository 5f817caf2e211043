"""What the widgets and the live charts share: the error panel and the job runner.

**Errors.** ipywidgets sends an exception raised in a callback to the kernel
log, where nobody sees it. :func:`guarded` wraps every callback so that the
exception lands in the widget's :class:`ErrorPanel` instead: an API error shows
its status, the API's ``message`` and its ``requestId``. Nothing is swallowed:
the panel keeps the last error in ``.last`` too, for tests and for code.

**Jobs.** A button that waits for a service (create, restart, delete) must not
block the kernel: while a callback runs, JupyterLab can neither update widgets
nor run cells. So a long action is written as a *job*, a generator that yields
:class:`Call` (a blocking API call; its result is sent back in) or a float
(seconds to pause). :func:`run_job` drives it

- as an asyncio task on the running loop when there is one (inside a kernel, a
  button callback runs on the kernel's loop): the blocking HTTP call goes to the
  loop's default executor, and everything else, widget updates included, runs on
  the loop itself, because output sent from other threads is lost under
  ipykernel 7;
- to completion, synchronously, when no loop runs (a plain kernel-less test:
  set ``.value``, ``.click()``, assert).

Both paths run the same coroutine, so tests exercise the code the kernel runs.
How often a job may call the API is for the key's budget to say: see
:meth:`~pgcloud_nb.ratelimit.Budget.paced` and
:meth:`~pgcloud_nb.ratelimit.Budget.has_room`.

**Messages.** The error panel, status lines and the rule that each action
clears what the last one left live in :mod:`pgcloud_nb.messages`; this module
re-exports them.

**Queues.** A widget's requests run one after another (:class:`JobQueue`): a
load still under way when a button is clicked is finished first, not dropped.
``await widget.finished()`` waits for all of them (in a notebook, before a cell
reads what a job fetched).

**Closing.** A widget that is closed stops its task (:func:`cancel`) and
closes its children (:func:`close_children`), so nothing it started outlives it.

This module sits beside :mod:`pgcloud_nb.widgets` and :mod:`pgcloud_nb.charts`,
not inside either, and ``import pgcloud_nb`` never loads it (nor ipywidgets).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import ipywidgets as widgets

from .errors import PgCloudError
from .messages import (
    ERROR_COLOR,
    MUTED_COLOR,
    TEXT_COLOR,
    WARN_COLOR,
    ErrorPanel,
    Message,
    Notice,
    StatusLine,
    action,
    clear_messages,
)
from .models import PostgresService
from .waiters import DEFAULT_TIMEOUT, StatePoll, WaitClient

__all__ = [
    "ERROR_COLOR",
    "MUTED_COLOR",
    "TEXT_COLOR",
    "WARN_COLOR",
    "Call",
    "ErrorPanel",
    "Job",
    "JobQueue",
    "Message",
    "Notice",
    "StatusLine",
    "action",
    "cancel",
    "clear_messages",
    "close_children",
    "guarded",
    "poll_job",
    "require_loop",
    "run_job",
    "wait_job",
]

T = TypeVar("T")
SKIP_RETRY = 1.0  # seconds before a refresher that found the budget short asks again


@dataclass(frozen=True)
class Call:
    """A blocking call a job wants made (off the loop when a loop runs)."""

    fn: Callable[[], Any]


Job = Generator["Call | float", Any, T]


def guarded(panel: ErrorPanel) -> Callable[[Callable[..., Any]], Callable[..., None]]:
    """Decorate a widget callback so an exception shows in ``panel`` instead of the log."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., None]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # shown, not swallowed: that is the point
                panel.show(exc)

        return inner

    return wrap


# -- jobs ------------------------------------------------------------------------


async def _drive(job: Job[T], offload: bool) -> T:
    loop = asyncio.get_running_loop()
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = job.throw(error) if error is not None else job.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        if isinstance(step, Call):
            try:
                value = await loop.run_in_executor(None, step.fn) if offload else step.fn()
            except Exception as exc:  # handed back to the job, which may handle it
                error = exc
        else:
            await asyncio.sleep(step)


def run_job(
    job: Job[Any],
    panel: ErrorPanel,
    *,
    on_done: Callable[[Any], object] | None = None,
    after: asyncio.Task[Any] | None = None,
) -> asyncio.Task[None] | None:
    """Run ``job``: a task on the running loop, or synchronously without one.

    Returns the task (cancel it to stop the job), or None when it already ran.
    Errors from the job or from ``on_done`` go to ``panel``. With ``after``, the
    job starts once that task has ended (however it ended).
    """

    async def main(offload: bool) -> None:
        if after is not None and not after.done():
            await asyncio.wait([after])
        try:
            result = await _drive(job, offload)
            if on_done is not None:
                on_done(result)
        except asyncio.CancelledError:
            job.close()
            raise
        except Exception as exc:
            panel.show(exc)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # No loop: a kernel-less test or a script. Calls run inline, sleeps really sleep.
        asyncio.run(main(offload=False))
        return None
    task = loop.create_task(main(offload=True))
    _TASKS.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_TASKS.discard)
    return task


_TASKS: set[asyncio.Task[None]] = set()


class JobQueue:
    """A widget's jobs, run one after another; errors go to its panel.

    Without a loop each job runs at once, inside :meth:`start`. With one, a job
    waits for the one before it: a click during a load acts on what was loaded.
    """

    def __init__(self, panel: ErrorPanel) -> None:
        self.panel = panel
        self.task: asyncio.Task[None] | None = None  # the last job started
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, job: Job[Any], on_done: Callable[[Any], object] | None = None
    ) -> asyncio.Task[None] | None:
        previous = self.task if self.task is not None and not self.task.done() else None
        self.task = run_job(job, self.panel, on_done=on_done, after=previous)
        if self.task is not None:
            self._tasks.add(self.task)
            self.task.add_done_callback(self._tasks.discard)
        return self.task

    def call(
        self, fn: Callable[[], T], on_done: Callable[[T], object]
    ) -> asyncio.Task[None] | None:
        """One blocking request as a job: ``on_done(fn())``, off the loop when one runs."""

        def one() -> Job[T]:
            result: T = yield Call(fn)
            return result

        return self.start(one(), on_done)

    @property
    def busy(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def finished(self) -> None:
        """Wait until every job started so far (and any they chain) has ended."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.wait(pending)

    def cancel(self) -> None:
        for task in list(self._tasks):
            cancel(task)


def wait_job(
    client: WaitClient,
    service_id: str,
    state: str | None = "running",
    *,
    status: StatusLine | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    name: str | None = None,
) -> Job[PostgresService | None]:
    """Poll until the service is in ``state`` (``None``: until it is gone, 404).

    The rules are :class:`pgcloud_nb.waiters.StatePoll`'s, the ones
    :func:`pgcloud_nb.waiters.wait_for_state` follows (poll interval from the
    shared budget, a short grace for a 404 right after a create, fail fast on
    ``deleting``, limited patience with ``unavailable`` and ``stopped``), but
    driven as a job, so that it can run on the kernel's loop: ``client.wait``
    sleeps with ``time.sleep`` and would block it. ``status`` reads
    ``<name>: <state>, waiting for <state> · 12 s`` (the name as the API sends
    it, or ``name`` until the first answer).
    """
    poll = StatePoll(service_id, state, timeout=timeout, name=name)
    try:
        while not poll.observe((yield Call(functools.partial(poll.look, client)))):
            if status is not None:
                status.set(f"{poll.progress} · {poll.elapsed:.0f} s", icon="…")
            yield poll.pause(client)
    except PgCloudError:
        if status is not None:
            status.set(f"{poll.label}: {poll.shown or 'not read'} · {poll.elapsed:.0f} s", icon="✗")
        raise
    if status is not None:
        status.set(f"{poll.label}: {poll.shown} after {poll.elapsed:.0f} s", icon="✓")
    return poll.service


def poll_job(
    fetch: Callable[[], T],
    apply: Callable[[T], object],
    *,
    interval: Callable[[], float],
    room: Callable[[], bool],
    panel: ErrorPanel,
) -> Job[None]:
    """Forever: ``apply(fetch())``, then pause ``interval()`` seconds (auto-refreshers).

    While ``room()`` says the shared budget is short (see
    :meth:`~pgcloud_nb.ratelimit.Budget.has_room`), the beat waits, asking again
    every second (asking costs no request). An API failure is shown in ``panel``
    without ending the loop: the next beat may well succeed, and then clears it
    (an error a beat showed is stale once a beat succeeds). Cancel the task to
    stop it.
    """
    failed: BaseException | None = None  # the error this loop shows, if it still does
    while True:
        if not room():
            yield min(SKIP_RETRY, interval())
            continue
        try:
            data = yield Call(fetch)
        except PgCloudError as exc:
            panel.show(exc)
            failed = exc
        else:
            if failed is not None and panel.last is failed:
                panel.clear()
            failed = None
            apply(data)
        yield interval()


def require_loop(what: str) -> None:
    """Refuse to start an endless task where no event loop runs (it would never return)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{what} needs a running asyncio loop: use it in a Jupyter kernel or from async "
            "code (without one, call its one-shot method instead)"
        ) from None


# -- closing ------------------------------------------------------------------------


def close_children(widget: widgets.Widget) -> None:
    """Close every descendant of a container.

    A widget that is not closed stays in ipywidgets' registry for good, and with
    it every callback it holds, and so the form those callbacks point to.
    """
    for child in getattr(widget, "children", ()):
        close_children(child)
        child.close()


def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task if it is still running (closing a widget stops its work)."""
    if task is not None and not task.done():
        with contextlib.suppress(RuntimeError):  # its loop may be closed already
            task.cancel()
