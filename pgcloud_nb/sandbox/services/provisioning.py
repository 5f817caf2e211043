"""A service's servers made, brought back after a sandbox restart, and removed.

A create is answered at once in state ``creating``; :meth:`Provisioning.provision`
then makes the server in a worker thread (a copy of the template data folder,
fresh certificates, the settings asked for) and moves the service to
``running``, or to ``unavailable`` with the reason in its log
(:func:`.making.fail`). A delete answers at once too (``deleting``) and
:meth:`Provisioning.remove` removes every node
and the backups. :meth:`Provisioning.ensure_started` starts a running
service's serving node again after a sandbox restart, in the role and with the
settings the store gives it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from pgcloud_nb.sandbox.errors import Conflict, EngineError
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.services import access_lists
from pgcloud_nb.sandbox.services.configs import Configs, write_user_conf
from pgcloud_nb.sandbox.services.context import SETTLED, Context
from pgcloud_nb.sandbox.services.making import fail
from pgcloud_nb.sandbox.services.naming import generate_password, make_hostname
from pgcloud_nb.sandbox.services.nodes import announce
from pgcloud_nb.sandbox.services.sampler import Sampler
from pgcloud_nb.sandbox.services.schedule import BackupSchedule
from pgcloud_nb.sandbox.services.standbys import Standbys
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["Provisioning"]

log = logging.getLogger("pgcloud_nb.sandbox")


class Provisioning:
    def __init__(
        self, ctx: Context, backups: BackupSchedule, ha: Standbys, sampler: Sampler
    ) -> None:
        self.ctx = ctx
        self.backups = backups
        self.ha = ha
        self.sampler = sampler

    # -- create

    def new_row(self, body: dict[str, Any]) -> tuple[ServiceRow, str]:
        """Record a new service in state ``creating``; provisioning starts after."""
        service_id = str(uuid.uuid4())
        password = generate_password()
        row = ServiceRow(
            id=service_id,
            name=body["name"],
            provider=body["provider"],
            region=body["region"],
            # The docs call 17 the default when omitted (docs/api-behaviour.md §4.2).
            postgres_version=str(body.get("postgresVersion", "17")),
            size=body["size"],
            ha_type=body.get("haType", "none"),
            tags=list(body.get("tags", [])),
            state="creating",
            created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
            is_primary=True,
            hostname=make_hostname(body["name"], service_id, body["region"], body["provider"]),
            username="postgres",
            port=self.ctx.free_port(),
            pg_config={k: str(v) for k, v in body.get("pgConfig", {}).items()},
            pg_bouncer_config=dict(body.get("pgBouncerConfig", {})),
            pending_password=password,
            ip_access_list=access_lists.for_new(body, None),
        )
        self.ctx.store.insert(row)
        self.ctx.spawn(self.provision(service_id), f"provision {service_id}")
        return row, password

    async def provision(self, service_id: str) -> None:
        ctx = self.ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None or row.state != "creating":
                return
            cluster = ctx.cluster(row)
            try:
                await ctx.run(self._build, cluster, row)
            except Exception as exc:
                log.error("service %s failed to start: %s", service_id, exc)
                await ctx.run(fail, ctx, row, exc)  # unavailable, saying why in its log
                return
            if ctx.settings.provisioning_delay:
                await asyncio.sleep(ctx.settings.provisioning_delay)
            # Running only now that the server accepts connections.
            ctx.store.update(service_id, state="running", pending_password=None)
        # A new primary's first base backup, then its HA standbys.
        self.backups.take_soon(service_id)
        self.ha.reconcile_soon(service_id)

    def _build(self, cluster: Cluster, row: ServiceRow) -> None:
        if cluster.root.exists():  # a create cut short: start again from nothing
            cluster.remove()
        if row.pending_password is None:  # its sealed copy did not open (see store.py)
            raise EngineError("the password promised at create can no longer be read")
        self.ctx.layout.archive(row.id).ensure()
        cluster.init(
            row.pending_password,
            hostnames=[row.hostname],
            template_dir=self.ctx.template_dir,
            extra=self.ctx.layout.primary_settings(row),
        )
        # Settings given at create are in the file before the first start: they hold at
        # once, with no reload or restart, and the store has had them all along.
        write_user_conf(cluster, row.pg_config)
        access_lists.write(cluster, row)  # who may connect, from the first start on
        cluster.start()
        announce(cluster, row)

    # -- delete

    def delete(self, row: ServiceRow) -> None:
        if row.state == "deleting":
            return
        if row.state not in SETTLED:
            # docs/api-behaviour.md §4.9: 409 on DELETE while a transition is in flight.
            raise Conflict(f"Service is {row.state}; delete it once the operation completes.")
        children = self.ctx.store.children(row.id)
        if children:
            # docs/api-behaviour.md, "Delete": a primary cannot be deleted while read replicas
            # reference it; nor may a restore in progress lose the WAL archive it replays.
            replicas = ", ".join(c.id for c in children if not c.is_primary)
            restores = ", ".join(c.id for c in children if c.is_primary)
            said = []
            if replicas:
                said.append(f"Service has read replicas ({replicas}); delete them first.")
            if restores:
                said.append(
                    f"Service is the source of a restore in progress ({restores}); delete it"
                    " once the restore is running, or delete the restore."
                )
            raise Conflict(" ".join(said))
        self.ctx.store.update(row.id, state="deleting")
        self.ctx.spawn(self.remove(row.id), f"delete {row.id}")

    async def remove(self, service_id: str) -> None:
        ctx = self.ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None:
                return
            await ctx.run(ctx.layout.remove_all, row)
            ctx.store.delete(service_id)
            self.sampler.forget(service_id)
        ctx.forget(service_id)

    # -- after a sandbox restart

    async def ensure_started(self, service_id: str) -> None:
        ctx = self.ctx
        async with ctx.lock(service_id):
            row = ctx.store.get(service_id)
            if row is None:
                return
            try:
                await ctx.run(self._start_converged, row)
            except Exception as exc:  # new settings that stop it: those it ran come back
                retry = [lambda: self._start_converged(row)]
                if not await Configs(ctx).fall_back(row, exc, retry):
                    log.error("service %s could not be resumed: %s", service_id, exc)
                    ctx.store.update(service_id, state="unavailable")
                    return
            ctx.store.update(service_id, state="running")
        if row.is_primary:
            self.ha.reconcile_soon(service_id)

    def _start_converged(self, row: ServiceRow) -> None:
        """Start the serving node with the settings its role needs now; a service made
        before backups existed gains archiving here (archive_mode needs a restart)."""
        cluster = self.ctx.cluster(row)
        self.ctx.layout.archive(row.id).ensure()
        changed = cluster.write_base_conf(self.ctx.layout.settings(row, self.ctx.parent(row)))
        changed |= access_lists.write(cluster, row)  # the stored rules win over the node's
        if not cluster.is_running():
            # The role the store gives it, whatever the node was when it stopped (a
            # switchover cut short: see standbys.py).
            cluster.set_signal(None if row.is_primary else "standby")
            cluster.start()
            announce(cluster, row)
        elif changed:
            cluster.reload()
            if cluster.pending_restart():
                cluster.restart()
                announce(cluster, row)
