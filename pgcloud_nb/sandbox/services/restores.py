"""New services made from another's backups: point-in-time restores and read replicas; promotion.

**Restore** (docs/api-behaviour.md §7.2, §5.2): a new, independent service whose data is the
source's at ``restoreTarget``. The newest base backup ended at or before the
target is copied (``restoring_backup``), then PostgreSQL replays the source's
archived WAL with ``recovery_target_time`` and ``recovery_target_action =
promote`` (``replaying_wal``), as a cold standby: no setting of the source's
can pause it (:func:`replication.restore_settings`); once promoted it gets its
own settings, the configuration asked for and a first base backup of its own
(``finalizing_restore``), then it is ``running``. Provider, region, version and
size come from the source, ``haType`` is ``none`` ("server-assigned"). The
response carries no password: the restored service has the superuser password
the source had at the target, because that is what its data holds (the
historic password; the real API leaves this open, docs/api-behaviour.md §3.4).

**Read replica** (docs/api-behaviour.md §7.3): a new service with ``isPrimary: false``,
made from the primary's newest base backup and then following it as a hot
standby (read-only): streaming, with the primary's WAL archive as fallback
(:func:`replication.follow_settings`). It goes ``creating`` →
``restoring_backup`` → ``replaying_wal`` → ``running``, the last once it has
replayed what the primary had written when it started. Its superuser and
password are the primary's, replicated with the data. Its pgConfig is derived
from the primary's before its first start (:mod:`.followers`): the store keeps
what it really runs.

**Promote** ends a replica's recovery with ``pg_promote()``: it becomes a
writable primary with its own archive and backups (``isPrimary: true``).

A failure part-way leaves the new service ``unavailable``, its server stopped
and the reason in its log, until it is deleted; a DELETE is answered at any step
(:mod:`.making`). Each step is recorded in the store, and
:meth:`Restores.resumes` redoes one cut short by a crash from its backup copy (a
finished replay only finalizes).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError, RequestRefused
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.datadir import copy
from pgcloud_nb.sandbox.postgres.replication import (
    in_recovery,
    promote,
    restore_settings,
    wait_caught_up,
)
from pgcloud_nb.sandbox.services import access_lists
from pgcloud_nb.sandbox.services.backups import Archive, BaseBackup
from pgcloud_nb.sandbox.services.configs import write_user_conf
from pgcloud_nb.sandbox.services.context import Context, require_running
from pgcloud_nb.sandbox.services.followers import changed_note, minimums
from pgcloud_nb.sandbox.services.hotstandby import for_standby
from pgcloud_nb.sandbox.services.making import Making
from pgcloud_nb.sandbox.services.naming import make_hostname
from pgcloud_nb.sandbox.services.nodes import REPLICATION, announce
from pgcloud_nb.sandbox.services.notes import note
from pgcloud_nb.sandbox.services.schedule import BackupSchedule
from pgcloud_nb.sandbox.services.standbys import Standbys
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["RESTORING", "Restores"]

log = logging.getLogger("pgcloud_nb.sandbox")

RESTORING = ("restoring_backup", "replaying_wal", "finalizing_restore")
REPLICA_BUILDING = ("creating", "restoring_backup", "replaying_wal")
# docs/api-behaviour.md §7.3: the live API's exact wording.
NO_BACKUPS = "Parent server is not ready for read replicas. There are no backups, yet."
# PostgreSQL ≥ 14 stops instead of promoting when the WAL ends before the target.
TARGET_NOT_REACHED = "before configured recovery target was reached"
REPLAY_TIMEOUT_S = 1800.0  # the bound on a replay; past it the new service fails visibly
CATCH_UP_S = 120.0


class Restores:
    def __init__(self, ctx: Context, backups: BackupSchedule, ha: Standbys) -> None:
        self.ctx = ctx
        self.backups = backups
        self.ha = ha
        self.making = Making(ctx)

    # -- the requests

    def _new_row(self, source: ServiceRow, body: dict[str, Any], **kw: Any) -> ServiceRow:
        service_id = str(uuid.uuid4())
        row = ServiceRow(
            id=service_id,
            name=body["name"],
            provider=source.provider,
            region=source.region,
            postgres_version=source.postgres_version,
            size=source.size,
            ha_type="none",
            tags=list(body.get("tags", [])),
            created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
            hostname=make_hostname(body["name"], service_id, source.region, source.provider),
            username=source.username,
            port=self.ctx.free_port(),
            pg_config={k: str(v) for k, v in body.get("pgConfig", source.pg_config).items()},
            pg_bouncer_config=dict(body.get("pgBouncerConfig", source.pg_bouncer_config)),
            parent_id=source.id,
            ip_access_list=access_lists.for_new(body, source),  # else the source's rules
            **kw,
        )
        return self.ctx.store.insert(row)

    def start_restore(self, source: ServiceRow, body: dict[str, Any]) -> ServiceRow:
        """Check the target against the retained window, record the new service, start."""
        target = self.check_target(source, body["restoreTarget"])
        row = self._new_row(
            source,
            body,
            state="restoring_backup",
            is_primary=True,
            restore_target=target.isoformat(),
        )
        self.ctx.spawn(self.restore(row.id), f"restore {row.id}")
        return row

    def check_target(self, source: ServiceRow, raw: str) -> datetime:
        try:
            target = datetime.fromisoformat(raw)
        except ValueError:
            raise RequestRefused(
                f"BAD_REQUEST: restoreTarget: '{raw}' is not an RFC 3339 date-time"
            ) from None
        if target.tzinfo is None:
            raise RequestRefused(f"BAD_REQUEST: restoreTarget: '{raw}' needs a time zone (e.g. Z)")
        if not source.is_primary:
            raise RequestRefused(
                "BAD_REQUEST: a read replica has no backups of its own; restore from its primary"
            )
        if source.earliest_restore is None:
            raise RequestRefused(
                f"BAD_REQUEST: service {source.id} has no backups yet to restore from"
            )
        earliest = datetime.fromisoformat(source.earliest_restore)
        if target < earliest:
            raise RequestRefused(
                f"BAD_REQUEST: restoreTarget {raw} is before the earliest restore time "
                f"{earliest.isoformat()} (the oldest retained backup)"
            )
        if target > datetime.now(UTC):
            raise RequestRefused(f"BAD_REQUEST: restoreTarget {raw} is in the future")
        return target

    def start_replica(self, primary: ServiceRow, body: dict[str, Any]) -> ServiceRow:
        if not primary.is_primary:
            raise RequestRefused("BAD_REQUEST: a read replica cannot have read replicas of its own")
        if primary.earliest_restore is None or primary.state != "running":
            raise RequestRefused(NO_BACKUPS)
        row = self._new_row(primary, body, state="creating", is_primary=False)
        self.ctx.spawn(self.replicate(row.id), f"replica {row.id}")
        return row

    def resumes(self, row: ServiceRow) -> bool:
        """Restart a restore or replica build cut short (by a crash); False if not one."""
        if row.state in RESTORING and row.restore_target:
            self.ctx.spawn(self.restore(row.id), f"restore {row.id}")
        elif not row.is_primary and row.state in REPLICA_BUILDING:
            self.ctx.spawn(self.replicate(row.id), f"replica {row.id}")
        else:
            return False
        return True

    # -- a DELETE while being made

    def cancel(self, row: ServiceRow) -> bool:
        """A DELETE of a restore or replica still being made: it stops being made and
        goes ``deleting`` (:meth:`Making.cancel`); False when it is not being made."""
        found = self.ctx.store.get(row.id)
        if found is None:
            return False
        restoring = bool(found.restore_target) and found.state in RESTORING
        if not (restoring or (not found.is_primary and found.state in REPLICA_BUILDING)):
            return False
        self.making.cancel(found)
        return True

    # -- doing them

    async def restore(self, service_id: str) -> None:
        await self._make(service_id, RESTORING, self._restore)

    async def replicate(self, service_id: str) -> None:
        await self._make(service_id, REPLICA_BUILDING, self._replicate)

    async def _make(self, service_id: str, states: tuple[str, ...], build: Any) -> None:
        ctx = self.ctx
        async with ctx.lock(service_id):
            row = await self.making.run(service_id, states, build)
            if row is None:
                return
            ctx.store.update(
                service_id,
                state="running",
                restore_target=None,
                parent_id=row.parent_id if not row.is_primary else None,
            )
            self.backups.refresh(service_id)
            await ctx.run(announce, ctx.cluster(row), row)
        if row.is_primary:  # a new primary's first base backup, then its HA standbys
            self.backups.take_soon(service_id)
            self.ha.reconcile_soon(service_id)

    def _source(self, row: ServiceRow) -> ServiceRow:
        source = self.ctx.parent(row)
        if source is None:
            raise EngineError(f"the source of {row.id} no longer exists")
        return source

    def _fresh(self, row: ServiceRow, backup: BaseBackup, extra: dict[str, str]) -> Cluster:
        """The new service's node as a copy of ``backup``, with its own name's certificate."""
        cluster = self.ctx.cluster(row)
        cluster.remove()  # from scratch, also when redoing a step cut short
        archive = self.ctx.layout.archive(row.id)
        archive.remove()
        archive.ensure()
        settings = {**REPLICATION, **archive.settings(), **extra}
        cluster.init_from(lambda pgdata: copy(backup.path, pgdata), settings)
        cluster.install_certificates([row.hostname])
        access_lists.write(cluster, row)  # its own rules, not those the copy came with
        return cluster

    def _restore(self, row: ServiceRow) -> None:
        if row.state != "finalizing_restore":
            source = self._source(row)
            archive = self.ctx.layout.archive(source.id)
            assert row.restore_target is not None
            target = datetime.fromisoformat(row.restore_target)
            self.making.step(row.id, "restoring_backup")
            if source.state == "running":
                try:  # the archive must hold a commit after the target (Archive.flush)
                    archive.flush(self.ctx.cluster(source))
                except Exception as exc:
                    log.warning("could not flush the WAL of %s: %s", source.id, exc)
            backup = archive.latest_before(target.timestamp())
            if backup is None:
                raise EngineError(f"no base backup of {source.id} ended before {target}")
            if not self._replay(row, backup, archive, target):
                # No commit after the target was archived: all archived WAL is before it.
                self._replay(row, backup, archive, None)
        self.making.step(row.id, "finalizing_restore")
        self._finalize(row)

    def _replay(
        self, row: ServiceRow, backup: BaseBackup, source: Archive, target: datetime | None
    ) -> bool:
        """Recover a copy of ``backup`` up to ``target``; False if the WAL ended before it."""
        cluster = self._fresh(row, backup, restore_settings(source.wal_dir, target))
        cluster.set_signal("recovery")
        self.making.step(row.id, "replaying_wal")
        try:
            # A cold standby is ready only once promoted: the start is the whole replay.
            cluster.start(timeout=REPLAY_TIMEOUT_S)
            if in_recovery(cluster):
                raise EngineError("the restored server is still recovering after its start")
        except Exception as exc:
            if target is not None and TARGET_NOT_REACHED in f"{exc}\n{cluster.log_tail(50)}":
                cluster.stop("immediate")
                return False
            raise
        return True

    def _finalize(self, row: ServiceRow) -> None:
        """A promoted restore: its own settings, the asked configuration, a first backup."""
        cluster = self.ctx.cluster(row)
        cluster.set_signal(None)
        cluster.write_base_conf(self.ctx.layout.primary_settings(row))
        if not cluster.is_running():
            cluster.start(timeout=REPLAY_TIMEOUT_S)
        cluster.reload()
        self._configure(cluster, row, self._source(row).pg_config)
        self.ctx.layout.archive(row.id).take(cluster)

    def _configure(self, cluster: Cluster, row: ServiceRow, fallback: dict[str, str]) -> None:
        """Apply the asked pgConfig. One this server refuses (e.g. a newer major's
        parameter) does not cost the new service: it keeps ``fallback``, the
        configuration its copied data came with, and the store says so."""
        try:
            cluster.apply_config(row.pg_config)
        except ConfigValueError as exc:
            log.warning("pgConfig of %s refused (%s); keeping the source's", row.id, exc)
            cluster.apply_config(fallback)
            self.ctx.store.update(row.id, pg_config=fallback)
        if cluster.pending_restart():
            cluster.restart()

    def _replicate(self, row: ServiceRow) -> None:
        ctx = self.ctx
        parent = self._source(row)
        found = ctx.layout.archive(parent.id).backups()
        if not found:
            raise EngineError(NO_BACKUPS)
        self.making.step(row.id, "restoring_backup")
        cluster = self._fresh(row, found[-1], ctx.layout.replica_settings(row, parent))
        # Its pgConfig as a hot standby of this primary can run it (hotstandby.py),
        # written before its first start; the store keeps what it really runs.
        least = minimums(parent, ctx.cluster(parent), cluster)
        config, changes = for_standby(row.pg_config, least)
        row = ctx.store.update(row.id, pg_config=config) or row
        write_user_conf(cluster, config)
        if changes:
            note(cluster, changed_note("this read replica", changes))
        cluster.set_signal("standby")
        self.making.step(row.id, "replaying_wal")
        cluster.start(timeout=REPLAY_TIMEOUT_S)
        self._configure(cluster, row, for_standby(parent.pg_config, least)[0])
        try:
            caught_up = wait_caught_up(ctx.cluster(parent), cluster, CATCH_UP_S)
        except psycopg.OperationalError as exc:  # the primary restarting meanwhile
            caught_up = False
            log.warning("replica %s: %s", row.id, exc)
        if not caught_up:  # it goes on following; running is not worth failing for this
            log.warning("replica %s is still catching up with %s", row.id, parent.id)

    # -- promote

    async def promote(self, row: ServiceRow) -> ServiceRow:
        """A replica becomes a writable primary of its own, with its own backups."""
        ctx = self.ctx
        require_running(row, "a promotion")
        async with ctx.lock(row.id):
            cluster = ctx.cluster(row)
            await ctx.run(promote, cluster)
            promoted = ctx.store.update(row.id, is_primary=True, parent_id=None)
            assert promoted is not None
            if await ctx.run(cluster.write_base_conf, ctx.layout.primary_settings(promoted)):
                await ctx.run(cluster.reload)
        self.backups.take_soon(row.id, force=True)
        return promoted
