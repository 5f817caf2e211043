"""A new service's server made in steps: deletable at every step, failing visibly.

Creates, restores and read replicas are answered at once and made in the
background, the store recording each step's state. Two rules hold for all:

- **A failure is visible.** A server that cannot be made or cannot start leaves
  its service ``unavailable`` (the spec's failure state; in the sandbox it never
  heals), the server stopped, its folders kept, and a line in the service's own
  log saying why (:mod:`.notes`), until the service is deleted. No service
  vanishes into a 404 on its own (docs/api-behaviour.md, "Replicas and standbys
  follow their primary's settings").
- **A DELETE is answered at every step** (restores and replicas: their making
  can block on a replay for long): :meth:`Making.cancel` marks the service
  ``deleting``, the making gives up at its next :meth:`Making.step`, and its
  server is stopped under it meanwhile (:func:`replication.interrupt`: a thread
  blocked starting a server ends only so). The caller's removal runs once the
  making has let go of the service's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pgcloud_nb.sandbox.postgres.replication import interrupt
from pgcloud_nb.sandbox.services.context import Context
from pgcloud_nb.sandbox.services.notes import note, reason
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["Cancelled", "Making", "fail"]

log = logging.getLogger("pgcloud_nb.sandbox")

INTERRUPT_S = 120.0  # how long a DELETE keeps stopping the server of a service being made


def fail(ctx: Context, row: ServiceRow, exc: BaseException) -> None:
    """The service is left unavailable, its server stopped, the reason in its log."""
    node = ctx.cluster(row)
    node.stop("immediate")
    if row.restore_target:
        what = "restored service"
    else:
        what = "service" if row.is_primary else "read replica"
    note(
        node,
        f"this {what} could not be made and stays unavailable until it is deleted: {reason(exc)}",
        "ERROR",
    )
    ctx.store.update(
        row.id,
        state="unavailable",
        pending_password=None,
        restore_target=None,
        # A failed restore needs its source no more; a replica stays its primary's.
        parent_id=None if row.is_primary else row.parent_id,
    )


class Cancelled(Exception):
    """A DELETE came while the service was being made."""


class Making:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cancelled: set[str] = set()  # being made, and deleted meanwhile

    async def run(
        self, service_id: str, states: tuple[str, ...], build: Callable[[ServiceRow], Any]
    ) -> ServiceRow | None:
        """Make the service (``build`` in a worker thread; called under its lock) if it
        is still in one of ``states``; the row when made, None when it failed (now
        ``unavailable``) or was deleted meanwhile."""
        ctx = self.ctx
        row = ctx.store.get(service_id)
        if row is None or row.state not in states:
            return None
        try:
            await ctx.run(build, row)
            if service_id in self._cancelled:
                raise Cancelled(service_id)
        except Exception as exc:
            if service_id in self._cancelled:  # a DELETE: its removal follows this lock
                self._cancelled.discard(service_id)
                return None
            log.error("making service %s failed; it stays unavailable: %s", service_id, exc)
            await ctx.run(fail, ctx, row, exc)
            return None
        return row

    def cancel(self, row: ServiceRow) -> None:
        """A DELETE of a service being made (see the module docstring)."""
        self.ctx.store.update(row.id, state="deleting")
        if self.ctx.lock(row.id).locked():  # run() is at it (else it finds "deleting")
            self._cancelled.add(row.id)
            self.ctx.spawn(self._interrupt(row), f"interrupt {row.id}")

    async def _interrupt(self, row: ServiceRow) -> None:
        node = self.ctx.cluster(row)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTERRUPT_S
        while row.id in self._cancelled and loop.time() < deadline:
            await self.ctx.run(interrupt, node)
            await asyncio.sleep(0.2)

    def step(self, service_id: str, state: str) -> None:
        """Record the next state of the making, unless a DELETE came (then Cancelled)."""
        if service_id in self._cancelled:
            raise Cancelled(service_id)
        self.ctx.store.update(service_id, state=state)
        if service_id in self._cancelled:  # it came meanwhile: say deleting again
            self.ctx.store.update(service_id, state="deleting")
            raise Cancelled(service_id)
