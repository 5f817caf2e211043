"""The sandbox's persistent state: one SQLite file in the sandbox home.

Every change is one transaction, so a sandbox killed with ``kill -9`` comes back
with each service in the state it last reached. SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed change survives a killed process, which is
the failure the sandbox has to survive (not a power cut).

A service's password is kept only while it is being created
(``pending_password``), so that a create interrupted by a crash can finish with
the password its response already promised, and only sealed: the store seals it
on the way in and opens it on the way out with the home's
:class:`~pgcloud_nb.sandbox.secretbox.SecretBox`, whose key is not in this file.
No password ever reaches ``state.db`` or its WAL in plaintext. A home made
before that is sealed and rewritten once on open (:meth:`Store._seal_legacy`),
so no freed page or old WAL frame keeps a clear one. The file is mode 0600
inside a 0700 home.

``config_undo`` holds the previous ``pgConfig`` and ``pgBouncerConfig`` while a
configuration write is in flight (:mod:`pgcloud_nb.sandbox.services.configs`).

Columns added after the first release (:data:`_ADDED`) are added to an existing
``state.db`` with ``ALTER TABLE … ADD COLUMN`` when it lacks them, so an old
home keeps working.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pgcloud_nb.sandbox.secretbox import SecretBox, UnreadableSecret, home_box

__all__ = ["ServiceRow", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    region TEXT NOT NULL,
    postgres_version TEXT NOT NULL,
    size TEXT NOT NULL,
    ha_type TEXT NOT NULL,
    tags TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    is_primary INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    username TEXT NOT NULL,
    port INTEGER NOT NULL UNIQUE,
    pg_config TEXT NOT NULL,
    pg_bouncer_config TEXT NOT NULL,
    pending_password TEXT,
    counters TEXT NOT NULL DEFAULT '{}',
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    service_id TEXT NOT NULL,
    taken_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_service ON samples (service_id, taken_at);
"""

# Added later: (column, SQL declaration). An existing state.db gains them on open.
_ADDED = (
    ("node", "TEXT NOT NULL DEFAULT ''"),
    ("standbys", "TEXT NOT NULL DEFAULT '[]'"),
    ("parent_id", "TEXT"),
    ("restore_target", "TEXT"),
    ("earliest_restore", "TEXT"),
    ("last_backup_at", "REAL"),
    ("config_undo", "TEXT"),
    # NULL (an older home's services, or a create without a list): the default rules.
    ("ip_access_list", "TEXT"),
)

_JSON_FIELDS = (
    "tags",
    "pg_config",
    "pg_bouncer_config",
    "counters",
    "standbys",
    "config_undo",
    "ip_access_list",
)
# PRAGMA user_version from which pending passwords are sealed and the file was rewritten.
_SEALED_VERSION = 1

log = logging.getLogger("pgcloud_nb.sandbox")


@dataclass
class ServiceRow:
    id: str
    name: str
    provider: str
    region: str
    postgres_version: str
    size: str
    ha_type: str
    state: str
    created_at: str
    is_primary: bool
    hostname: str
    username: str
    port: int
    tags: list[dict[str, str]] = field(default_factory=list)
    pg_config: dict[str, str] = field(default_factory=dict)
    pg_bouncer_config: dict[str, str] = field(default_factory=dict)
    pending_password: str | None = field(default=None, repr=False)
    counters: dict[str, Any] = field(default_factory=dict, repr=False)
    seq: int = 0  # creation order, so lists are stable
    # The folder (below the clusters folder) of the node now serving the service's
    # port; "" is the service's own folder, named after its id. A switchover moves it.
    node: str = ""
    # HA standbys actually built: [{"dir": folder name, "port": int}], in the order made.
    standbys: list[dict[str, Any]] = field(default_factory=list)
    # A read replica's primary, or the source of a restore still in progress.
    parent_id: str | None = None
    restore_target: str | None = None  # RFC 3339, while a restore is in progress
    earliest_restore: str | None = None  # RFC 3339: the oldest retained backup's end
    last_backup_at: float | None = None  # epoch seconds of the newest base backup
    # While a config write is in flight: {"pg_config": …, "pg_bouncer_config": …} before it.
    config_undo: dict[str, Any] | None = field(default=None, repr=False)
    # The IP access rules ({id, source, description, portRange}); None: the default ones
    # (services/access_lists.py); [] admits no TCP client at all.
    ip_access_list: list[dict[str, str]] | None = None


_COLUMNS = tuple(f.name for f in fields(ServiceRow))


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


