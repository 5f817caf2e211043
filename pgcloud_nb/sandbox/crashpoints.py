"""A test-only hook that kills the sandbox server at a named step, to prove a write crash-safe.

``PGCLOUD_SANDBOX_CRASH_AT=<step>`` makes the sandbox server kill itself with
SIGKILL (no cleanup, no flush, no ``finally``: exactly a ``kill -9``) the first
time it reaches ``<step>``; ``<step>#<n>`` waits for the n-th time. Unset, which
it always is outside tests, :func:`reached` does nothing.

Steps are named where they are reached; the configuration write's are
:data:`pgcloud_nb.sandbox.services.configs.STEPS`, and
``tests/sandbox/test_crash_consistency.py`` kills the server at every one of
them. The variable reaches the server like any other: the launcher starts it
with the caller's environment.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

__all__ = ["ENV", "reached"]

ENV = "PGCLOUD_SANDBOX_CRASH_AT"

_seen: Counter[str] = Counter()
_guard = threading.Lock()  # steps are reached from the event loop and worker threads


def reached(step: str) -> None:
    """Die here, at once, if ``$PGCLOUD_SANDBOX_CRASH_AT`` names ``step``."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("#")
    if name != step:
        return
    with _guard:
        _seen[step] += 1
        count = _seen[step]
    if count >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
