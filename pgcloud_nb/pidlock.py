"""Who holds a lock file: the one test shared by the sandbox's and the collector's daemons.

Each daemon holds an exclusive ``flock`` on a file in its home for as long as it runs
and writes its pid into it. The kernel drops the lock when the process dies, even by
``kill -9``, so a lock that can be taken means nobody is running, whatever the file says.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

__all__ = ["lock_holder"]


def lock_holder(path: Path) -> str | None:
    """The lock file's text while another process holds its lock; None when it is free or absent."""
    try:
        f = open(path)  # noqa: SIM115 -- closed below; the lock is tested on it
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        fcntl.flock(f, fcntl.LOCK_UN)
        return None  # we got the lock: nobody holds it
