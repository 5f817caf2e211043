"""Service lifecycle: the state machine of API-NOTES §6 driven over real clusters.

Routes validate and answer at once; the slow part (initdb, start, restart,
removal) runs as an asyncio task that calls the synchronous engine in a worker
thread, and moves the service's state in the store as it goes. Each service has
one lock, so a restart, a config write and a delete never interleave.

On start-up :meth:`Lifecycle.resume` brings every stored service back to the
state it had: a create cut short by a crash is redone from scratch (its
password was kept for that), running services are adopted or started (their
HA standbys too), restores and replicas cut short are redone, and a delete cut
short is finished.

The advanced operations live beside this module and share its locks and
tasks: backups (:mod:`services.schedule`), HA standbys and switchover (:mod:`services.standbys`),
point-in-time restores, read replicas and promotion (:mod:`services.restores`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread

from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port, stop_all
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.services.nodes import Layout
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.sandbox.store import ServiceRow, Store
from pgcloud_nb.sandbox.telemetry import sampling
from pgcloud_nb.sandbox.telemetry.samples import Sample
from pgcloud_nb.sizes import size_spec

__all__ = ["Conflict", "Lifecycle", "generate_password"]

log = logging.getLogger("pgcloud_nb.sandbox")
T = TypeVar("T")

# Samples older than this are dropped; the real API keeps about a month of metrics.
SAMPLE_RETENTION_S = 30 * 24 * 3600
# States from which an operation may start; others are a transition in flight.
SETTLED = {"running", "unavailable", "stopped"}


class Conflict(Exception):
    """The service's state does not allow the operation now (answered as 409)."""


def generate_password(length: int = 24) -> str:
    """A password that meets ``pgPassword``: lower, upper and digit, URL-safe."""
    alphabet = string.ascii_letters + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
        ):
            return pw


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "pg"


def make_hostname(name: str, service_id: str, region: str, provider: str) -> str:
    """The real hostname's shape (API-NOTES §5.1) under ``.localhost``.

    ``*.localhost`` is reserved for loopback (RFC 6761) but not every resolver
    maps it, so connection strings also carry ``hostaddr=127.0.0.1``; the name
    still matters to TLS, whose certificate lists it.
    """
    cluster = "pg" + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(24)
    )
    region = re.sub(r"[^a-z0-9-]+", "-", region.lower()).strip("-") or "local"
    return f"{_slug(name)}-{service_id[:8]}.{cluster}.c0.{region}.{provider}.pg.sandbox.localhost"


def rename_hostname(hostname: str, name: str, service_id: str) -> str:
    """Renaming changes the hostname's first label (spec: PATCH name)."""
    _, _, rest = hostname.partition(".")
    return f"{_slug(name)}-{service_id[:8]}.{rest}"


def connection_string(row: ServiceRow, password: str) -> str:
    return (
        f"postgres://{row.username}:{password}@{row.hostname}:{row.port}/postgres"
        "?hostaddr=127.0.0.1&channel_binding=require"
    )


