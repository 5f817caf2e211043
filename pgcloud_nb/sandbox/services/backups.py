"""Backups of a sandbox service: an archive of its WAL and base backups, as PostgreSQL makes them.

The real service keeps a daily full backup plus WAL archived every 60 s or
16 MB, for 7 days (docs/api-behaviour.md §7.1; it uses WAL-G). Here each service has a
folder below the clusters folder (``.backups/<id>``, reachable by the
PostgreSQL user, like the data folders)::

    wal/                    WAL files copied by archive_command (archive_mode=on,
                            archive_timeout=60s: "every 60 s or 16 MB")
    base/<stamp>/           a base backup made with pg_basebackup (plain, WAL fetched)
    base/<stamp>.json       its catalog entry, written last: a backup without one
                            is unfinished and ignored

A base backup is restorable from the moment it ended: ``ended_at`` is the
earliest restore time it gives. Pruning keeps the backups ended within the
retention window (always at least the newest) and drops WAL older than the
oldest kept backup needs, with ``pg_archivecleanup``.

:class:`Archive` is synchronous (worker threads); :mod:`pgcloud_nb.sandbox.services.schedule`
takes backups at creation and on the ``backup_interval`` schedule.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.postgres import binaries
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import chown_tree, run_pg, write_owned
from pgcloud_nb.sandbox.postgres.replication import base_backup

__all__ = ["ARCHIVE_TIMEOUT", "Archive", "BaseBackup"]

# docs/api-behaviour.md §7.1: WAL is archived every 60 s or 16 MB (a segment), whichever first.
ARCHIVE_TIMEOUT = "60s"


@dataclass(frozen=True)
class BaseBackup:
    path: Path  # the copied data folder
    ended_at: float  # epoch seconds when pg_basebackup had finished: restorable from then
    start_wal: str  # the oldest WAL file a restore from it needs

    @property
    def ended(self) -> datetime:
        return datetime.fromtimestamp(self.ended_at, UTC)


class Archive:
    """One service's WAL archive and base backups (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        # Real paths: the server's user may not cross a symlinked 0700 home (engine.Cluster).
        self.root = Path(root).resolve()

    @property
    def wal_dir(self) -> Path:
        return self.root / "wal"

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    def ensure(self) -> None:
        """Make the folders, owned by the PostgreSQL user (its archive_command writes here)."""
        for d in (self.root, self.wal_dir, self.base_dir):
            d.mkdir(mode=0o700, exist_ok=True, parents=True)
        chown_tree(self.root)

    def settings(self) -> dict[str, str]:
        """The server settings that archive its WAL here.

        The copy goes through a temporary name, so a restore never reads half a
        file; a file already archived with the same contents (a retry after a
        crash, or a new primary after a switchover) counts as done.
        """
        dest = f"{self.wal_dir}/%f"
        command = (
            f"if [ -f '{dest}' ]; then cmp -s '%p' '{dest}'; "
            f"else cp '%p' '{dest}.tmp' && mv '{dest}.tmp' '{dest}'; fi"
        )
        return {
            "archive_mode": "on",
            "archive_command": command,
            "archive_timeout": ARCHIVE_TIMEOUT,
        }

    # -- base backups

    def take(self, source: Cluster) -> BaseBackup:
        """A new base backup of the running ``source``."""
        self.ensure()
        name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        work = self.base_dir / f".{name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        try:
            base_backup(source, work)
            label = (work / "backup_label").read_text()
            found = re.search(r"START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", label)
            if not found:
                raise EngineError(f"backup of {source.root.name} has no start WAL in its label")
            work.rename(self.base_dir / name)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        backup = BaseBackup(self.base_dir / name, time.time(), found.group(1))
        entry = {"ended_at": backup.ended_at, "start_wal": backup.start_wal}
        write_owned(self.base_dir / f"{name}.json", json.dumps(entry))
        return backup

    def backups(self) -> list[BaseBackup]:
        """The finished base backups, oldest first."""
        found = []
        for entry in self.base_dir.glob("*.json"):
            folder = entry.with_suffix("")
            try:
                data = json.loads(entry.read_text())
            except (OSError, ValueError):
                continue
            if folder.is_dir():
                found.append(BaseBackup(folder, float(data["ended_at"]), str(data["start_wal"])))
        return sorted(found, key=lambda b: b.ended_at)

    def latest_before(self, when: float) -> BaseBackup | None:
        """The newest backup that ended at or before ``when``: where a restore starts."""
        usable = [b for b in self.backups() if b.ended_at <= when]
        return usable[-1] if usable else None

    def earliest(self) -> datetime | None:
        """The earliest restore time: the end of the oldest retained base backup."""
        found = self.backups()
        return found[0].ended if found else None

    def prune(self, retention: float, now: float | None = None) -> None:
        """Drop backups that ended before the retention window (keeping the newest),
        then the WAL no kept backup needs."""
        found = self.backups()
        if not found:
            return
        cutoff = (now if now is not None else time.time()) - retention
        for old in found[:-1]:
            if old.ended_at < cutoff:
                old.path.with_suffix(".json").unlink(missing_ok=True)
                shutil.rmtree(old.path, ignore_errors=True)
        oldest = self.backups()[0]
        run_pg(
            [binaries.find_bindir() / "pg_archivecleanup", self.wal_dir, oldest.start_wal],
            what="pg_archivecleanup",
        )

    # -- what a restore needs

    def flush(self, source: Cluster, timeout: float = 30) -> None:
        """Make the archive hold everything ``source`` committed so far.

        A point-in-time restore stops at the first commit after its target, and
        PostgreSQL refuses to finish one whose target it never passed; so commit
        a transaction now (after any target, which is never in the future), end
        the WAL file (pg_switch_wal) and wait until the archiver has copied it.
        """
        with source.connect() as conn:
            conn.execute("SELECT txid_current()")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        wanted = self.wal_dir / str(row[0])
        deadline = time.monotonic() + timeout
        while not wanted.exists():
            if time.monotonic() > deadline:
                raise EngineError(f"WAL file {wanted.name} was not archived within {timeout:g}s")
            time.sleep(0.05)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
