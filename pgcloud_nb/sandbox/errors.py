"""Every exception the sandbox raises, in one module beneath all others.

The tree, with where each is raised and how the API answers it (the answers
are one table, :data:`pgcloud_nb.sandbox.api.problems.PROBLEMS`)::

    Exception
    ├── HTTPProblem            api/: an answer other than 200, ready to send (status, message)
    ├── Conflict               services/: the service's state forbids it now   → 409 CONFLICT
    ├── RequestRefused         services/: cannot be done as asked              → 400, its text
    └── RuntimeError
        ├── SandboxError       launcher: the server could not be started or reached
        ├── PgBinariesNotFound postgres/binaries: no initdb/pg_ctl/postgres folder
        └── EngineError        postgres/: a server could not be made, started or configured
            ├── ConfigValueError (also a ValueError): PostgreSQL refused a setting → 400
            └── UnsafePathError  postgres/: a private folder exists as a link, another's, or open

Anything not in the table (an ``EngineError`` included) is the API's 500.
The client has its own ``pgcloud_nb.errors.APIError``; no class here shares a
name with one of the client's, so a traceback never leaves one in doubt.
"""

from __future__ import annotations

__all__ = [
    "ConfigValueError",
    "Conflict",
    "EngineError",
    "HTTPProblem",
    "PgBinariesNotFound",
    "RequestRefused",
    "SandboxError",
    "UnsafePathError",
]


class HTTPProblem(Exception):
    """An error answer of the API: its status, the envelope's ``error`` text, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Conflict(Exception):
    """The service's state does not allow the operation now (answered as 409)."""


class RequestRefused(Exception):
    """The request cannot be honoured as asked: answered as 400 with this message, in
    the API's wording (``BAD_REQUEST: …``, or the live text for a replica too early)."""


class SandboxError(RuntimeError):
    """The sandbox server could not be started or reached."""


class PgBinariesNotFound(RuntimeError):
    """No folder with initdb, pg_ctl and postgres was found (or the one named is wrong)."""


class EngineError(RuntimeError):
    """A PostgreSQL server could not be made, started, stopped or configured."""


class ServerExited(EngineError):
    """The server exited while it started (its log says why): not a start that was slow."""


class ConfigValueError(EngineError, ValueError):
    """A setting was refused by PostgreSQL; the previous settings stay in force."""

    def __init__(self, param: str, pg_message: str) -> None:
        super().__init__(f"{param}: {pg_message}")
        self.param = param
        self.pg_message = pg_message

    @property
    def message(self) -> str:
        """Alias of ``pg_message`` (the API's error answer reads this name)."""
        return self.pg_message


class UnsafePathError(EngineError):
    """A folder the sandbox keeps private (0700, its user's) exists as something else: a
    symlink, a file, another user's folder or one open to others. It is refused, never used."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(path, reason)  # both in args: the error pickles
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"refusing {self.path}: it {self.reason}. A private folder of the sandbox must be a "
            "real folder, mode 0700, owned by its user; remove it (or ask its owner to) and retry"
        )
