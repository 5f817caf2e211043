"""When base backups are taken: right after a primary is running, then every ``backup_interval``.

The real service takes its first backup about 10 minutes after creation and a
full one daily (docs/api-behaviour.md §7.1); the sandbox takes the first as soon as the
server runs (so a replica or restore can be tried at once) and then follows
the ``backup_interval`` knob (a day by default; tests set seconds). After each
backup, backups older than ``backup_retention`` (7 days by default, the Scale
tier's) are pruned, and the store's ``earliest_restore`` / ``last_backup_at``
are refreshed from the archive, which stays the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pgcloud_nb.sandbox.services.context import Context

__all__ = ["BackupSchedule"]

log = logging.getLogger("pgcloud_nb.sandbox")

# The schedule looks at every service this often (or at each interval, if shorter).
TICK_S = 5.0


class BackupSchedule:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def due(self, last: float | None) -> bool:
        return last is None or time.time() - last >= self.ctx.settings.backup_interval

    def take_soon(self, service_id: str, *, force: bool = False) -> None:
        """A service's first base backup, in the background (see :meth:`take`)."""
        self.ctx.spawn(self.take(service_id, force=force), f"first backup {service_id}")

    async def take(self, service_id: str, *, force: bool = False) -> None:
        """A base backup of a running primary, if one is due (or ``force``)."""
        ctx = self.ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None or row.state != "running" or not row.is_primary:
                return
            if not force and not self.due(row.last_backup_at):
                return
            archive = ctx.layout.archive(service_id)
            try:
                await ctx.run(archive.take, ctx.cluster(row))
                await ctx.run(archive.prune, ctx.settings.backup_retention)
            except Exception as exc:
                log.error("base backup of %s failed: %s", service_id, exc)
            self.refresh(service_id)

    def refresh(self, service_id: str) -> None:
        """Copy what the archive holds into the store (what the API shows)."""
        found = self.ctx.layout.archive(service_id).backups()
        self.ctx.store.update(
            service_id,
            earliest_restore=found[0].ended.isoformat() if found else None,
            last_backup_at=found[-1].ended_at if found else None,
        )

    async def forever(self) -> None:
        store = self.ctx.store
        for row in store.rows():
            self.refresh(row.id)
        tick = min(TICK_S, self.ctx.settings.backup_interval)
        while True:
            try:
                for row in store.rows():
                    if row.state == "running" and row.is_primary and self.due(row.last_backup_at):
                        await self.take(row.id)
            except Exception:  # one bad round must not end the schedule
                log.exception("backup schedule")
            await asyncio.sleep(tick)
