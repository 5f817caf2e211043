"""Store: the fleet history in ClickHouse, through clickhouse-connect (docs/architecture.md).

One code path for every backend. ``Store.open()`` picks, in order:

1. the ``dsn`` argument;
2. ``$PGCLOUD_HISTORY_DSN``;
3. ``$CLICKHOUSE_HOST`` with ``CLICKHOUSE_PORT``, ``CLICKHOUSE_USER``,
   ``CLICKHOUSE_PASSWORD``, ``CLICKHOUSE_SECURE`` (the names ClickHouse's own tools
   use for a server; they do not clash with the Cloud API's ``CLICKHOUSE_API_URL``
   and ``CLICKHOUSE_CLOUD_API_*``) and ``PGCLOUD_HISTORY_DATABASE``;
4. embedded chDB in :func:`default_path`, beside the sandbox's home.

A DSN is ``chdb:///abs/path`` (embedded), ``https://user:pass@host:8443/db`` (a
server, or ClickHouse Cloud) or ``http://…:8123/db`` (no TLS); the scheme decides
TLS, and ``clickhouse://`` is refused (:mod:`pgcloud_nb.collect.dsn`). The
password never reaches a repr or an error: it is registered with
:mod:`pgcloud_nb.redaction`, and the Store shows its DSN redacted. The database
name must be a plain identifier (it is spliced into every statement).

chDB is one engine per process, on one folder: a second folder cannot be opened in
the same process while a client on the first is open, and a second *process* cannot
open a folder another holds (the engine locks it). ``open(wait=…)`` retries for that
long while another process holds the folder (embedded: 5 s unless told, then
:class:`StoreBusyError`), so a collector that holds the store
only for a round and a notebook that reads between rounds can take turns. Closing
every Store releases the engine; the next open (even of another folder) works.

Idempotent rounds: see :mod:`pgcloud_nb.collect.schema` (``rounds`` is written after
the samples; the samples insert carries the round id as its deduplication token).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from ..errors import PgCloudError
from . import dsn as dsn_settings
from . import rollups, schema, sqlrates
from .convert import long_frame, samples_table
from .services import service_rows

__all__ = ["DSN_ENV", "RAW_TTL", "ROLLUP_TTL", "Store", "StoreBusyError", "default_path"]

DSN_ENV = "PGCLOUD_HISTORY_DSN"
DATABASE_ENV = "PGCLOUD_HISTORY_DATABASE"
DEFAULT_DATABASE = "pgcloud_nb"
RAW_TTL = timedelta(days=35)
ROLLUP_TTL = timedelta(days=800)
# Settings of every samples insert: the round id deduplicates the insert, and the
# materialized views' inserts too, so a repeated round adds nothing to the rollups.
_INSERT = {"deduplicate_blocks_in_dependent_materialized_views": 1}
EMBEDDED_WAIT = 5.0  # longer than a collector's round holds the folder, usually


class StoreBusyError(PgCloudError):
    """Another process (usually the collector, for a round) holds the embedded folder."""


def default_path() -> Path:
    """The embedded store's folder: beside the sandbox's default home.

    The sandbox keeps root's home under /var/lib (PostgreSQL's OS user cannot reach
    /root), and so does this; other users get ``$XDG_DATA_HOME/pgcloud-nb/history``.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/pgcloud-nb/history")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "pgcloud-nb" / "history"


def _resolve(dsn: str | None) -> tuple[dict[str, Any], str | None, str]:
    """(get_client keyword arguments, database named by the settings, redacted DSN)."""
    return dsn_settings.resolve(dsn, default_path())


def _connect(kwargs: dict[str, Any], database: str, wait: float) -> Client:
    deadline = time.monotonic() + wait
    while True:
        try:
            return clickhouse_connect.get_client(database=database, **kwargs)
        except ClickHouseError as exc:
            # Another process holds the embedded folder (the engine's lock): worth a
            # wait. Another folder open in this process is not: it lasts until closed.
            msg = str(exc)
            busy = (
                kwargs.get("interface") == "chdb"
                and "EmbeddedServer" in msg
                and "already initialized" not in msg
            )
            if not busy:
                raise
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"another process holds the history folder {kwargs.get('path')} (the "
                    f"collector holds it for a few seconds each round); waited {wait:g} s: "
                    "retry, pass a longer wait=, or open the store per query "
                    "(with Store.open(...) as store: ...)"
                ) from exc
            time.sleep(0.2)


