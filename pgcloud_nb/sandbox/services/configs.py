"""A service's configuration, written so that no crash leaves the API and the server disagreeing.

A write (a POST or PATCH of ``/config``) holds the service's lock from its read
of the stored configuration to its last step, so two writes at once run one
after the other and a PATCH merges into what the one before it stored
(:meth:`Configs.write_held`, under the caller's hold of the lock). It goes in
one order:

1. **validate**: names and values by PostgreSQL's own checks (``postgres -C``,
   :func:`~pgcloud_nb.sandbox.postgres.confcheck.check_values`), no file
   touched; a refused value is a 400 and nothing changes;
2. **commit**: one transaction stores the new ``pgConfig`` and
   ``pgBouncerConfig`` and, beside them, the pair they replace
   (``ServiceRow.config_undo``). From here on the API reports the new
   configuration, and the store says a write is in flight;
3. **write** the serving node's user settings file atomically and durably
   (temporary file, fsync, rename, fsync of the folder), then **reload**; the
   names still needing a restart are the answer's restart message
   (docs/api-behaviour.md, "The restart message"). A serving node that is
   down (stopped, killed, or not taking connections) keeps the file for its
   next start instead, checked the way that start reads it, and PostgreSQL's
   parameter list says what differs from the settings it last started with
   and needs a restart (docs/api-behaviour.md §8.6);
4. each HA standby gets the same file, and a reload when it runs;
5. **settle**: the undo is dropped.

Should the server refuse the file after all (its own check before loading it),
the previous file is put back and the undo committed: the write did not
happen, and the API says so.

A sandbox killed anywhere in there is put right by :meth:`Configs.reconcile_all`,
which the lifecycle runs at start before the API answers: a write in flight is
finished from the store (the truth from step 2 on), or undone when the server
refuses it; every node's file is made to say what the store says, and a running
node whose file changed (or whose write was in flight) reloads. Settings that
need a restart stay pending (``pg_settings.pending_restart``), as an uncut write
leaves them: saying so was the answer's job.

Whatever gets past the checks cannot keep a service down: when a restart or
a resume fails to start its servers and their settings are not the ones they
last started with, :meth:`Configs.fall_back` puts those back (the store too,
so the API reads what runs) and starts them again (docs/api-behaviour.md §8.6).

A new service's settings are written before its first start
(:func:`write_user_conf`), so they hold at once without a restart. A restore or
read replica is made from scratch again when cut short, its settings included.
``pgBouncerConfig`` has no server in the sandbox: it lives in the store only,
committed with ``pgConfig`` in step 2.

``PGCLOUD_SANDBOX_CRASH_AT`` (:mod:`~pgcloud_nb.sandbox.crashpoints`) can stop
the server at each of :data:`STEPS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from pgcloud_nb.sandbox.crashpoints import reached
from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError, ServerExited
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.confcheck import check_values, restart_needed, split_supported
from pgcloud_nb.sandbox.postgres.conffiles import (
    apply_user_conf,
    keep_user_conf,
    started_settings,
    sync_user_conf,
    user_settings,
)
from pgcloud_nb.sandbox.postgres.process import signal_reload
from pgcloud_nb.sandbox.services.context import CONFIGURABLE, Context
from pgcloud_nb.sandbox.services.hotstandby import standby_config
from pgcloud_nb.sandbox.services.notes import note, reason
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["STEPS", "Configs", "write_user_conf"]

log = logging.getLogger("pgcloud_nb.sandbox")

# Where a write can be cut short, in the order a write reaches them.
STEPS = (
    "config:validated",  # checked, nothing stored yet
    "config:committed",  # stored with its undo, no file written
    "config:file-staged",  # the serving node's new file on disk under a temporary name
    "config:file-replaced",  # in place, not yet loaded
    "config:reloaded",  # the serving node runs it
    "config:standby-file-staged",
    "config:standby-file-replaced",
    "config:standby-reloaded",
    "config:settled",  # the undo dropped, the answer not yet sent
    "config:refused",  # (only on a refusal) the old file back, the undo not yet committed
)
IN_EFFECT = ("running", "restarting")  # the states whose servers run the stored settings


def checked(node: Cluster, settings: dict[str, str]) -> dict[str, str]:
    """The settings ``node``'s PostgreSQL knows, checked; ConfigValueError for a refused value."""
    applied, _ = split_supported(node.bindir, settings)
    check_values(node.bindir, node.pgdata, applied)
    return applied


def write_user_conf(node: Cluster, settings: dict[str, str]) -> bool:
    """Make ``node``'s user settings file say ``settings``; True when it changed."""
    return sync_user_conf(node.pgdata, node.bindir, settings)


