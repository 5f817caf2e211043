"""Where the servers of a service live, and the sandbox-managed settings each one runs with.

A service is one or more real servers ("nodes"), each a folder below the
clusters folder:

- the node serving the service's port: the folder named after the service id
  at first; ``ServiceRow.node`` names another after a switchover;
- its HA standbys (``<id>.s1``, ``<id>.s2``; ``ServiceRow.standbys``), internal
  servers that are not services of the API (docs/api-behaviour.md §6.2).
  They sit beside the service folders so ``cluster.stop_all`` (``sandbox stop``)
  finds them as it finds every ``*/pgdata``;
- its WAL archive and base backups, ``.backups/<id>`` (:mod:`services.backups`).

A read replica is a service of its own whose node follows its primary's node.
Every node archives into its service's archive: that only happens while it is
a primary (after a promotion or switchover it goes on where the old one left).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgcloud_nb.sandbox.errors import EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres.binaries import for_node
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.replication import follow_settings
from pgcloud_nb.sandbox.services.backups import Archive
from pgcloud_nb.sandbox.services.hotstandby import NODE_DEFAULTS
from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["HA_STANDBYS", "Layout", "announce", "major"]

log = logging.getLogger("pgcloud_nb.sandbox")
ANNOUNCER = "pgcloud-nb-sandbox"  # the application_name of announce()'s session

# docs/api-behaviour.md §6.1: async is 1 standby, sync is 2 acknowledged by at least 1.
HA_STANDBYS = {"none": 0, "async": 1, "sync": 2}


# Every node streams to its HA standbys, to the service's read replicas (one WAL sender
# each; a service may have as many as the org's quota) and to pg_basebackup. A standby
# needs at least its primary's max_wal_senders & co. (hotstandby.py), so every node
# pins them: what pgConfig does not set is the same everywhere. WAL is kept
# for standbys that lag (a checkpoint, the shutdown one of a switchover included, would
# otherwise recycle a segment a WAL sender still has to send); the archive covers more.
REPLICATION = {
    **{name: str(value) for name, value in NODE_DEFAULTS.items()},
    "wal_keep_size": "256MB",
}


def label(folder: str) -> str:
    """A node's application_name among its service's nodes: n0 (the first), s1, s2…"""
    _, dot, suffix = folder.rpartition(".")
    return suffix if dot else "n0"


def replica_label(row: ServiceRow) -> str:
    return f"replica_{row.id[:8]}"


def major(row: ServiceRow) -> int | None:
    """The PostgreSQL major the service asked for (``postgresVersion``)."""
    return int(row.postgres_version) if row.postgres_version.isdigit() else None


def announce(cluster: Cluster, row: ServiceRow) -> None:
    """Say in the service's own log (what the logs API reads) which PostgreSQL runs it,
    and why when that is not the ``postgresVersion`` asked for (docs/api-behaviour.md,
    "The PostgreSQL major"). Called once a new or resumed node is up. The server
    writes the line itself (RAISE LOG), so it is a jsonlog line like any other; it
    names no path of this machine."""
    try:
        note = for_node(cluster.pgdata, major(row)).summary()
        text = sql.SQL("DO $note$ BEGIN RAISE LOG '%', {}; END $note$")
        with cluster.connect(application_name=ANNOUNCER) as conn:
            conn.execute(text.format(sql.Literal(f"pgcloud-nb sandbox: {note}")))
    except (PgBinariesNotFound, EngineError, psycopg.Error) as exc:
        log.warning("service %s: could not log which PostgreSQL runs it: %s", row.id, exc)
        return
    log.info("service %s: %s", row.id, note)


class Layout:
    def __init__(self, clusters_dir: Path) -> None:
        self.clusters_dir = clusters_dir
        self.archives_dir = clusters_dir / ".backups"

    def primary(self, row: ServiceRow) -> Cluster:
        """The node serving the service's port (the only node of a plain service).

        A new one is made with the PostgreSQL major the service asked for (or the
        nearest installed); once made, its data folder decides (``binaries.for_node``).
        """
        return Cluster(self.clusters_dir / (row.node or row.id), row.port, major=major(row))

    def standby(self, entry: dict[str, Any]) -> Cluster:
        return Cluster(self.clusters_dir / str(entry["dir"]), int(entry["port"]))

    def standbys(self, row: ServiceRow) -> list[Cluster]:
        return [self.standby(e) for e in row.standbys]

    def archive(self, service_id: str) -> Archive:
        return Archive(self.archives_dir / service_id)

    def folders(self, row: ServiceRow) -> set[str]:
        return {row.node or row.id, *(str(e["dir"]) for e in row.standbys)}

    def free_folder(self, row: ServiceRow) -> str:
        """A folder name for a new standby of ``row``."""
        taken = self.folders(row)
        for name in (row.id, *(f"{row.id}.s{i}" for i in range(1, 10))):
            if name not in taken:
                return name
        raise RuntimeError(f"service {row.id} has no free standby folder")

    def strays(self, row: ServiceRow) -> list[Cluster]:
        """Node folders of ``row`` no longer (or not yet) recorded: a standby cut short."""
        found = [self.clusters_dir / row.id, *self.clusters_dir.glob(f"{row.id}.s*")]
        keep = self.folders(row)
        return [Cluster(p, 0) for p in found if p.is_dir() and p.name not in keep]

    def remove_all(self, row: ServiceRow) -> None:
        """Every node (standbys first: they follow the primary), then the backups."""
        for node in [*self.standbys(row), *self.strays(row), self.primary(row)]:
            node.remove()
        self.archive(row.id).remove()

    # -- settings per role (the extra lines of each node's base settings file)

    def primary_settings(self, row: ServiceRow) -> dict[str, str]:
        settings = {**REPLICATION, **self.archive(row.id).settings()}
        names = [label(str(e["dir"])) for e in row.standbys]
        if row.ha_type == "sync" and names:
            # docs/api-behaviour.md §6.1: sync is 2 standbys; a commit waits for at least 1.
            settings["synchronous_commit"] = "on"
            settings["synchronous_standby_names"] = f"ANY 1 ({', '.join(names)})"
        else:
            settings["synchronous_standby_names"] = ""
        return settings

    def standby_settings(self, row: ServiceRow, folder: str) -> dict[str, str]:
        archive = self.archive(row.id)
        follow = follow_settings(self.primary(row), label(folder), archive.wal_dir)
        return {**REPLICATION, **archive.settings(), **follow}

    def replica_settings(self, row: ServiceRow, parent: ServiceRow) -> dict[str, str]:
        follow = follow_settings(
            self.primary(parent), replica_label(row), self.archive(parent.id).wal_dir
        )
        return {**REPLICATION, **self.archive(row.id).settings(), **follow}

    def settings(self, row: ServiceRow, parent: ServiceRow | None) -> dict[str, str]:
        """The settings of ``row``'s serving node: a primary's, or a replica's."""
        if not row.is_primary and parent is not None:
            return self.replica_settings(row, parent)
        return self.primary_settings(row)
