"""Fleet history: a ClickHouse store (embedded chDB by default) and, beside it, the collector.

``Store.open()`` gives the history's store; see :mod:`pgcloud_nb.collect.store` for
where it lives and :mod:`pgcloud_nb.collect.queries` for the fleet questions.

``start(client)`` / ``status()`` / ``stop()`` run the collector as a background
process (:mod:`pgcloud_nb.collect.command`, as ``pgcloud-nb collect``), and
:class:`Collector` runs rounds in this process; how it shares the key's request
budget is in :mod:`pgcloud_nb.collect.collector`.
"""

from __future__ import annotations

from .collector import Collector, RoundReport
from .command import start, status, stop
from .store import Store, StoreBusyError

__all__ = ["Collector", "RoundReport", "Store", "StoreBusyError", "start", "status", "stop"]
