"""Followers (HA standbys and read replicas) kept able to follow their primary's settings.

The rules are :mod:`.hotstandby`'s; this module applies them to the servers:

- :func:`derive` is a read replica's pgConfig (asked for, or written later) as
  it can run: raised to what its primary runs now, after its next start, and
  what the replica's own copy recorded; the store keeps the derived one, so the
  API reports what the replica really runs, and its log says what was changed;
- :meth:`Followers.follow` runs after a primary's configuration write: its
  running replicas take the raised values at once (pending a restart, like the
  primary's own);
- :meth:`Followers.restart_first` runs before anything restarts a primary (a
  restart, a switchover): each follower that runs less than the primary will is
  restarted first, as PostgreSQL's docs ask ("increase them on the standbys
  first"), so none of them stops or pauses when the primary comes back.

HA standbys get their settings from :mod:`.configs` (with
:func:`~.hotstandby.standby_config`), which writes them with the primary's.
"""

from __future__ import annotations

import logging

from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.replication import recorded_settings, running_settings
from pgcloud_nb.sandbox.services.configs import Configs
from pgcloud_nb.sandbox.services.context import Context
from pgcloud_nb.sandbox.services.hotstandby import for_standby, needed
from pgcloud_nb.sandbox.services.notes import note
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["Followers", "changed_note", "derive", "minimums"]

log = logging.getLogger("pgcloud_nb.sandbox")


def _recorded(node: Cluster) -> dict[str, int]:
    """What ``node``'s control file records, or nothing when it has no data folder yet."""
    if not node.pgdata.is_dir():
        return {}
    return recorded_settings(node)


def minimums(primary_row: ServiceRow, primary: Cluster, node: Cluster) -> dict[str, int]:
    """What ``node``, a replica of ``primary``, must run at least: what the primary
    runs now and after its next start, and what the WAL ``node`` replays recorded."""
    return needed(primary_row.pg_config, _recorded(primary), _recorded(node))


def derive(
    primary_row: ServiceRow, primary: Cluster, node: Cluster, config: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """(``config`` as a replica ``node`` of ``primary`` can run it, what changed)."""
    return for_standby(config, minimums(primary_row, primary, node))


def changed_note(what: str, changes: list[str]) -> str:
    return f"{what} runs {'; '.join(changes)}: a hot standby needs them"


class Followers:
    def __init__(self, ctx: Context, configs: Configs) -> None:
        self.ctx = ctx
        self.configs = configs

    def replicas(self, primary: ServiceRow) -> list[ServiceRow]:
        return [
            r
            for r in self.ctx.store.children(primary.id)
            if not r.is_primary and r.state == "running"
        ]

    async def for_replica(
        self, replica: ServiceRow, config: dict[str, str]
    ) -> tuple[dict[str, str], list[str]]:
        """A pgConfig written to a read replica, as it can run it (:func:`derive`)."""
        ctx = self.ctx
        parent = ctx.parent(replica)
        if parent is None:
            return config, []
        return await ctx.run(derive, parent, ctx.cluster(parent), ctx.cluster(replica), config)

    async def tell(self, replica: ServiceRow, changes: list[str], pending: list[str]) -> None:
        """Say in a replica's log what it runs other than asked, and why."""
        if changes:
            when = " after a restart" if pending else ""
            text = changed_note(f"this read replica{when}", changes)
            await self.ctx.run(note, self.ctx.cluster(replica), text)

    async def follow(self, primary_id: str) -> None:
        """After a primary's configuration write: raise what its running replicas run."""
        ctx = self.ctx
        primary = ctx.store.get(primary_id)
        if primary is None:
            return
        for replica in self.replicas(primary):
            try:
                # Read and written under the replica's lock: a write of its own at the
                # same moment is not lost.
                async with ctx.lock(replica.id):
                    now = ctx.current(replica, "following its primary")
                    config, changes = await self.for_replica(now, now.pg_config)
                    if not changes:
                        continue
                    pending = await self.configs.write_held(now, config, now.pg_bouncer_config)
                await self.tell(replica, changes, pending)
            except Exception as exc:  # that replica only; restart_first tries again
                log.warning("replica %s did not follow its primary: %s", replica.id, exc)

    async def restart_first(self, primary_id: str) -> None:
        """Before a primary restarts: every follower running less than the primary
        will is restarted (with its raised settings) first."""
        ctx = self.ctx
        await self.follow(primary_id)
        primary = ctx.store.get(primary_id)
        if primary is None:
            return
        least = needed(primary.pg_config, await ctx.run(_recorded, ctx.cluster(primary)))
        for node in ctx.layout.standbys(primary):
            await ctx.run(self._restart_if_behind, node, least)
        for replica in self.replicas(primary):
            async with ctx.lock(replica.id):
                await ctx.run(self._restart_if_behind, ctx.cluster(replica), least)

    @staticmethod
    def _restart_if_behind(node: Cluster, least: dict[str, int]) -> None:
        try:
            if not node.is_running():
                return
            runs_now = running_settings(node)
            behind = [n for n, v in least.items() if runs_now.get(n, v) < v]
            if behind:
                log.info("restarting follower %s first (%s)", node.root.name, ", ".join(behind))
                node.restart()
        except Exception as exc:  # the primary's restart goes on; the follower's log says why
            log.warning("follower %s not restarted first: %s", node.root.name, exc)