class Store:
    """The services and samples of one home. ``box`` seals pending passwords; by default
    the box of the home holding ``path`` (its key is in that home's credentials.json)."""

    def __init__(self, path: Path, box: SecretBox | None = None) -> None:
        self.path = path
        self._box = box if box is not None else home_box(path.parent)
        fresh = not path.exists()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if fresh:
            os.chmod(path, 0o600)
        self._lock = threading.RLock()  # one connection shared by the loop and worker threads
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._seal_legacy()

    def _migrate(self) -> None:
        """Add the columns an older state.db lacks (each in its own statement)."""
        with self._lock:
            have = {r[1] for r in self._db.execute("PRAGMA table_info(services)")}
            for name, decl in _ADDED:
                if name not in have:
                    self._db.execute(f"ALTER TABLE services ADD COLUMN {name} {decl}")

    def _seal_legacy(self) -> None:
        """Once per file: seal the clear pending passwords an older sandbox kept, then
        rewrite the database (VACUUM) and empty its WAL, so that neither a freed page
        nor an old WAL frame still holds one, even one cleared long ago."""
        with self._lock:
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= _SEALED_VERSION:
                return
            with self.transaction() as db:
                found = db.execute(
                    "SELECT id, pending_password FROM services WHERE pending_password IS NOT NULL"
                ).fetchall()
                for service_id, value in found:
                    if not SecretBox.is_sealed(value):
                        db.execute(
                            "UPDATE services SET pending_password = ? WHERE id = ?",
                            (self._box.seal(value, service_id), service_id),
                        )
                db.execute(f"PRAGMA user_version = {_SEALED_VERSION}")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seal(self, service_id: str, password: str | None) -> str | None:
        return None if password is None else self._box.seal(password, service_id)

    def _open(self, service_id: str, sealed: str | None) -> str | None:
        if sealed is None:
            return None
        try:
            return self._box.open(sealed, service_id)
        except UnreadableSecret:
            # Another home's key (a state.db copied without its credentials.json): the
            # create cannot finish with the promised password and fails visibly.
            log.error("the pending password of service %s does not open", service_id)
            return None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- services ---------------------------------------------------------

    def _row(self, values: tuple[Any, ...]) -> ServiceRow:
        kw = dict(zip(_COLUMNS, values, strict=True))
        for name in _JSON_FIELDS:
            kw[name] = None if kw[name] is None else json.loads(kw[name])
        kw["is_primary"] = bool(kw["is_primary"])
        kw["pending_password"] = self._open(kw["id"], kw["pending_password"])
        return ServiceRow(**kw)

    def insert(self, row: ServiceRow) -> ServiceRow:
        with self.transaction() as db:
            row.seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM services").fetchone()[0]
            data = asdict(row)
            for name in _JSON_FIELDS:
                data[name] = _json(data[name])
            data["pending_password"] = self._seal(row.id, row.pending_password)
            marks = ", ".join("?" for _ in _COLUMNS)
            db.execute(
                f"INSERT INTO services ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [data[c] for c in _COLUMNS],
            )
        return row

    def get(self, service_id: str) -> ServiceRow | None:
        with self._lock:
            cur = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM services WHERE id = ?", (service_id,)
            )
            found = cur.fetchone()
        return self._row(found) if found else None

    def rows(self) -> list[ServiceRow]:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM services ORDER BY seq")
            return [self._row(r) for r in cur.fetchall()]

    def update(self, service_id: str, **changes: Any) -> ServiceRow | None:
        """Set the given columns of one service; returns the row as it now is."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown service columns: {sorted(unknown)}")
        if changes:
            if "pending_password" in changes:
                changes["pending_password"] = self._seal(service_id, changes["pending_password"])
            values = [_json(v) if k in _JSON_FIELDS else v for k, v in changes.items()]
            sets = ", ".join(f"{k} = ?" for k in changes)
            with self.transaction() as db:
                db.execute(f"UPDATE services SET {sets} WHERE id = ?", [*values, service_id])
        return self.get(service_id)

    def delete(self, service_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM services WHERE id = ?", (service_id,))
            db.execute("DELETE FROM samples WHERE service_id = ?", (service_id,))

    def used_ports(self) -> set[int]:
        """Ports of services and of their HA standbys."""
        with self._lock:
            found = self._db.execute("SELECT port, standbys FROM services").fetchall()
        ports = {r[0] for r in found}
        for _, standbys in found:
            ports |= {int(s["port"]) for s in json.loads(standbys)}
        return ports

    def children(self, service_id: str) -> list[ServiceRow]:
        """Services that depend on this one: its read replicas and restores in progress."""
        return [r for r in self.rows() if r.parent_id == service_id]

    # -- telemetry samples ------------------------------------------------

    def add_sample(
        self, service_id: str, taken_at: float, data: dict[str, Any], counters: dict[str, Any]
    ) -> None:
        """Store one sample and the counter state it advanced, atomically."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO samples (service_id, taken_at, data) VALUES (?, ?, ?)",
                (service_id, taken_at, json.dumps(data)),
            )
            db.execute(
                "UPDATE services SET counters = ? WHERE id = ?", (json.dumps(counters), service_id)
            )

    def samples(self, service_id: str, since: float, until: float) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT data FROM samples WHERE service_id = ? AND taken_at >= ? AND taken_at < ?"
                " ORDER BY taken_at",
                (service_id, since, until),
            )
            return [json.loads(r[0]) for r in cur.fetchall()]

    def latest_sample(self, service_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute(
                "SELECT data FROM samples WHERE service_id = ? ORDER BY taken_at DESC LIMIT 1",
                (service_id,),
            )
            found = cur.fetchone()
        return json.loads(found[0]) if found else None

    def prune_samples(self, older_than: float) -> int:
        with self.transaction() as db:
            return db.execute("DELETE FROM samples WHERE taken_at < ?", (older_than,)).rowcount
