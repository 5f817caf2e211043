"""What the backups list shows of a service's base backups (docs/api-behaviour.md, "Backups list").

Each entry is one finished base backup of the service's archive
(:mod:`.backups`), newest first, as the live API orders them (by last-modified
time). The archive stays the source of truth; nothing here is stored:

- ``key`` is WAL-G's name for a base backup, ``base_<its first WAL file>``
  (the real service backs up with WAL-G); two backups starting in the same WAL
  file (nothing written between them) are told apart by their start time;
- ``started`` is when ``pg_basebackup`` began (the backup folder's name),
  ``ended`` when it had finished: restorable from then on, its last-modified time;
- ``size_bytes`` is what the copy takes on disk, its files' sizes summed.

A backup being taken is not listed: it has no catalog entry until it is whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgcloud_nb.sandbox.services.backups import Archive, BaseBackup

__all__ = ["BackupEntry", "catalog"]

_STAMP = "%Y%m%dT%H%M%S%fZ"  # Archive.take names each backup folder by its start time


@dataclass(frozen=True, slots=True)
class BackupEntry:
    key: str
    status: str  # "done": a listed backup is whole (one being taken is not listed)
    started: datetime
    ended: datetime
    size_bytes: int


def _started(backup: BaseBackup) -> datetime:
    try:
        return datetime.strptime(backup.path.name, _STAMP).replace(tzinfo=UTC)
    except ValueError:  # a folder named otherwise: its end is the best we know
        return backup.ended


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # pruned meanwhile
                continue
    return total


def catalog(archive: Archive) -> list[BackupEntry]:
    """The finished base backups in ``archive``, newest (by end) first. Blocks (disk reads)."""
    found = archive.backups()
    shared = {b.start_wal for b in found if sum(o.start_wal == b.start_wal for o in found) > 1}
    out = []
    for backup in reversed(found):
        started = _started(backup)
        key = f"base_{backup.start_wal}"
        if backup.start_wal in shared:
            key += f"_{started.strftime(_STAMP)}"
        out.append(BackupEntry(key, "done", started, backup.ended, _size(backup.path)))
    return out
