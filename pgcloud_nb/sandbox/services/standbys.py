"""HA standbys of a service: real hot standbys streaming from its primary, and switchover.

``haType`` ``async`` runs one standby and ``sync`` two, with
``synchronous_standby_names = 'ANY 1 (…)'`` so a commit waits for one of them
(docs/api-behaviour.md §6.1). :meth:`Standbys.reconcile` makes the servers match the
stored ``haType``: it builds a missing standby with ``pg_basebackup`` from the
primary (the real product builds it from backups, docs/api-behaviour.md §6.3; the result is
the same server), removes one too many, and starts recorded ones that are down
(after a sandbox restart). The service stays ``running`` meanwhile
(docs/api-behaviour.md §4.7). Standbys are internal: the API never lists them (§6.2).

:meth:`Standbys.switchover` moves the primary role to the first standby:

1. the old primary stops cleanly; its WAL senders first send everything, up
   to the shutdown checkpoint, and we wait until the standby has it (no
   committed row is lost);
2. the new topology is stored (so a crash from here on resumes into it: every
   node is started in the role the store gives it);
3. the standby is promoted, then restarted on the service's port: the
   connection string (host, port, CA) keeps working after a reconnect;
4. the old primary starts as a standby of the new one on the freed port. It
   needs no pg_rewind: it stopped cleanly before the promotion, so its WAL is
   a prefix of the new timeline. Should it still fail to stream, it is rebuilt
   from a fresh pg_basebackup;
5. other standbys and the read replicas are pointed at the new primary (before
   step 4: under ``sync``, commits wait until one standby streams again).

Each node runs the service's pgConfig as its role needs it: the primary as is, a
standby as :func:`~.hotstandby.standby_config` makes it (no serializable default,
which fails every query on a standby); a switchover rewrites both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.replication import (
    base_backup,
    promote,
    shutdown_lsn,
    wait_received,
    wait_streaming,
)
from pgcloud_nb.sandbox.services.configs import write_user_conf
from pgcloud_nb.sandbox.services.context import Context
from pgcloud_nb.sandbox.services.hotstandby import standby_config
from pgcloud_nb.sandbox.services.nodes import HA_STANDBYS, label
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["Standbys"]

log = logging.getLogger("pgcloud_nb.sandbox")

STREAM_WAIT_S = 60.0  # how long a new standby may take to start streaming
HANDOFF_WAIT_S = 10.0  # how long the standby may take to receive the old primary's last WAL


class Standbys:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- making them match haType

    def reconcile_soon(self, service_id: str) -> None:
        """:meth:`reconcile` in the background: the service stays running meanwhile."""
        self.ctx.spawn(self.reconcile(service_id), f"standbys {service_id}")

    async def reconcile(self, service_id: str) -> None:
        async with self.ctx.lock(service_id):
            row = self.ctx.store.get(service_id)
            if row is None or row.state != "running" or not row.is_primary:
                return
            try:
                await self.ctx.run(self._reconcile, row)
            except Exception as exc:
                log.error("HA standbys of %s: %s", service_id, exc)

    def _reconcile(self, row: ServiceRow) -> None:
        ctx, layout = self.ctx, self.ctx.layout
        for stray in layout.strays(row):  # a standby cut short by a crash
            stray.remove()
        want = HA_STANDBYS.get(row.ha_type, 0)
        while len(row.standbys) > want:
            entry = row.standbys[-1]
            row = self._store(row, standbys=row.standbys[:-1])
            # Out of synchronous_standby_names before it stops, or commits would wait for it.
            self._configure_primary(row)
            layout.standby(entry).remove()
        for entry in row.standbys:
            self._start_standby(row, entry)
        while len(row.standbys) < want:
            folder = layout.free_folder(row)
            entry = {"dir": folder, "port": ctx.free_port()}
            self._build(row, entry)
            row = self._store(row, standbys=[*row.standbys, entry])
        self._configure_primary(row)

    def _store(self, row: ServiceRow, **changes: Any) -> ServiceRow:
        updated = self.ctx.store.update(row.id, **changes)
        return updated if updated is not None else replace(row, **changes)

    def _configure_primary(self, row: ServiceRow) -> None:
        primary = self.ctx.cluster(row)
        if primary.write_base_conf(self.ctx.layout.primary_settings(row)):
            primary.reload()

    def _start_standby(self, row: ServiceRow, entry: dict[str, Any]) -> None:
        """Start a recorded standby, in the standby role whatever it was before."""
        node = self.ctx.layout.standby(entry)
        if node.is_running():
            return
        node.write_base_conf(self.ctx.layout.standby_settings(row, str(entry["dir"])))
        write_user_conf(node, standby_config(row.pg_config))  # it may have been the primary
        node.set_signal("standby")
        node.start(timeout=120)

    def _build(self, row: ServiceRow, entry: dict[str, Any]) -> None:
        """A new standby copied from the running primary with pg_basebackup."""
        primary = self.ctx.cluster(row)
        node = self.ctx.layout.standby(entry)
        node.remove()
        try:
            settings = self.ctx.layout.standby_settings(row, str(entry["dir"]))
            node.init_from(lambda pgdata: base_backup(primary, pgdata, stream=True), settings)
            self._join(row, node, str(entry["dir"]))
        except BaseException:
            node.remove()
            raise

    def _join(self, row: ServiceRow, node: Cluster, folder: str) -> None:
        node.copy_identity(self.ctx.cluster(row))
        # A copy of the primary, or the old primary: the primary's settings as a standby
        # runs them (hotstandby.py: serializable, for one, fails every query there).
        write_user_conf(node, standby_config(row.pg_config))
        node.set_signal("standby")
        node.start(timeout=120)
        if not wait_streaming(self.ctx.cluster(row), label(folder), STREAM_WAIT_S):
            raise EngineError(f"standby {folder} does not stream from its primary")

    # -- switchover

    async def switchover(self, row: ServiceRow) -> None:
        """Called by the lifecycle under the service's lock (see the module docstring)."""
        try:
            await self.ctx.run(self._switchover, row)
        except Exception as exc:
            log.error("switchover of %s failed: %s", row.id, exc)

    def _switchover(self, row: ServiceRow) -> None:
        ctx, layout = self.ctx, self.ctx.layout
        old, entry = ctx.cluster(row), row.standbys[0]
        old_folder, new_folder = row.node or row.id, str(entry["dir"])
        standby = layout.standby(entry)
        began = time.monotonic()
        old.stop("fast")
        try:
            if not wait_received(standby, shutdown_lsn(old), HANDOFF_WAIT_S):
                raise EngineError(f"standby {new_folder} lacks the primary's last WAL")
        except BaseException:
            old.start()  # nothing changed yet: the old primary goes on serving
            raise
        swapped = self._store(
            row, node=new_folder, standbys=[*row.standbys[1:], {**entry, "dir": old_folder}]
        )
        promote(standby)
        standby.stop("fast")
        new = ctx.cluster(swapped)  # the same folder, on the service's port
        new.write_base_conf(layout.primary_settings(swapped))
        write_user_conf(new, swapped.pg_config)  # the primary's own, no longer a standby's
        new.start(timeout=120)
        log.info(
            "switchover of %s: %s serves after %.2fs", row.id, new_folder, time.monotonic() - began
        )
        # Other standbys first: under sync, commits wait until one of them streams.
        self.repoint_followers(swapped)
        try:
            self._join(swapped, layout.standby(swapped.standbys[-1]), old_folder)
        except Exception as exc:
            log.warning("old primary of %s did not follow (%s); rebuilding it", row.id, exc)
            self._build(swapped, swapped.standbys[-1])
        log.info(
            "switchover of %s: %s follows after %.2fs", row.id, old_folder, time.monotonic() - began
        )

    def repoint_followers(self, row: ServiceRow) -> None:
        """Point the other standbys and the read replicas at ``row``'s serving node
        (primary_conninfo reloads without a restart)."""
        ctx, layout = self.ctx, self.ctx.layout
        targets = [
            (layout.standby(e), layout.standby_settings(row, str(e["dir"]))) for e in row.standbys
        ]
        for replica in ctx.store.children(row.id):
            if not replica.is_primary and replica.state == "running":
                targets.append((layout.primary(replica), layout.replica_settings(replica, row)))
        for node, settings in targets:
            try:
                if node.write_base_conf(settings) and node.is_running():
                    node.reload()
            except Exception as exc:
                log.warning("repointing %s: %s", node.root.name, exc)