def _apply(node: Cluster, applied: dict[str, str], steps: str | None) -> list[str]:
    """Write, check and reload; crash steps named ``<steps><step>`` when given."""

    def step(name: str) -> None:
        if steps is not None:
            reached(steps + name)

    return apply_user_conf(node.pgdata, node.bindir, applied, node.superuser, step)


def _serve(node: Cluster, applied: dict[str, str], before: dict[str, str]) -> list[str]:
    """The serving node takes ``applied`` (step 3): reloaded when it takes connections;
    else the file is written and checked as a start reads it, and a live postmaster
    (crash recovery, start-up) rereads it on SIGHUP. Returns the names needing a restart:
    the server's own word, or what differs from the settings it last started with
    (``before``, the stored config replaced, when no start was recorded)."""
    if node.is_running():
        try:
            return _apply(node, applied, "config:")
        except ConfigValueError:
            raise
        except EngineError as exc:  # it went down meanwhile, or is recovering from a crash
            log.warning("config of %s kept for its next start: %s", node.root.name, exc)
    keep_user_conf(node.pgdata, node.bindir, applied, lambda name: reached("config:" + name))
    # A postmaster alive but not taking connections rereads its files on SIGHUP, which
    # needs no connection; a dead one reads them when started.
    signal_reload(node.pgdata)
    started = started_settings(node.pgdata)
    if started is None:
        started = split_supported(node.bindir, before)[0]
    return restart_needed(node.bindir, started, applied)


def _start_failure(exc: BaseException) -> str:
    """Why a server did not start, in one line: PostgreSQL's FATAL message when its log
    tail (in the error) has one."""
    fatal = re.search(r"FATAL:\s+(.+)", str(exc))
    return reason(EngineError(fatal.group(1))) if fatal else reason(exc)


