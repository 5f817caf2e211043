"""The HTTP answer to each sandbox error: one table, read by the app's exception handlers.

Routes and services raise the errors of :mod:`pgcloud_nb.sandbox.errors` and
never translate them; :data:`PROBLEMS` says what each one answers (status and
the envelope's ``error`` text, in the API's wording), so a status or a message
is changed here and nowhere else. The lookup follows the class's MRO, as
Starlette's own handler lookup does: ``ConfigValueError`` is an ``EngineError``
but has an answer of its own.

An error with no entry (``EngineError``, ``PgBinariesNotFound``, ``SandboxError``,
or a bug) is :data:`INTERNAL`, a 500 answered by the server-error handler, which
also logs the traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pgcloud_nb.sandbox.errors import ConfigValueError, Conflict, HTTPProblem, RequestRefused

__all__ = ["INTERNAL", "PROBLEMS", "problem"]

INTERNAL = HTTPProblem(500, "INTERNAL_ERROR: the sandbox failed; see server.log")


def _config_refused(exc: ConfigValueError) -> HTTPProblem:
    # PostgreSQL's own words, under the field the value came in (create, restore,
    # replica and config writes alike).
    return HTTPProblem(400, f"BAD_REQUEST: request body.pgConfig.{exc.param}: {exc.message}")


PROBLEMS: dict[type[Exception], Callable[[Any], HTTPProblem]] = {
    HTTPProblem: lambda exc: exc,  # already an answer (auth, lookups, request parsing)
    Conflict: lambda exc: HTTPProblem(409, f"CONFLICT: {exc}"),
    RequestRefused: lambda exc: HTTPProblem(400, str(exc)),
    ConfigValueError: _config_refused,
}


def problem(exc: Exception) -> HTTPProblem:
    """The answer to ``exc``: its class's entry (or its nearest base's), else INTERNAL."""
    for cls in type(exc).__mro__:
        if (answer := PROBLEMS.get(cls)) is not None:
            return answer(exc)
    return INTERNAL
