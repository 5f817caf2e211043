"""Read-only observability calls: metrics JSON, slow query patterns, logs, Prometheus text.

A group of :class:`~pgcloud_nb.client.Client`'s operations (see
:mod:`pgcloud_nb.clientbase`), kept apart so the client module stays about the
service lifecycle. Dates accept a ``datetime`` (naive = local
time), an RFC 3339 string, or a ``timedelta`` meaning "that long ago".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .clientbase import ClientBase
from .models import (
    PostgresBackup,
    PostgresLogEntry,
    PostgresMetrics,
    PostgresSlowQueryPattern,
    PostgresSlowQueryPatternDetail,
)
from .requester import When, iso_time, parse_model, parse_models

__all__ = ["Observability"]


class Observability(ClientBase):
    """Metrics (JSON), slow query patterns and their executions, logs, Prometheus text."""

    def metrics(
        self,
        service_id: str,
        *,
        from_date: When,
        to_date: When,
        bucket_size_seconds: int | None = None,
    ) -> PostgresMetrics:
        """GET …/metrics (JSON). At most 250 buckets per call."""
        params = {
            "from_date": iso_time(from_date),
            "to_date": iso_time(to_date),
            "bucket_size_seconds": bucket_size_seconds,
        }
        data = self._req.call("GET", self._path(service_id, "metrics"), params=params)
        return parse_model(PostgresMetrics, data)

    def slow_query_patterns(
        self,
        service_id: str,
        *,
        from_date: When,
        to_date: When,
        db_name: str | None = None,
        db_user: str | None = None,
        db_operation: str | None = None,
        app: str | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[PostgresSlowQueryPattern]:
        params = {
            "from_date": iso_time(from_date),
            "to_date": iso_time(to_date),
            "db_name": db_name,
            "db_user": db_user,
            "db_operation": db_operation,
            "app": app,
            "sort_by": sort_by,
            "sort_order": sort_order,
            "limit": limit,
            "offset": offset,
        }
        data = self._req.call("GET", self._path(service_id, "slowQueryPatterns"), params=params)
        return parse_models(PostgresSlowQueryPattern, data)

    def slow_query_pattern(
        self,
        service_id: str,
        query_id: str | int,
        *,
        db_name: str,
        db_user: str,
        db_operation: str,
        app: str | None = None,
        timestamp: When | None = None,
    ) -> PostgresSlowQueryPatternDetail:
        """One pattern's aggregate and recent executions; ``query_id`` may be negative."""
        params = {
            "db_name": db_name,
            "db_user": db_user,
            "db_operation": db_operation,
            "app": app,
            "timestamp": iso_time(timestamp) if timestamp is not None else None,
        }
        path = self._path(service_id, "slowQueryPatterns", str(query_id))
        return parse_model(
            PostgresSlowQueryPatternDetail, self._req.call("GET", path, params=params)
        )

    def iter_logs(
        self,
        service_id: str,
        *,
        from_date: When,
        to_date: When,
        severity: str | None = None,
        body_contains: str | None = None,
        sort_order: str | None = None,
        page_size: int = 1000,
        max_entries: int | None = None,
    ) -> Iterator[PostgresLogEntry]:
        """Log entries, page after page (``offset`` advances until a short page)."""
        if not 1 <= page_size <= 2000:
            raise ValueError("page_size must be 1..2000 (the API's limit range)")
        params: dict[str, Any] = {
            "from_date": iso_time(from_date),
            "to_date": iso_time(to_date),
            "severity": severity,
            "body_contains": body_contains,
            "sort_order": sort_order,
            "limit": page_size,
        }
        offset = emitted = 0
        while True:
            data = self._req.call(
                "GET", self._path(service_id, "logs"), params={**params, "offset": offset}
            )
            page = parse_models(PostgresLogEntry, data)
            for entry in page:
                if max_entries is not None and emitted >= max_entries:
                    return
                emitted += 1
                yield entry
            if len(page) < page_size:
                return
            offset += len(page)

    def logs(self, service_id: str, **kwargs: Any) -> list[PostgresLogEntry]:
        """Every log entry in the window (see :meth:`iter_logs` for the arguments)."""
        return list(self.iter_logs(service_id, **kwargs))

    def iter_backups(
        self, service_id: str, *, limit: int = 100, max_backups: int | None = None
    ) -> Iterator[PostgresBackup]:
        """The service's base backups, newest first, page after page (``nextCursor``).

        ``limit`` is the page size the API takes (1–100). The backups list is newer
        than the spec file (docs/api-behaviour.md, "Backups list").
        """
        if not 1 <= limit <= 100:
            raise ValueError("limit must be 1..100 (the API's page size range)")
        params: dict[str, Any] = {"limit": limit}
        emitted, seen = 0, set[str]()
        while True:
            page = self._req.call(
                "GET", self._path(service_id, "backups"), params=params, envelope=True
            )
            for item in parse_models(PostgresBackup, page.get("result")):
                if max_backups is not None and emitted >= max_backups:
                    return
                emitted += 1
                yield item
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                return  # the last page (or a server that would go round in circles)
            seen.add(cursor)
            params["cursor"] = cursor

    def list_backups(
        self, service_id: str, *, limit: int = 100, max_backups: int | None = None
    ) -> list[PostgresBackup]:
        """Every base backup of the service, newest first (see :meth:`iter_backups`)."""
        return list(self.iter_backups(service_id, limit=limit, max_backups=max_backups))

    def prometheus(self, service_id: str | None = None) -> str:
        """Prometheus text exposition for one service, or the whole org when ``None``."""
        path = self._path(service_id, "prometheus") if service_id else self._path() + "/prometheus"
        return str(self._req.call("GET", path))
