"""What every part of the lifecycle shares, handed to each part by the :class:`Lifecycle`.

The parts (provisioning, standbys, backups, restores, sampling, query
statistics) all need the same few things: the store, where each node lives
(:class:`~pgcloud_nb.sandbox.services.nodes.Layout`), one lock per service, a
way to run a blocking server command in a worker thread, and a way to start a
background task that the shutdown cancels. :class:`Context` holds exactly
these; the parts depend on it and on each other, never on the lifecycle that
assembles them, so the imports run one way.

It also holds the state rules every operation checks (:data:`SETTLED`,
:data:`CONFIGURABLE`, :func:`require_running`, :meth:`Context.current`): a
transition in flight is a 409.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread

from pgcloud_nb.sandbox.errors import Conflict
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.services.nodes import Layout
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.sandbox.store import ServiceRow, Store

__all__ = ["CONFIGURABLE", "SERVER_DOWN", "SETTLED", "Context", "require_running"]

log = logging.getLogger("pgcloud_nb.sandbox")
T = TypeVar("T")

# States from which an operation may start; others are a transition in flight.
SETTLED = {"running", "unavailable", "stopped"}
# States a configuration write is taken in: a stopped service keeps it for its next
# start (docs/api-behaviour.md, "Config writes while the server is down").
CONFIGURABLE = ("running", "stopped")
# The 409 of an operation only a server taking connections can do.
SERVER_DOWN = "The server is not accepting connections right now."


def require_running(row: ServiceRow, action: str, states: tuple[str, ...] = ("running",)) -> None:
    if row.state not in states:
        raise Conflict(f"Service is {row.state}; {action} needs it to be {' or '.join(states)}.")


class Context:
    """Settings, store, layout, per-service locks, worker threads and background tasks."""

    def __init__(self, settings: Settings, store: Store, clusters_dir: Path) -> None:
        self.settings = settings
        self.store = store
        self.clusters_dir = usable_clusters_dir(clusters_dir)
        self.template_dir = self.clusters_dir / ".template"
        self.layout = Layout(self.clusters_dir)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the servers of a service

    def cluster(self, row: ServiceRow) -> Cluster:
        """The server answering on the service's port (its primary node)."""
        return self.layout.primary(row)

    def parent(self, row: ServiceRow) -> ServiceRow | None:
        return self.store.get(row.parent_id) if row.parent_id else None

    def free_port(self) -> int:
        used = self.store.used_ports()
        for _ in range(50):
            port = free_port()
            if port not in used:
                return port
        raise RuntimeError("no free TCP port for a new service")

    def current(
        self, row: ServiceRow, action: str, states: tuple[str, ...] = ("running",)
    ) -> ServiceRow:
        """The service as it is now, called under its lock: a switchover or a standby
        change that held the lock may have moved the primary or removed nodes."""
        found = self.store.get(row.id)
        if found is None:
            raise Conflict("Service is gone.")
        require_running(found, action, states)
        return found

    # -- locks, threads, tasks

    def lock(self, service_id: str) -> asyncio.Lock:
        """One lock per service, so a restart, a config write and a delete never interleave."""
        return self._locks.setdefault(service_id, asyncio.Lock())

    def forget(self, service_id: str) -> None:
        """Drop a deleted service's lock."""
        self._locks.pop(service_id, None)

    @staticmethod
    async def run(fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking server command in a worker thread."""
        return await to_thread.run_sync(fn, *args)

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        """Run ``coro`` in the background; a failure is logged, a shutdown cancels it."""

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

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
