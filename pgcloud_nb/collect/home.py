"""The collector's home: its lock (who runs), its state file, and the store of a round.

The lock file holds the pid of the process holding its ``flock``. It is written
after the lock is taken, so a reader may find it empty for an instant: it reads
again, and a pid is believed only when the kernel's lock table agrees
(``/proc/locks``, where there is one). A wrong pid would be fatal: ``stop`` signals
it, and ``kill(-1)`` signals every process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..pidlock import lock_holder
from ..redaction import redact
from .collector import Collector, RoundReport, RoundSkipped
from .store import Store, StoreBusyError

__all__ = ["LOCK", "LOG", "STATE", "holder", "lock", "read_state", "write_state"]

LOCK, STATE, LOG = "collector.lock", "collector.json", "collector.log"


def holder(home: Path, patience: float = 2.0) -> int | None:
    """The pid of the process holding the home's lock, if one does (None if unsure)."""
    deadline = time.monotonic() + patience
    while True:
        if (text := lock_holder(home / LOCK)) is None:
            return None
        if text.isdigit() and int(text) > 1 and _locked_by(int(text), home / LOCK):
            return int(text)
        if time.monotonic() >= deadline:
            return None  # held, but by whom is unknown: better no signal than a wrong one
        time.sleep(0.02)  # between the holder's flock and its write


def _locked_by(pid: int, path: Path) -> bool:
    """Whether the kernel's lock table gives ``path``'s lock to ``pid`` (True if it cannot
    tell: no ``/proc/locks``, or no line for the file's inode)."""
    try:
        table = Path("/proc/locks").read_text()
        inode = str(path.stat().st_ino)
    except OSError:
        return True
    holders = set()
    for line in table.splitlines():
        f = [w for w in line.split() if w != "->"]  # "->": a waiter, not the holder
        if len(f) > 5 and "->" not in line and f[5].rsplit(":", 1)[-1] == inode:
            holders.add(f[4])
    return not holders or str(pid) in holders


def lock(home: Path) -> IO[str] | None:
    """Take the home's lock and write our pid in it; None if another process holds it."""
    f = open(home / LOCK, "a+")  # noqa: SIM115 -- the open file *is* the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    os.ftruncate(f.fileno(), 0)
    os.pwrite(f.fileno(), str(os.getpid()).encode(), 0)  # one write: never a partial pid
    return f


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically and durably (a crash leaves the old or the new)."""
    tmp = home / (STATE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, home / STATE)
    with contextlib.suppress(OSError):  # the rename itself, on filesystems that allow it
        dfd = os.open(home, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_state(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / STATE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Stores:
    """The store for a round: opened and closed around it when embedded (one process's)."""

    def __init__(self, dsn: str, wait: float) -> None:
        """``dsn``: as :func:`~pgcloud_nb.collect.dsn.effective` made it from the settings."""
        self.dsn, self.wait = dsn, wait
        self.embedded = dsn.startswith("chdb:")
        self._held: Store | None = None

    @contextlib.contextmanager
    def round(self) -> Iterator[Store]:
        store = self._held or Store.open(self.dsn, wait=self.wait)
        try:
            yield store
        finally:
            if self.embedded:
                store.close()
            else:
                self._held = store

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


class RoundStore:
    """The collector's view of the store: the one of the round in course."""

    def __init__(self) -> None:
        self.current: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if self.current is None:
            raise RuntimeError("no store is open outside a round")
        return getattr(self.current, name)


class RoundCollector(Collector):
    """A collector whose store is opened for each round (see :class:`Stores`)."""

    def __init__(self, stores: Stores, view: RoundStore, client: Any, **kw: Any) -> None:
        super().__init__(client, view, **kw)  # calls reach the round's Store
        self._stores, self._view = stores, view

    def run_round(self, now: float | None = None) -> RoundReport:
        try:
            opened = self._stores.round()
            store = opened.__enter__()
        except StoreBusyError as e:
            # the embedded folder stayed busy (a notebook reading it): this slot is skipped
            raise RoundSkipped(f"the store is busy: {redact(str(e))[:300]}") from None
        self._view.current = store
        try:
            return super().run_round(now)
        finally:
            self._view.current = None
            opened.__exit__(None, None, None)
