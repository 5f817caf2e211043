"""Reading answers: an API result as a model, and a time as the API writes it.

:func:`parse_model` and :func:`parse_models` turn a result into the models of
:mod:`pgcloud_nb.models`; a result that does not fit is an
:class:`~pgcloud_nb.errors.UnexpectedResponseError` that names the fields, never their
values (which may be secrets). :func:`iso_time` writes the times that query
parameters and restore targets take. :mod:`pgcloud_nb.requester` hands these on to
the client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import UnexpectedResponseError

__all__ = ["When", "iso_time", "parse_model", "parse_models"]

M = TypeVar("M", bound=BaseModel)
When = datetime | str | timedelta


def iso_time(when: When) -> str:
    """RFC 3339 in UTC with milliseconds: accepted everywhere (docs/api-behaviour.md §10.1).

    A ``timedelta`` means that long ago; a naive datetime is local time (Python's rule).
    """
    if isinstance(when, str):
        return when
    if isinstance(when, timedelta):
        when = datetime.now(UTC) - when
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_model(cls: type[M], data: Any) -> M:
    """``data`` as model ``cls``; a misfit is an UnexpectedResponseError (no input quoted)."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _unexpected(cls.__name__, exc) from None


def parse_models(cls: type[M], data: Any) -> list[M]:
    try:
        return TypeAdapter(list[cls]).validate_python(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise _unexpected(f"list[{cls.__name__}]", exc) from None


def _unexpected(what: str, exc: ValidationError) -> UnexpectedResponseError:
    # ValidationError's own text quotes input values (which may be secrets): list locations only.
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)[:5]
    )
    return UnexpectedResponseError(f"the answer does not fit {what} ({problems})")