class Lifecycle:
    def __init__(self, settings: Settings, store: Store, clusters_dir: Path, org_id: str) -> None:
        self.settings = settings
        self.store = store
        self.org_id = org_id
        self.clusters_dir = usable_clusters_dir(clusters_dir)
        self.template_dir = self.clusters_dir / ".template"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._counters: dict[str, sampling.ProcessCounters] = {}
        self.layout = Layout(self.clusters_dir)
        # Imported here: they type-check against this class.
        from pgcloud_nb.sandbox.services.restores import Restores
        from pgcloud_nb.sandbox.services.schedule import BackupSchedule
        from pgcloud_nb.sandbox.services.standbys import Standbys

        self.backups = BackupSchedule(self)
        self.ha = Standbys(self)
        self.restores = Restores(self)

    # -- plumbing ---------------------------------------------------------

    def cluster(self, row: ServiceRow) -> Cluster:
        """The server answering on the service's port (its primary node)."""
        return self.layout.primary(row)

    def parent(self, row: ServiceRow) -> ServiceRow | None:
        return self.store.get(row.parent_id) if row.parent_id else None

    def lock(self, service_id: str) -> asyncio.Lock:
        return self._locks.setdefault(service_id, asyncio.Lock())

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sandbox task failed: %s", what)

        task = asyncio.get_running_loop().create_task(guarded(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(fn, *args)

    def free_port(self) -> int:
        used = self.store.used_ports()
        for _ in range(50):
            port = free_port()
            if port not in used:
                return port
        raise RuntimeError("no free TCP port for a new service")

    # -- create -----------------------------------------------------------

    def new_row(self, body: dict[str, Any]) -> tuple[ServiceRow, str]:
        """Record a new service in state ``creating``; provisioning starts after."""
        service_id = str(uuid.uuid4())
        password = generate_password()
        row = ServiceRow(
            id=service_id,
            name=body["name"],
            provider=body["provider"],
            region=body["region"],
            # The docs call 17 the default when omitted (API-NOTES §4).
            postgres_version=str(body.get("postgresVersion", "17")),
            size=body["size"],
            ha_type=body.get("haType", "none"),
            tags=list(body.get("tags", [])),
            state="creating",
            created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
            is_primary=True,
            hostname=make_hostname(body["name"], service_id, body["region"], body["provider"]),
            username="postgres",
            port=self.free_port(),
            pg_config={k: str(v) for k, v in body.get("pgConfig", {}).items()},
            pg_bouncer_config=dict(body.get("pgBouncerConfig", {})),
            pending_password=password,
        )
        self.store.insert(row)
        self.spawn(self.provision(service_id), f"provision {service_id}")
        return row, password

    async def provision(self, service_id: str) -> None:
        async with self.lock(service_id):
            row = self.store.get(service_id)
            if row is None or row.state != "creating":
                return
            cluster = self.cluster(row)
            try:
                await self.run(self._build, cluster, row)
            except Exception as exc:
                log.error("service %s failed to start: %s", service_id, exc)
                await self.run(cluster.remove)
                self.store.update(service_id, state="unavailable", pending_password=None)
                return
            if self.settings.provisioning_delay:
                await asyncio.sleep(self.settings.provisioning_delay)
            # Running only now that the server accepts connections.
            self.store.update(service_id, state="running", pending_password=None)
        self.after_running(service_id)

    def after_running(self, service_id: str) -> None:
        """A new primary's first base backup, then its HA standbys."""
        self.spawn(self.backups.take(service_id), f"first backup {service_id}")
        self.spawn(self.ha.reconcile(service_id), f"standbys {service_id}")

    def _build(self, cluster: Cluster, row: ServiceRow) -> None:
        if cluster.root.exists():  # a create cut short: start again from nothing
            cluster.remove()
        assert row.pending_password is not None
        self.layout.archive(row.id).ensure()
        cluster.init(
            row.pending_password,
            hostnames=[row.hostname],
            template_dir=self.template_dir,
            extra=self.layout.primary_settings(row),
        )
        cluster.start()
        if row.pg_config:
            cluster.apply_config(row.pg_config)
            if cluster.pending_restart():  # settings given at create take effect at once
                cluster.restart()

    # -- delete -----------------------------------------------------------

    async def delete(self, row: ServiceRow) -> None:
        if row.state == "deleting":
            return
        if row.state not in SETTLED:
            # API-NOTES §1: 409 on DELETE while a transition is in flight.
            raise Conflict(f"Service is {row.state}; delete it once the operation completes.")
        children = self.store.children(row.id)
        if children:
            # API-NOTES §5.4: a primary cannot be deleted while read replicas reference it.
            ids = ", ".join(c.id for c in children)
            if any(not c.is_primary for c in children):
                raise Conflict(f"Service has read replicas ({ids}); delete them first.")
            raise Conflict(f"Service is the source of restores in progress ({ids}).")
        self.store.update(row.id, state="deleting")
        self.spawn(self.remove(row.id), f"delete {row.id}")

    async def remove(self, service_id: str) -> None:
        async with self.lock(service_id):
            row = self.store.get(service_id)
            if row is None:
                return
            await self.run(self._remove_files, row)
            self.store.delete(service_id)
            self._counters.pop(service_id, None)
        self._locks.pop(service_id, None)

    def _remove_files(self, row: ServiceRow) -> None:
        """Every node (standbys first: they follow the primary), then the backups."""
        for node in [*self.layout.standbys(row), *self.layout.strays(row), self.cluster(row)]:
            node.remove()
        self.layout.archive(row.id).remove()

    # -- state commands ---------------------------------------------------

    def require_running(self, row: ServiceRow, action: str) -> None:
        if row.state != "running":
            raise Conflict(f"Service is {row.state}; {action} needs it to be running.")

    async def restart(self, row: ServiceRow) -> ServiceRow:
        self.require_running(row, "a restart")
        updated = self.store.update(row.id, state="restarting")
        assert updated is not None
        self.spawn(self._restart(row.id), f"restart {row.id}")
        return updated

    async def _restart(self, service_id: str) -> None:
        async with self.lock(service_id):
            row = self.store.get(service_id)
            if row is None:
                return
            try:
                # Standbys first: a hot standby needs settings such as max_connections at
                # least as high as its primary's.
                for node in [*self.layout.standbys(row), self.cluster(row)]:
                    await self.run(node.restart)
            except Exception as exc:
                log.error("service %s failed to restart: %s", service_id, exc)
                self.store.update(service_id, state="unavailable")
                return
            self.store.update(service_id, state="running")

    async def switchover(self, row: ServiceRow) -> ServiceRow:
        """Move the primary role to an HA standby (:meth:`Standbys.switchover`).

        Without a standby, the real API replaces the primary with a fresh server
        and switches to it (API-NOTES §6); here that is a fast restart of the same
        data under the same address. ``state`` stays ``running``: not observable."""
        self.require_running(row, "a switchover")
        self.spawn(self._switch(row.id), f"switchover {row.id}")
        return row

    async def _switch(self, service_id: str) -> None:
        async with self.lock(service_id):
            row = self.store.get(service_id)
            if row is None or row.state != "running":
                return
            if row.standbys:
                await self.ha.switchover(row)
            else:
                await self.run(self.cluster(row).restart)

    # -- password and config -----------------------------------------------

    def current(self, row: ServiceRow, action: str) -> ServiceRow:
        """The service as it is now, called under its lock: a switchover or a standby
        change that held the lock may have moved the primary or removed nodes."""
        found = self.store.get(row.id)
        if found is None:
            raise Conflict("Service is gone.")
        self.require_running(found, action)
        return found

    async def set_password(self, row: ServiceRow, password: str) -> None:
        self.require_running(row, "a password reset")
        async with self.lock(row.id):
            row = self.current(row, "a password reset")
            await self.run(self.cluster(row).set_password, password)

    async def apply_config(
        self, row: ServiceRow, pg_config: dict[str, str], bouncer: dict[str, str]
    ) -> list[str]:
        """Apply a whole new user config; returns what still needs a restart.

        The engine refuses a value PostgreSQL rejects and puts the old file
        back, so the store is written only after the server took the change.
        """
        self.require_running(row, "changing the configuration")
        async with self.lock(row.id):
            row = self.current(row, "changing the configuration")
            pending = await self.run(self.cluster(row).apply_config, pg_config)
            self.store.update(row.id, pg_config=pg_config, pg_bouncer_config=bouncer)
            for node in self.layout.standbys(row):  # standbys run the same settings
                try:
                    await self.run(node.apply_config, pg_config)
                except Exception as exc:
                    log.warning("config of a standby of %s: %s", row.id, exc)
        return pending

    async def rename(self, row: ServiceRow, name: str) -> ServiceRow:
        """A new name means a new hostname and a new server certificate (spec)."""
        self.require_running(row, "a rename")
        async with self.lock(row.id):
            row = self.current(row, "a rename")
            hostname = rename_hostname(row.hostname, name, row.id)
            primary = self.cluster(row)
            await self.run(primary.reissue_certificate, [hostname])
            for node in self.layout.standbys(row):  # one identity for every node
                await self.run(node.copy_identity, primary)
        updated = self.store.update(row.id, name=name, hostname=hostname)
        assert updated is not None
        return updated

    # -- telemetry --------------------------------------------------------

    def counters(self, row: ServiceRow) -> sampling.ProcessCounters:
        acc = self._counters.get(row.id)
        if acc is None:
            acc = sampling.ProcessCounters.from_dict(row.counters or {})
            self._counters[row.id] = acc
        return acc

    def _collect(self, row: ServiceRow) -> Sample | None:
        cluster = self.cluster(row)
        pid = cluster.postmaster_pid()
        spec = size_spec(row.size)
        if pid is None or spec is None:
            return None
        with cluster.connect() as conn:
            return sampling.collect(conn, pid, cluster.pgdata, spec, self.counters(row))

    async def sample(self, row: ServiceRow) -> dict[str, Any] | None:
        """Take one sample of a running service and store it."""
        async with self.lock(row.id):
            current = self.store.get(row.id)
            if current is None or current.state != "running":
                return None
            try:
                found = await self.run(self._collect, current)
            except Exception as exc:  # a server mid-restart cannot be sampled
                log.warning("sampling %s failed: %s", row.id, exc)
                return None
            if found is None:
                return None
            data = found.to_dict()
            self.store.add_sample(row.id, found.taken_at, data, self.counters(row).to_dict())
            return data

    async def sample_forever(self) -> None:
        last_prune = 0.0
        while True:
            for row in self.store.rows():
                if row.state == "running":
                    await self.sample(row)
            if time.time() - last_prune > 3600:
                self.store.prune_samples(time.time() - SAMPLE_RETENTION_S)
                last_prune = time.time()
            await asyncio.sleep(self.settings.sample_interval)

    # -- start-up and shut-down -------------------------------------------

    async def resume(self) -> None:
        """Bring each stored service back to its recorded state (after a crash too)."""
        for row in self.store.rows():
            if self.restores.resumes(row):
                continue
            if row.state == "creating":
                self.spawn(self.provision(row.id), f"provision {row.id}")
            elif row.state == "deleting":
                self.spawn(self.remove(row.id), f"delete {row.id}")
            elif row.state in ("running", "restarting"):
                self.spawn(self._ensure_started(row.id), f"resume {row.id}")
        self.spawn(self.backups.forever(), "backups")

    async def _ensure_started(self, service_id: str) -> None:
        async with self.lock(service_id):
            row = self.store.get(service_id)
            if row is None:
                return
            try:
                await self.run(self._start_converged, row)
            except Exception as exc:
                log.error("service %s could not be resumed: %s", service_id, exc)
                self.store.update(service_id, state="unavailable")
                return
            self.store.update(service_id, state="running")
        if row.is_primary:
            self.spawn(self.ha.reconcile(service_id), f"standbys {service_id}")

    def _start_converged(self, row: ServiceRow) -> None:
        """Start the serving node with the settings its role needs now; a service made
        before backups existed gains archiving here (archive_mode needs a restart)."""
        cluster = self.cluster(row)
        self.layout.archive(row.id).ensure()
        changed = cluster.write_base_conf(self.layout.settings(row, self.parent(row)))
        if not cluster.is_running():
            # The role the store gives it, whatever the node was when it stopped (a
            # switchover cut short: see standbys.py).
            cluster.set_signal(None if row.is_primary else "standby")
            cluster.start()
        elif changed:
            cluster.reload()
            if cluster.pending_restart():
                cluster.restart()

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.run(stop_all, self.clusters_dir)

    def purge_template(self) -> None:
        shutil.rmtree(self.template_dir, ignore_errors=True)
