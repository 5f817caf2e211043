"""Service lifecycle: the state machine of docs/api-behaviour.md §5 driven over real clusters.

:class:`Lifecycle` is what the API calls, and all it calls: every operation on
a service, its metrics and its statement statistics go through one of its
methods. Routes validate and answer at once; the slow part (initdb, start,
restart, removal) runs as an asyncio task that calls the synchronous servers
in a worker thread, and moves the service's state in the store as it goes.
Each service has one lock, so a restart, a config write and a delete never
interleave; PATCHes of its IP access rules take one of their own.

The lifecycle assembles its parts around one :class:`~.context.Context` and
hands it to each; none of them knows the lifecycle:

- :mod:`.provisioning`: create, delete, and starting services again after a restart;
- :mod:`.standbys`: HA standbys and switchover; :mod:`.schedule`: base backups;
- :mod:`.restores`: point-in-time restores, read replicas and promotion (made in
  steps by :mod:`.making`: deletable at each, failing visibly);
- :mod:`.followers`: replicas and standbys kept able to follow their primary's settings;
- :mod:`.sampler` and :mod:`.querystats`: what the metrics and insights endpoints read;
- :mod:`.configs`: configuration writes no crash can split, and their reconcile at start.

The operations on a running service (restart, switchover, password, config,
rename) are here.

On start-up :meth:`Lifecycle.start` brings every stored service back to the
state it had: a create cut short by a crash is redone from scratch (its
password was kept for that), running services are adopted or started (their
HA standbys too), restores and replicas cut short are redone, and a delete cut
short is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb import regions
from pgcloud_nb.sandbox.errors import Conflict, RequestRefused
from pgcloud_nb.sandbox.insights.logs import LogQuery
from pgcloud_nb.sandbox.insights.statements import Counters, Key, Statement
from pgcloud_nb.sandbox.postgres.binaries import datadir_major
from pgcloud_nb.sandbox.postgres.cluster import stop_all
from pgcloud_nb.sandbox.postgres.confcheck import check_settings
from pgcloud_nb.sandbox.postgres.hardening import harden_clusters
from pgcloud_nb.sandbox.services import access_lists
from pgcloud_nb.sandbox.services.catalog import BackupEntry, catalog
from pgcloud_nb.sandbox.services.configs import Configs
from pgcloud_nb.sandbox.services.context import (
    CONFIGURABLE,
    SERVER_DOWN,
    Context,
    require_running,
)
from pgcloud_nb.sandbox.services.followers import Followers
from pgcloud_nb.sandbox.services.naming import generate_password, rename_hostname
from pgcloud_nb.sandbox.services.provisioning import Provisioning
from pgcloud_nb.sandbox.services.querystats import QueryStats
from pgcloud_nb.sandbox.services.restores import Restores
from pgcloud_nb.sandbox.services.sampler import Sampler
from pgcloud_nb.sandbox.services.schedule import BackupSchedule
from pgcloud_nb.sandbox.services.standbys import Standbys
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.sandbox.store import ServiceRow, Store
from pgcloud_nb.sandbox.telemetry.samples import Sample

__all__ = ["Lifecycle"]

log = logging.getLogger("pgcloud_nb.sandbox")


class Lifecycle:
    def __init__(self, settings: Settings, store: Store, clusters_dir: Path) -> None:
        ctx = self._ctx = Context(settings, store, clusters_dir)
        self._backups = BackupSchedule(ctx)
        self._ha = Standbys(ctx)
        self._sampler = Sampler(ctx)
        self._stats = QueryStats(ctx)
        self._making = Provisioning(ctx, self._backups, self._ha, self._sampler)
        self._restores = Restores(ctx, self._backups, self._ha)
        self._configs = Configs(ctx)
        self._followers = Followers(ctx, self._configs)
        self._rule_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- lookups ------------------------------------------------------------

    def get(self, service_id: str) -> ServiceRow | None:
        return self._ctx.store.get(service_id)

    def services(self) -> list[ServiceRow]:
        return self._ctx.store.rows()

    # -- new services -------------------------------------------------------

    async def create(self, body: dict[str, Any]) -> tuple[ServiceRow, str]:
        """Record a new service (``creating``) and start making it; its password too."""
        provider, region = body["provider"], body["region"]
        if not regions.accepts(provider, region, self._ctx.settings.regions):
            # docs/api-behaviour.md, "Regions": the real server refuses regions it does not serve.
            raise RequestRefused(
                f"BAD_REQUEST: request body.region: '{region}' is not a region"
                f" Managed Postgres serves on {provider}"
            )
        # The docs call 17 the default when omitted (docs/api-behaviour.md §4.2).
        await self._check_new(body, int(str(body.get("postgresVersion", "17"))))
        return self._making.new_row(body)

    async def restore(self, source: ServiceRow, body: dict[str, Any]) -> ServiceRow:
        """A new service holding ``source``'s data at ``restoreTarget``."""
        await self._check_new(body, self._made_by(source))
        return self._restores.start_restore(source, body)

    async def replicate(self, primary: ServiceRow, body: dict[str, Any]) -> ServiceRow:
        """A new read replica following ``primary``."""
        await self._check_new(body, self._made_by(primary))
        return self._restores.start_replica(primary, body)

    def _made_by(self, source: ServiceRow) -> int | None:
        """The major of ``source``'s data, which a restore or replica copies."""
        return datadir_major(self._ctx.cluster(source).pgdata)

    async def _check_new(self, body: dict[str, Any], major: int | None) -> None:
        """Creates, restores and replicas all make a service (a real server) of the org;
        a pgConfig this PostgreSQL refuses is a 400 now, not a service that never starts."""
        access_lists.check(body)
        limit = self._ctx.settings.max_services
        if len(self._ctx.store.rows()) >= limit:
            raise RequestRefused(
                f"BAD_REQUEST: the organization has reached its limit of {limit} Postgres services"
            )
        settings = {k: str(v) for k, v in body.get("pgConfig", {}).items()}
        if settings:
            await self._ctx.run(check_settings, settings, self._ctx.template_dir, major)

    # -- changes ------------------------------------------------------------

    async def update(self, row: ServiceRow, body: dict[str, Any]) -> ServiceRow:
        """A PATCH of name, size, haType, tags and ipAccessList; an omitted field stays."""
        if row.state == "deleting":
            raise Conflict("Service is deleting.")
        if not row.is_primary and {"size", "haType", "tags"} & body.keys():
            raise RequestRefused(
                "BAD_REQUEST: read replicas do not accept size, haType or tags changes"
            )
        changes: dict[str, Any] = {}
        if "size" in body:
            changes["size"] = body["size"]
        if "haType" in body:
            changes["ha_type"] = body["haType"]
        if "tags" in body:  # replaced wholesale
            changes["tags"] = body["tags"]
        rules = access_lists.FIELD in body
        # The rules are read, changed and written back with no other PATCH of them in
        # between: a rename in the same PATCH waits for a new certificate, and a change
        # made meanwhile would be overwritten. All or nothing: a 400 comes before the rename.
        async with self._rules_lock(row.id) if rules else contextlib.nullcontext():
            if rules:  # removals, then additions; from the rules as they are now
                now = self._ctx.store.get(row.id)
                if now is None:
                    raise Conflict("Service is gone.")
                changes["ip_access_list"] = access_lists.changed(now, body[access_lists.FIELD])
            if "name" in body and body["name"] != row.name:
                row = await self._rename(row, body["name"])
            updated = self._ctx.store.update(row.id, **changes)
        assert updated is not None
        if "ha_type" in changes and changes["ha_type"] != row.ha_type:
            # docs/api-behaviour.md §4.7: asynchronous; the service stays running meanwhile.
            self._ha.reconcile_soon(row.id)
        if "ip_access_list" in changes:
            if updated.state == "running":  # in force when the answer comes
                await access_lists.enforce(self._ctx, row.id)
            else:  # once what holds the service's lock (a create, a restore) is done
                self._ctx.spawn(access_lists.enforce(self._ctx, row.id), f"access {row.id}")
        return updated

    def _rules_lock(self, service_id: str) -> asyncio.Lock:
        """One lock per service for a PATCH of its rules. Not the service's lock: a create,
        restore or base backup holds that for its whole length, and a PATCH of the rules
        meanwhile answers at once (docs/api-behaviour.md §12.2). It lives while in use."""
        return self._rule_locks.setdefault(service_id, asyncio.Lock())

    async def delete(self, row: ServiceRow) -> None:
        if self._restores.cancel(row):  # a restore or replica being made stops being made
            self._ctx.spawn(self._making.remove(row.id), f"delete {row.id}")
            return
        self._making.delete(row)

    # -- state commands -------------------------------------------------------

    async def restart(self, row: ServiceRow) -> ServiceRow:
        require_running(row, "a restart")
        updated = self._ctx.store.update(row.id, state="restarting")
        assert updated is not None
        self._ctx.spawn(self._restart(row.id), f"restart {row.id}")
        return updated

    async def _restart(self, service_id: str) -> None:
        ctx = self._ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None:
                return
            nodes = [*ctx.layout.standbys(row), ctx.cluster(row)]
            try:
                # Followers first: a hot standby needs settings such as max_connections at
                # least as high as its primary's (followers.py).
                if row.is_primary:
                    await self._followers.restart_first(row.id)
                for node in nodes:
                    await ctx.run(node.restart)
            except Exception as exc:  # new settings that stop it: those it ran come back
                if not await self._configs.fall_back(row, exc, [n.restart for n in nodes]):
                    log.error("service %s failed to restart: %s", service_id, exc)
                    ctx.store.update(service_id, state="unavailable")
                    return
            ctx.store.update(service_id, state="running")

    async def promote(self, row: ServiceRow) -> ServiceRow:
        """A read replica becomes a primary of its own (:meth:`Restores.promote`)."""
        if row.is_primary:  # assumed: docs/api-behaviour.md §5.5
            raise RequestRefused(
                "BAD_REQUEST: only a read replica can be promoted; this service is a primary"
            )
        return await self._restores.promote(row)

    async def switchover(self, row: ServiceRow) -> ServiceRow:
        """Move the primary role to an HA standby (:meth:`Standbys.switchover`).

        Without a standby, the real API replaces the primary with a fresh server
        and switches to it (docs/api-behaviour.md §5.6); here that is a fast restart of the same
        data under the same address. ``state`` stays ``running``: not observable."""
        if not row.is_primary:  # assumed: docs/api-behaviour.md §5.5
            raise RequestRefused(
                "BAD_REQUEST: a read replica has no standby to switch over to; promote it instead"
            )
        require_running(row, "a switchover")
        self._ctx.spawn(self._switch(row.id), f"switchover {row.id}")
        return row

    async def _switch(self, service_id: str) -> None:
        ctx = self._ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None or row.state != "running":
                return
            await self._followers.restart_first(row.id)  # the primary restarts, in effect
            if row.standbys:
                await self._ha.switchover(row)
            else:
                await ctx.run(ctx.cluster(row).restart)

    # -- password, config, name ---------------------------------------------

    async def set_password(self, row: ServiceRow, password: str | None) -> str:
        """Set ``password``, or a new generated one when None; returns the one set.

        Only the server holds a password, so one that is down (stopped, killed) is a
        409 and nothing changes (docs/api-behaviour.md §3.3)."""
        if password is None:
            password = generate_password()
        require_running(row, "a password reset")
        async with self._ctx.lock(row.id):
            row = self._ctx.current(row, "a password reset")
            try:
                await self._ctx.run(self._ctx.cluster(row).set_password, password)
            except psycopg.OperationalError:
                raise Conflict(f"{SERVER_DOWN} A password reset needs it running.") from None
        return password

    async def apply_config(
        self, row: ServiceRow, pg_config: dict[str, str], bouncer: dict[str, str], *, merge: bool
    ) -> tuple[ServiceRow, list[str]]:
        """Apply a new user config: merged into the stored one (a PATCH) or replacing
        it (a POST); returns the service as written and what still needs a restart.

        The merge reads the stored config under the service's lock, so writes at once
        never lose one another's keys. Validated, stored, then written to the servers,
        in an order no crash can split (:mod:`.configs`); a value PostgreSQL refuses
        changes nothing. A server that is down keeps it for its next start.
        """
        ctx = self._ctx
        require_running(row, "changing the configuration", CONFIGURABLE)
        changes: list[str] = []
        async with ctx.lock(row.id):
            row = ctx.current(row, "changing the configuration", CONFIGURABLE)
            if merge:
                pg_config = {**row.pg_config, **pg_config}
                bouncer = {**row.pg_bouncer_config, **bouncer}
            if not row.is_primary:  # as a hot standby of its primary can run it (followers.py)
                pg_config, changes = await self._followers.for_replica(row, pg_config)
            pending = await self._configs.write_held(row, pg_config, bouncer)
            written = ctx.store.get(row.id)
        assert written is not None
        await self._followers.tell(row, changes, pending)
        if row.is_primary:  # its replicas take raised values now; a restart restarts them first
            await self._followers.follow(row.id)
        return written, pending

    async def max_connections(self, row: ServiceRow) -> str | None:
        """The server's max_connections when no user config sets it (what the config
        answer shows then), or None when it is set or the server cannot be asked."""
        if row.pg_config or row.state != "running":
            return None

        def show() -> str:
            with self._ctx.cluster(row).connect() as conn:
                found = conn.execute("SHOW max_connections").fetchone()
                return str(found[0]) if found else "100"

        try:
            return await self._ctx.run(show)
        except Exception:
            return None

    async def _rename(self, row: ServiceRow, name: str) -> ServiceRow:
        """A new name means a new hostname and a new server certificate (spec)."""
        ctx = self._ctx
        require_running(row, "a rename")
        async with ctx.lock(row.id):
            row = ctx.current(row, "a rename")
            hostname = rename_hostname(row.hostname, name, row.id)
            primary = ctx.cluster(row)
            await ctx.run(primary.reissue_certificate, [hostname])
            for node in ctx.layout.standbys(row):  # one identity for every node
                await ctx.run(node.copy_identity, primary)
        updated = ctx.store.update(row.id, name=name, hostname=hostname)
        assert updated is not None
        return updated

    async def backups(self, row: ServiceRow) -> list[BackupEntry]:
        """The service's finished base backups, newest first (:mod:`.catalog`)."""
        return await self._ctx.run(catalog, self._ctx.layout.archive(row.id))

    async def ca_certificate(self, row: ServiceRow) -> str:
        """The PEM of the CA that signed the service's server certificate."""
        return await self._ctx.run(self._ctx.cluster(row).ca_pem)

    # -- metrics and statement statistics ------------------------------------

    async def latest_sample(self, row: ServiceRow) -> Sample | None:
        return await self._sampler.latest(row)

    def samples(self, row: ServiceRow, since: float, until: float) -> list[Sample]:
        return self._sampler.between(row, since, until)

    async def statements(self, row: ServiceRow) -> tuple[list[Statement], float | None]:
        return await self._stats.statements(row)

    def statement_window(self, row: ServiceRow, key: Key, start: float, end: float) -> Counters:
        return self._stats.window(row, key, start, end)

    async def log_entries(self, row: ServiceRow, query: LogQuery) -> list[dict[str, Any]]:
        return await self._stats.log_entries(row, query)

    async def log_records(
        self, row: ServiceRow, start: float, end: float, query_id: int | None = None
    ) -> list[tuple[float, dict[str, Any]]]:
        return await self._stats.log_records(row, start, end, query_id)

    # -- start-up and shut-down -----------------------------------------------

    async def start(self) -> None:
        """Bring each stored service back to its recorded state (after a crash too),
        then keep taking backups, samples and statement snapshots."""
        ctx, making = self._ctx, self._making
        # Servers an older sandbox left (trust, loose modes, /tmp sockets) first get
        # today's access rules; one that must move its socket is stopped and resumed below.
        await ctx.run(harden_clusters, ctx.clusters_dir)
        # Before the API answers: a config write a crash cut short is finished (or
        # undone), and every server's settings file says what the store says.
        await ctx.run(self._configs.reconcile_all)
        for row in ctx.store.rows():
            if self._restores.resumes(row):
                continue
            if row.state == "creating":
                ctx.spawn(making.provision(row.id), f"provision {row.id}")
            elif row.state == "deleting":
                ctx.spawn(making.remove(row.id), f"delete {row.id}")
            elif row.state in ("running", "restarting"):
                ctx.spawn(making.ensure_started(row.id), f"resume {row.id}")
        ctx.spawn(self._backups.forever(), "backups")
        ctx.spawn(self._sampler.forever(), "samples")
        ctx.spawn(self._stats.forever(), "query statistics snapshots")

    async def shutdown(self) -> None:
        await self._ctx.cancel_tasks()
        await self._ctx.run(stop_all, self._ctx.clusters_dir)
