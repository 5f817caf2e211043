"""What the servers record of their statements: pg_stat_statements snapshots and the JSON log.

pg_stat_statements has no time dimension, so every running service's counters
are read every ``sample_interval`` (:meth:`QueryStats.forever`) and at each
request (:meth:`QueryStats.statements`) and kept as snapshots
(:class:`~pgcloud_nb.sandbox.insights.statements.Snapshots`); a window's figures
are what accrued between the snapshots at its ends. Each service's log folder
gets one :class:`~pgcloud_nb.sandbox.insights.logs.LogIndex`. How these become
the API's slow query patterns and logs is :mod:`pgcloud_nb.sandbox.api.insights`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import Conflict
from pgcloud_nb.sandbox.insights.logs import LogIndex, LogQuery
from pgcloud_nb.sandbox.insights.statements import (
    Counters,
    Key,
    Snapshots,
    Statement,
    read_statements,
)
from pgcloud_nb.sandbox.services.context import SERVER_DOWN, Context, require_running
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["APP_NAME", "QueryStats"]

log = logging.getLogger("pgcloud_nb.sandbox")

APP_NAME = "pgcloud-nb-insights"  # how the sandbox's own reads show up in the patterns


class QueryStats:
    """The statement snapshots and log indexes of every service."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.snapshots = Snapshots()
        self._logs: dict[str, LogIndex] = {}

    def _log(self, row: ServiceRow) -> LogIndex:
        """The index of the log of the node that is the service's primary now.

        A switchover moves the primary to another node, with its own log: from
        then on the statements run there, and the logs and executions are its.
        """
        log_dir = self.ctx.cluster(row).log_dir
        found = self._logs.get(row.id)
        if found is None or found.log_dir != log_dir:
            found = self._logs[row.id] = LogIndex(log_dir)
        return found

    def _read(self, row: ServiceRow, text: bool) -> tuple[list[Statement], float | None]:
        """Read pg_stat_statements now (and keep it as a snapshot), and the log threshold."""
        cluster = self.ctx.cluster(row)
        with cluster.connect(application_name=APP_NAME) as conn:
            statements = read_statements(conn, text=text)
            found = conn.execute(
                "SELECT setting::float8 FROM pg_settings"
                " WHERE name = 'auto_explain.log_min_duration'"
            ).fetchone()
        # Per node: after a switchover these are another server's counters.
        self.snapshots.record(row.id, time.time(), statements, node=cluster.root.name)
        threshold = float(found[0]) if found else -1.0
        return statements, threshold if threshold >= 0 else None

    async def statements(self, row: ServiceRow) -> tuple[list[Statement], float | None]:
        """pg_stat_statements of a running service now, with texts, and auto_explain's
        threshold in ms (None when it logs nothing)."""
        require_running(row, "reading query statistics")
        try:
            return await self.ctx.run(self._read, row, True)
        except psycopg.OperationalError:
            raise Conflict(SERVER_DOWN) from None

    def window(self, row: ServiceRow, key: Key, start: float, end: float) -> Counters:
        """A statement's counters accrued in [start, end), to the snapshots' resolution."""
        return self.snapshots.window(row.id, key, start, end)

    async def log_entries(self, row: ServiceRow, query: LogQuery) -> list[dict[str, Any]]:
        return await self.ctx.run(self._log(row).entries, query)

    async def log_records(
        self, row: ServiceRow, start: float, end: float, query_id: int | None = None
    ) -> list[tuple[float, dict[str, Any]]]:
        """(time, record) of the log lines written during statements (of ``query_id``)."""
        return await self.ctx.run(self._log(row).records, start, end, query_id)

    async def forever(self) -> None:
        """Read every running service's counters every sample_interval, forever."""
        ctx = self.ctx
        while True:
            rows = ctx.store.rows()
            for row in rows:
                if row.state == "running":
                    try:
                        await ctx.run(self._read, row, False)
                    except Exception as exc:  # mid-restart, or just deleted
                        log.debug("query statistics of %s not read: %s", row.id, exc)
            ids = {r.id for r in rows}
            self.snapshots.keep_only(ids, time.time())
            for gone in self._logs.keys() - ids:
                del self._logs[gone]
            await asyncio.sleep(ctx.settings.sample_interval)
