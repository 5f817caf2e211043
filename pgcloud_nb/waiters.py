"""Waiting for a service to reach a state, or to be gone.

A ``tqdm.auto`` bar shows the current state (a widget in Jupyter, text
elsewhere). The poll interval comes from the key's budget: polling alone never
takes more than half of the window's requests, and it slows down further when
other users of the key (charts, widgets) leave little free. Waits fail fast
instead of running into their timeout when the service goes somewhere it will
not come back from; Ctrl-C / "interrupt kernel" closes the bar and propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import NotFoundError, UnexpectedStateError, WaitTimeout
from .models import OpenEnum, PostgresService, ResourceTagsV1, ServiceState

if TYPE_CHECKING:
    from .client import Client

__all__ = ["poll_interval", "wait_for_gone", "wait_for_state"]

DEFAULT_TIMEOUT = 1800.0  # TF waits up to 30 min for a create
MIN_INTERVAL = 0.5
MAX_INTERVAL = 30.0
# States a wait for `running` tolerates for a while: `unavailable` heals by itself
# (DOC-HA); `stopped` has no start command in the API, so it is given a short grace.
GRACE = {ServiceState.UNAVAILABLE: 300.0, ServiceState.STOPPED: 30.0}
NOT_FOUND_GRACE = 10.0  # a just-created service may not be readable at once

# Module-level so tests can run waits on a fake clock.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def poll_interval(client: Client) -> float:
    """Seconds between polls: at most half the window's budget, slower when it runs low."""
    budget = client.budget
    if not budget.limit:
        return MIN_INTERVAL
    interval = budget.window / max(1.0, budget.limit / 2)
    free = budget.remaining() / budget.limit
    if free < 0.5:  # others are busy with the key: give them room
        interval *= 0.5 / max(free, 0.1)
    return min(MAX_INTERVAL, max(MIN_INTERVAL, interval))


class _Bar:
    """The progress bar, or nothing when ``progress`` is False."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=None, desc=desc, bar_format="{desc}: {postfix} [{elapsed}]")

    def show(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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


def _poll_loop(
    client: Client,
    desc: str,
    *,
    timeout: float,
    progress: bool,
    step: Callable[[float], tuple[bool, Any, str]],
) -> Any:
    """Call ``step(elapsed)`` until it says done; owns the bar, timeout and sleeping."""
    start = _clock()
    bar = _Bar(desc, progress)
    try:
        while True:
            elapsed = _clock() - start
            done, value, shown = step(elapsed)
            bar.show(shown)
            if done:
                return value
            pause = poll_interval(client)
            if elapsed + pause > timeout:
                raise WaitTimeout(f"{desc}: still {shown} after {timeout:.0f}s", service=value)
            _sleep(pause)
    finally:  # also on KeyboardInterrupt: the bar never stays half-drawn
        bar.close()


def wait_for_state(
    client: Client,
    service_id: str,
    state: str = "running",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    settle: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> PostgresService:
    """Poll until the service is in ``state`` and every ``settle`` field reads back."""
    target = ServiceState(state)
    bad_since: dict[str, float] = {}

    def step(elapsed: float) -> tuple[bool, Any, str]:
        try:
            svc = client.get_service(service_id)
        except NotFoundError as exc:
            if elapsed < NOT_FOUND_GRACE:
                return False, None, "not found yet"
            raise UnexpectedStateError(
                f"service {service_id} is gone (404) while waiting for {target.value}"
            ) from exc
        current = svc.state or ServiceState("unknown")
        pending = unsettled(svc, settle)
        if current == target:
            if not pending:
                return True, svc, current.value
            return False, svc, f"{current.value}, settling {', '.join(pending)}"
        if current == ServiceState.DELETING and target != ServiceState.DELETING:
            raise UnexpectedStateError(
                f"service {service_id} is being deleted; it will never be {target.value}",
                service=svc,
            )
        grace = GRACE.get(current) if target == ServiceState.RUNNING else None
        if grace is not None:
            first = bad_since.setdefault(current.value, elapsed)
            if elapsed - first > grace:
                raise UnexpectedStateError(
                    f"service {service_id} has been {current.value} for {elapsed - first:.0f}s",
                    service=svc,
                )
        else:
            bad_since.clear()
        return False, svc, current.value

    desc = f"{service_id[:8]} → {target.value}"
    try:
        result: PostgresService = _poll_loop(
            client, desc, timeout=timeout, progress=progress, step=step
        )
    except WaitTimeout as exc:
        svc = exc.service
        if isinstance(svc, PostgresService) and svc.state == target and settle:
            raise WaitTimeout(
                f"{desc}: fields did not settle in {timeout:.0f}s: "
                + ", ".join(
                    f"{k} is {v!r}, want {settle[k]!r}" for k, v in unsettled(svc, settle).items()
                ),
                service=svc,
            ) from None
        raise
    return result


def wait_for_gone(
    client: Client, service_id: str, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True
) -> None:
    """Poll until GET answers 404 (after a delete)."""

    def step(elapsed: float) -> tuple[bool, Any, str]:
        try:
            svc = client.get_service(service_id)
        except NotFoundError:
            return True, None, "gone"
        return False, svc, svc.state.value if svc.state else "unknown"

    _poll_loop(client, f"{service_id[:8]} → gone", timeout=timeout, progress=progress, step=step)
