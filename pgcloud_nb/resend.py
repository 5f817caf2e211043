"""Resending a call whose earlier attempt may have been served (docs/api-behaviour.md §2.3).

A 5xx, or a connection dropped after sending, may hide an attempt the server carried
out, and the API takes no idempotency key. What :class:`~pgcloud_nb.requester.Requester`
does next depends on what a second copy would do:

- Idempotent calls are resent as they are: GETs, PATCH of a service (of its IP access
  rules: ``recover``), both config writes, a password reset with a given password. One that
  has the password generated is resent too: the answer carries the password in force.
- ``recover`` (create, restore, read replica; promote; rules): before each resend and
  before giving up, it looks for what the lost attempt did (a new service of that name; a
  primary; rules in force, else only the rest is sent). What it finds is the answer. Its
  own requests end by the call's deadline (:func:`look`): the lookup before a resend gets
  the time left, the one after giving up one attempt per request.
- promote: the service is read before the first send. Only a replica before and a primary
  after proves a lost promote landed; a promote of a primary is resent as it is, and the
  API's own answer (a 400) is the one raised.
- ``gone_ok`` (DELETE): a 404 means the earlier attempt did the job.
- ``under_way`` (restart: ``"restarting"``; DELETE: ``"deleting"``): a 409 saying the
  service *is* in that state is taken as the earlier attempt, served and in progress:
  the call returns an :class:`UnderWay`. On a first attempt the same 409 is raised: that
  is someone else's operation. On a resend it may be someone else's too, begun before the
  earlier attempt or instead of it (a 5xx usually means nothing was done, but cannot
  prove it), so a restart taken this way warns (:meth:`UnderWay.warn`). A restart that had
  already finished when the resend came is done twice, which is harmless.
- ``once`` (switchover): never resent; a second one cannot be told apart (the state does
  not show it) and would move the primary back. The error is raised with a note.

When a call that is not idempotent gives up, or its lookup fails, the error gets a note
that it may have been carried out, so that nobody resends it blindly by hand.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .errors import APIError, PgCloudError

__all__ = ["LAST_LOOK", "UnderWay", "deadline", "done_before", "look", "maybe_done"]

log = logging.getLogger("pgcloud_nb.http")

# The deadline of the call whose lookup runs in this thread or task. A lookup's requests
# are calls of their own, and each would otherwise get a whole policy deadline (two
# minutes) before every resend: a lost create against a failing API took minutes.
_OUTER: ContextVar[float | None] = ContextVar("pgcloud_nb_resend_deadline", default=None)

# The deadline of the lookup after a call has given up: already past, so each of its
# requests is made once.
LAST_LOOK = -math.inf


def deadline(own: float) -> float:
    """A call's deadline: ``own``, or the one of the call whose lookup it is, if sooner."""
    outer = _OUTER.get()
    return own if outer is None else min(own, outer)


def look(
    recover: Callable[[], Any], error: PgCloudError, method: str, path: str, *, until: float
) -> Any:
    """What ``recover`` finds, its requests ending by ``until`` (:func:`deadline`); if the
    lookup itself fails, ``error`` says so and is raised."""
    log.info("%s %s failed (%s); looking for what it did", method, path, error)
    token = _OUTER.set(until)
    try:
        return recover()
    except PgCloudError as exc:
        error.add_note(f"Looking for what it did failed too: {exc}")
        raise maybe_done(error, method, path) from exc
    finally:
        _OUTER.reset(token)


def done_before(error: APIError, gone_ok: bool, under_way: str | None) -> bool:
    """Whether ``error``, met after an attempt that may have been served, says it was."""
    if error.status == 404:
        return gone_ok
    if error.status != 409 or under_way is None:
        return False
    # "Service is restarting; ..." (docs/api-behaviour.md §5.4): the state, as a whole word.
    return re.search(rf"\bis {re.escape(under_way)}\b", error.message, re.IGNORECASE) is not None


def maybe_done(error: PgCloudError, method: str, path: str) -> PgCloudError:
    """``error`` with a note: the call is not idempotent and may have been carried out."""
    error.add_note(
        f"{method} {path} may have been carried out before its answer was lost; "
        "check the service before sending it again."
    )
    return error


@dataclass(frozen=True)
class UnderWay:
    """A resend met ``answer`` (a 409: the service is in the state the call puts it in),
    taken as the earlier attempt under way; ``earlier`` is what that attempt met."""

    answer: APIError
    earlier: PgCloudError

    def warn(self, service_id: str, stacklevel: int) -> None:
        """Say that the restart under way may be another client's (docs/api-behaviour.md
        §2.3); ``stacklevel`` as :func:`warnings.warn`'s, counted from the caller of this."""
        if isinstance(self.earlier, APIError):
            why = (
                f"That attempt was answered {self.earlier.status} ({self.earlier.message}), "
                "which usually means it was not carried out, though it cannot prove it: this "
                "is more likely another client's restart."
            )
        else:
            lost = self.earlier.__cause__ or self.earlier
            why = (
                f"That attempt's answer was lost ({lost}): most likely this is its restart, "
                "but it may be another client's."
            )
        text = (
            f"restart of service {service_id}: the resend met {self.answer.status} "
            f"'{self.answer.message}', taken as the restart of the earlier attempt, under way. "
            f"{why} Another client's restart may have begun before a configuration change of "
            "yours was written: if the restart must apply a change, restart again once the "
            "service is running."
        )
        log.warning("%s", text)
        warnings.warn(text, UserWarning, stacklevel=stacklevel + 1)
