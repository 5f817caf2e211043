"""The engine's exceptions, in a module of their own.

:mod:`postgres.cluster` (the :class:`~pgcloud_nb.sandbox.postgres.cluster.Cluster`) and the helpers
below it (:mod:`postgres.osuser`, :mod:`postgres.conffiles`) all raise them, so they sit beneath
every one of those modules and none imports another just for an exception.
:mod:`postgres.cluster` re-exports both, which is where the rest of the sandbox gets them.
"""

from __future__ import annotations

__all__ = ["ConfigValueError", "EngineError"]


class EngineError(RuntimeError):
    """A PostgreSQL server could not be made, started, stopped or configured."""


class ConfigValueError(EngineError, ValueError):
    """A setting was refused by PostgreSQL; the previous settings stay in force."""

    def __init__(self, param: str, pg_message: str) -> None:
        super().__init__(f"{param}: {pg_message}")
        self.param = param
        self.pg_message = pg_message

    @property
    def message(self) -> str:
        """Alias of ``pg_message`` (the app's error envelope reads this name)."""
        return self.pg_message