class Store:
    """The fleet's metric history in one ClickHouse database."""

    def __init__(self, client: Client, database: str, *, description: str) -> None:
        self.client = client
        self.database = dsn_settings.check_database(database, "Store()")  # spliced into SQL
        self.description = description
        self._types: dict[str, str] | None = None

    @classmethod
    def open(
        cls,
        dsn: str | None = None,
        *,
        database: str | None = None,
        raw_ttl: timedelta = RAW_TTL,
        rollup_ttl: timedelta = ROLLUP_TTL,
        wait: float | None = None,
    ) -> Store:
        """Connect (see the module's docstring for where) and create the schema if missing.

        ``raw_ttl``/``rollup_ttl`` apply when the tables are created; change them
        later with :meth:`set_ttl`. ``wait``: seconds to retry while another process
        holds an embedded folder (default 5 s; a server: none), then
        :class:`StoreBusyError`. The database name must be a plain identifier.
        """
        kwargs, named, description = _resolve(dsn)
        source = "database=" if database else "the DSN" if named else DATABASE_ENV
        db = database or named or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE
        dsn_settings.check_database(db, source)
        if wait is None:
            wait = EMBEDDED_WAIT if kwargs.get("interface") == "chdb" else 0.0
        boot = _connect(kwargs, "default", wait)
        try:
            every = (*schema.TABLES, *schema.VIEWS, *rollups.TABLES, *rollups.VIEWS)
            if not rollups.ready(boot, db, every):
                ttls = {"raw_ttl": raw_ttl, "rollup_ttl": rollup_ttl}
                for statement in [*schema.ddl(db, **ttls), *rollups.ddl(db, **ttls)]:
                    boot.command(statement)
                rollups.migrate(boot, db)  # a store made before the derived tables gets them
            client = _connect(kwargs, db, wait)
        finally:
            boot.close()
        return cls(client, db, description=description)

    def _t(self, table: str) -> str:
        return f"`{self.database}`.{table}"

    # -- writing ---------------------------------------------------------------------------

    def has_round(self, round_id: str) -> bool:
        found = self.client.query(
            f"SELECT count() FROM {self._t('rounds')} WHERE round_id = {{r:String}}",
            parameters={"r": round_id},
        )
        return bool(found.result_rows[0][0])

    def insert_scrape(self, frame: pd.DataFrame, *, round_id: str, backfilled: bool = False) -> int:
        """Insert a long frame as one round; returns the samples added (0: a known round).

        Idempotent per ``round_id``: a listed round is skipped, and the samples of a
        round cut short before its ``rounds`` row are dropped by deduplication. The
        hours the round touches are recomputed in the hourly tables of :mod:`.rollups`.
        """
        if self.has_round(round_id):
            return 0
        self._insert_samples(frame, round_id=round_id, backfilled=backfilled)
        self._record_types(frame.attrs.get("types") or {}, frame.attrs.get("help") or {})
        if len(frame):  # after the types (counters are picked by them), before the round's
            # row: a round cut short refreshes its hours when it runs again
            stamps = pd.DatetimeIndex(frame["timestamp"])
            rollups.refresh(self.client, self.database, stamps.min(), stamps.max())
        self._close_round(frame, round_id=round_id, backfilled=backfilled)
        return len(frame)

    def _insert_samples(self, frame: pd.DataFrame, *, round_id: str, backfilled: bool) -> None:
        if not len(frame):
            return
        # The token is hashed so that it says nothing about the round's name.
        token = hashlib.sha256(round_id.encode()).hexdigest()
        self.client.insert_arrow(
            self._t("samples"),
            samples_table(frame, backfilled=backfilled),
            settings={**_INSERT, "insert_deduplication_token": token},
        )

    def _close_round(self, frame: pd.DataFrame, *, round_id: str, backfilled: bool) -> None:
        """The round's row, written last: from here on the round counts as stored."""
        n = len(frame)
        at = frame["timestamp"].max() if n else pd.Timestamp.now(tz="UTC")
        row = [
            round_id,
            pd.Timestamp(at).to_pydatetime(),
            n,
            int(frame["service_id"].nunique()) if n else 0,
            backfilled,
            frame.attrs.get("org_id") or "",
        ]
        names = ["round_id", "at", "samples", "services", "backfilled", "org_id"]
        self.client.insert(self._t("rounds"), [row], column_names=names)

    def _record_types(self, types: Mapping[str, str], helps: Mapping[str, str]) -> None:
        known = self.metric_types()
        new = {m: t for m, t in types.items() if known.get(m) != t}
        if not new:
            return
        now = datetime.now().astimezone()
        rows = [[m, t, helps.get(m, ""), now] for m, t in new.items()]
        self.client.insert(
            self._t("metric_types"), rows, column_names=["metric", "type", "help", "updated_at"]
        )
        self._types = None

    def record_services(self, services: Iterable[Mapping[str, Any]], *, at: datetime) -> None:
        """Record the service list as taken at ``at``: new services, renames and other
        changes get a row; a known service missing from the list is marked deleted."""
        current = self.services()
        rows = service_rows(services, current, at=at)
        if rows:
            self.client.insert(self._t("services"), rows[1], column_names=rows[0])

    def import_parquet(self, path: str | os.PathLike[str]) -> int:
        """Import a file :meth:`pgcloud_nb.history.History.save` wrote, as one round
        named by the file's content hash (importing it again adds nothing)."""
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
        frame = pd.read_parquet(path, engine="pyarrow")
        frame.attrs.setdefault("types", {})
        return self.insert_scrape(frame, round_id=f"parquet:{digest}")

    def set_ttl(self, *, raw: timedelta = RAW_TTL, rollup: timedelta = ROLLUP_TTL) -> None:
        """How long raw samples and hourly rollups are kept (applied at the next merge)."""
        ttls = {"raw_ttl": raw, "rollup_ttl": rollup}
        for statement in [
            *schema.ttl_statements(self.database, **ttls),
            *rollups.ttl_statements(self.database, **ttls),
        ]:
            self.client.command(statement)

    def optimize(self) -> None:
        """Merge every part now (``OPTIMIZE … FINAL``): applies TTLs and replacements."""
        for table in (*schema.TABLES, *rollups.TABLES):
            self.client.command(f"OPTIMIZE TABLE {self._t(table)} FINAL")

    def drop(self) -> None:
        """Delete every table of this history (the database itself stays)."""
        views, tables = (*schema.VIEWS, *rollups.VIEWS), (*schema.TABLES, *rollups.TABLES)
        for statement in schema.drop_statements(self.database, views, tables):
            self.client.command(statement)

    # -- reading ---------------------------------------------------------------------------

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run SQL in this store's database; ``{name:Type}`` placeholders take ``parameters``.

        Timestamps come back tz-aware, in UTC (clickhouse-connect gives them naive, in
        UTC; Arrow would give ``DateTime`` columns as bare integers).
        """
        frame = self.client.query_df(sql, parameters=dict(parameters or {}))
        if not len(frame.columns):  # no rows give no columns: take them from Arrow's schema
            frame = self.client.query_arrow(sql, parameters=dict(parameters or {})).to_pandas()
        for col in frame.columns:
            if pd.api.types.is_datetime64_dtype(frame[col]):  # naive: tz-aware ones pass
                frame[col] = frame[col].dt.tz_localize("UTC")
        return frame

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pa.Table:
        return self.client.query_arrow(sql, parameters=dict(parameters or {}))

    def rounds(self) -> int:
        return int(
            self.client.query(f"SELECT uniqExact(round_id) FROM {self._t('rounds')}").result_rows[
                0
            ][0]
        )

    def last_sample_at(self) -> dict[str, pd.Timestamp]:
        """The newest sample time of each service (from a rollup: no scan of samples)."""
        result = self.query(
            f"SELECT service_id, max(last_ts) AS last FROM {self._t('service_last')} "
            "GROUP BY service_id"
        )
        return {
            str(s): pd.Timestamp(t).tz_convert("UTC")
            for s, t in zip(result["service_id"], result["last"], strict=True)
        }

    def metric_types(self) -> dict[str, str]:
        if self._types is None:
            rows = self.client.query(
                f"SELECT metric, argMax(type, updated_at) FROM {self._t('metric_types')} "
                "GROUP BY metric"
            ).result_rows
            self._types = {str(m): str(t) for m, t in rows}
        return dict(self._types)

    def services(self, *, deleted: bool = False) -> pd.DataFrame:
        """The newest row of each service (``deleted=True`` keeps deleted ones too)."""
        where = "" if deleted else "WHERE NOT deleted"
        return self.query(
            f"SELECT service_id, name, size, region, state, postgres_version, tags, "
            f"first_seen, deleted, version AS seen_at "
            f"FROM {self._t('services')} FINAL {where} ORDER BY service_id"
        )

    def frame(
        self,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        *,
        services: Iterable[str] | None = None,
        metrics: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The long frame of samples with ``start <= ts < end`` (either end open)."""
        where, params = sqlrates.where(start, end, services, metrics)
        cols = ", ".join(["ts", "metric", "service_id", "service_name", *schema.LABELS])
        table = self.query_arrow(
            f"SELECT {cols}, extra, value FROM {self._t('samples')} {where} "
            "ORDER BY ts, metric, service_id",
            params,
        )
        return long_frame(table, self.metric_types(), self._org_id())

    def _org_id(self) -> str | None:
        rows = self.client.query(
            f"SELECT argMax(org_id, at) FROM {self._t('rounds')} WHERE org_id != ''"
        ).result_rows
        return str(rows[0][0]) or None if rows else None

    def rates(self, start: Any = None, end: Any = None, **filters: Any) -> pd.DataFrame:
        """Counters as per-second rates, computed in SQL (:mod:`~.sqlrates`)."""
        sql, params = sqlrates.rates_sql(self.database, start, end, **filters)
        return self.query(sql, params)

    def derived(self, start: Any = None, end: Any = None, **filters: Any) -> pd.DataFrame:
        """CPU %, commits/rollbacks per second, cache hit ratio, computed in SQL."""
        sql, params = sqlrates.derived_sql(self.database, start, end, **filters)
        return self.query(sql, params)

    def disk_usage(self) -> pd.DataFrame:
        """Rows and bytes (on disk, uncompressed) of each table's active parts."""
        return self.query(
            "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes_on_disk, "
            "sum(data_uncompressed_bytes) AS bytes_uncompressed FROM system.parts "
            "WHERE database = {db:String} AND active GROUP BY table ORDER BY table",
            {"db": self.database},
        )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.description} database={self.database}>"