class Configs:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- a write

    async def write_held(
        self, row: ServiceRow, pg_config: dict[str, str], bouncer: dict[str, str]
    ) -> list[str]:
        """Make ``pg_config`` and ``bouncer`` the service's configuration (the module's
        steps), the caller holding the service's lock (``Context.lock``, which is not
        reentrant); returns the names still needing a restart."""
        ctx = self.ctx
        row = ctx.current(row, "changing the configuration", CONFIGURABLE)
        primary = ctx.cluster(row)
        applied = await ctx.run(checked, primary, pg_config)
        reached("config:validated")
        undo = {"pg_config": row.pg_config, "pg_bouncer_config": row.pg_bouncer_config}
        ctx.store.update(row.id, pg_config=pg_config, pg_bouncer_config=bouncer, config_undo=undo)
        reached("config:committed")
        try:
            pending = await ctx.run(_serve, primary, applied, row.pg_config)
        except Exception:
            reached("config:refused")
            ctx.store.update(row.id, **undo, config_undo=None)
            await ctx.run(write_user_conf, primary, row.pg_config)  # whatever failed
            raise
        reached("config:reloaded")
        for node in ctx.layout.standbys(row):  # the same settings, as a standby can
            await ctx.run(self._follow, node, standby_config(pg_config))
            reached("config:standby-reloaded")
        ctx.store.update(row.id, config_undo=None)
        reached("config:settled")
        return pending

    @staticmethod
    def _follow(node: Cluster, settings: dict[str, str]) -> None:
        """A standby takes the primary's new settings; one that cannot reload now (it is
        down or restarting) still gets the file, which it loads when it starts."""
        try:
            if node.is_running():
                _apply(node, split_supported(node.bindir, settings)[0], "config:standby-")
                return
        except Exception as exc:
            log.warning("config of standby %s: %s", node.root.name, exc)
        write_user_conf(node, settings)

    # -- a start that failed

    async def fall_back(
        self, row: ServiceRow, failure: BaseException, start: Sequence[Callable[[], object]]
    ) -> bool:
        """After ``start`` (blocking steps, in order) failed to start ``row``'s servers:
        when the serving node's user settings are not those it last started with, put
        those back (the stored pgConfig too, keeping the keys this major lacks, which
        never ran) and run ``start`` again. True when the servers now run; else every
        setting is back as it was and False. The caller holds the service's lock
        (docs/api-behaviour.md §8.6).

        Only a server that exited while starting is a setting's doing: one that was only
        slow (crash recovery on a busy machine) keeps the settings the user wrote. And
        whatever goes wrong here is logged and answered False, so that the caller still
        records the service ``unavailable`` rather than leaving it ``restarting``.
        """
        if not isinstance(failure, ServerExited):
            return False
        try:
            return await self._fall_back(row, failure, start)
        except Exception as exc:
            log.error("service %s: putting back its last settings failed: %s", row.id, exc)
            return False

    async def _fall_back(
        self, row: ServiceRow, failure: ServerExited, start: Sequence[Callable[[], object]]
    ) -> bool:
        ctx = self.ctx
        now = ctx.store.get(row.id)
        if now is None:
            return False
        serving = ctx.cluster(now)
        started = await ctx.run(started_settings, serving.pgdata)
        if started is None or started == await ctx.run(user_settings, serving.pgdata):
            return False  # the settings did not change: what failed is something else
        lacking = (await ctx.run(split_supported, serving.bindir, now.pg_config))[1]
        kept = {**started, **{k: now.pg_config[k] for k in lacking}}
        undo = {"pg_config": now.pg_config, "pg_bouncer_config": now.pg_bouncer_config}
        # Stored with its undo, as a write is: a crash from here on is reconciled.
        ctx.store.update(now.id, pg_config=kept, config_undo=undo)
        try:
            await ctx.run(self._write_all, now, kept)
            for step in start:
                await ctx.run(step)
        except Exception as exc:
            log.error("service %s: not started with its last settings either: %s", now.id, exc)
            ctx.store.update(now.id, **undo, config_undo=None)
            await ctx.run(self._write_all, now, now.pg_config)
            return False
        ctx.store.update(now.id, config_undo=None)
        why = _start_failure(failure)
        log.warning("service %s did not start (%s): it runs its last settings again", now.id, why)
        await ctx.run(
            note,
            serving,
            f"the server did not start with the configuration written ({why}); it runs the"
            " one it last started with, which the service's configuration now shows",
            "WARNING",
        )
        return True

    def _write_all(self, row: ServiceRow, settings: dict[str, str]) -> None:
        """Every node's user settings file says ``settings`` (as a standby can run them)."""
        serving = self.ctx.cluster(row)
        for node in [serving, *self.ctx.layout.standbys(row)]:
            if node.pgdata.is_dir():
                write_user_conf(node, settings if node is serving else standby_config(settings))

    # -- at start

    def reconcile_all(self) -> None:
        """Make the servers of every service whose settings are in force or kept
        (running, restarting, stopped) say what the store says (blocking; at start,
        before the API answers and before servers that are down start)."""
        for row in self.ctx.store.rows():
            if row.state not in IN_EFFECT and row.state not in CONFIGURABLE:
                continue  # creates, restores and replicas cut short are made again
            try:
                self.reconcile(row)
            except Exception as exc:  # that service only; resuming it reports the rest
                log.error("config of service %s could not be reconciled: %s", row.id, exc)

    def reconcile(self, row: ServiceRow) -> None:
        ctx = self.ctx
        in_flight = row.config_undo is not None
        if in_flight:
            row = self._finish(row)
        serving = ctx.cluster(row)
        for node in [serving, *ctx.layout.standbys(row)]:
            if not node.pgdata.is_dir():
                continue  # a standby cut short: the standbys' reconcile makes it again
            settings = row.pg_config if node is serving else standby_config(row.pg_config)
            changed = write_user_conf(node, settings)
            if (changed or in_flight) and node.is_running():
                try:
                    node.reload()
                except Exception as exc:  # it still loads the file at its next start
                    log.warning("config of %s written, not reloaded: %s", node.root.name, exc)

    def _finish(self, row: ServiceRow) -> ServiceRow:
        """A write cut short: redo it from the store, or undo it if the server refuses it."""
        ctx, undo = self.ctx, row.config_undo or {}
        primary = ctx.cluster(row)
        pending: list[str] = []
        try:
            applied = checked(primary, row.pg_config)
            if primary.is_running():  # the server's own check of the file, then a reload
                pending = _apply(primary, applied, None)
        except ConfigValueError as exc:
            log.warning("service %s: the configuration write cut short is undone: %s", row.id, exc)
            updated = ctx.store.update(row.id, **undo, config_undo=None)
        except EngineError as exc:  # not reachable now: it loads the file when it is
            log.warning("service %s: config written, not reloaded: %s", row.id, exc)
            updated = ctx.store.update(row.id, config_undo=None)
        else:
            updated = ctx.store.update(row.id, config_undo=None)
            log.info(
                "service %s: the configuration write cut short is finished%s",
                row.id,
                f"; {', '.join(pending)} take effect at the next restart" if pending else "",
            )
        assert updated is not None
        return updated
