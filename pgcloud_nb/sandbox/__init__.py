"""The sandbox: a local Managed Postgres API whose services are real PostgreSQL servers.

>>> from pgcloud_nb.sandbox import ensure_running
>>> info = ensure_running()          # attach to this home's sandbox, or start it
>>> info.env()                       # CLICKHOUSE_API_URL, ..._API_KEY, ..._API_SECRET, ..._ORG_ID

Names are imported on first use, so ``import pgcloud_nb.sandbox`` pulls in
neither starlette nor uvicorn; only the server process needs them.

The rooms, top to bottom; each imports only rooms below it (no cycles, counting
function-level and ``TYPE_CHECKING`` imports)::

    launcher, __main__   start, find and stop the server process; the process itself
    api/                 the Starlette app      -> services, telemetry, insights
    services/            the lifecycle          -> postgres, telemetry, insights
    postgres/            one real server;  telemetry/ metrics;  insights/ statement records
    errors, settings, home, store              the bottom: they import none of the above
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgcloud_nb.sandbox.errors import SandboxError
    from pgcloud_nb.sandbox.launcher import Sandbox, SandboxInfo, ensure_running
    from pgcloud_nb.sandbox.settings import Settings

__all__ = ["Sandbox", "SandboxError", "SandboxInfo", "Settings", "ensure_running"]

_WHERE = {
    "Sandbox": "launcher",
    "SandboxError": "errors",
    "SandboxInfo": "launcher",
    "ensure_running": "launcher",
    "Settings": "settings",
}


def __getattr__(name: str) -> Any:
    if module := _WHERE.get(name):
        value = getattr(importlib.import_module(f"pgcloud_nb.sandbox.{module}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pgcloud_nb.sandbox' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
