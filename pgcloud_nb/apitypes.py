"""The value types of the API's fields, for the models of :mod:`pgcloud_nb.models`.

- :class:`OpenEnum` and its enums: values the API adds later are accepted;
- ``UtcDatetime``: RFC 3339 date-times, a naive time read as UTC and a leap
  second (``23:59:60``, which ``datetime`` cannot hold) as its minute's last µs;
- ``Int`` and ``Float``: integers and numbers as JSON Schema has them, of any
  size, ``5.0`` and ``1e20`` being integers (pydantic refuses whole floats past
  int64, and integers past float's range);
- ``List``, ``ConfigSection``, ``BouncerSection``: a ``null`` reads as empty.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator

__all__ = [
    "BouncerSection",
    "ConfigSection",
    "Float",
    "HaType",
    "Int",
    "List",
    "OpenEnum",
    "Provider",
    "ServiceState",
    "Size",
    "UtcDatetime",
]


class OpenEnum(StrEnum):
    """A str enum that accepts unknown values (the API adds states and sizes).

    Known values are members (``ServiceState.RUNNING``); an unknown one becomes a
    pseudo-member that still compares equal to its string, so ``svc.state ==
    "hibernating"`` works and nothing breaks when the API grows.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = re.sub(r"\W", "_", value).upper()
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """False for a value this version of pgcloud_nb has not heard of."""
        # By value: an unknown "RUNNING" gets the name of the known "running".
        return self._value_ in type(self)._value2member_map_


class ServiceState(OpenEnum):
    """``pgStateProperty`` (docs/api-behaviour.md §5.1)."""

    CREATING = "creating"
    RESTARTING = "restarting"
    RUNNING = "running"
    REPLAYING_WAL = "replaying_wal"
    RESTORING_BACKUP = "restoring_backup"
    FINALIZING_RESTORE = "finalizing_restore"
    UNAVAILABLE = "unavailable"
    STOPPED = "stopped"
    DELETING = "deleting"


class HaType(OpenEnum):
    """``pgHaType``: none, async (1 standby) or sync (2 standbys)."""

    NONE = "none"
    ASYNC = "async"
    SYNC = "sync"


class Provider(OpenEnum):
    AWS = "aws"
    GCP = "gcp"


def _as_utc(value: datetime) -> datetime:
    # The API sends both "…Z" and "…+00:00"; a naive time would be UTC by its contract.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_LEAP_SECOND = re.compile(r"([Tt ][0-9]{2}:[0-9]{2}:)60(?:[.,][0-9]+)?")


def _no_leap_second(value: Any) -> Any:
    # RFC 3339 allows second 60; datetime does not: read it as the minute's last µs.
    return _LEAP_SECOND.sub(r"\g<1>59.999999", value) if isinstance(value, str) else value


UtcDatetime = Annotated[datetime, BeforeValidator(_no_leap_second), AfterValidator(_as_utc)]


def _whole(value: Any) -> Any:
    # JSON Schema counts 1e20 as an integer; pydantic refuses whole floats past int64.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_float(value: Any) -> Any:
    # An integer past float's range (legal JSON for a number) is the nearest float, ±inf.
    if isinstance(value, int) and abs(value) >= 2**1024:
        return math.inf if value > 0 else -math.inf
    return value


# Integers and numbers as JSON Schema has them: any size, 5.0 an integer.
Int = Annotated[int, BeforeValidator(_whole)]
Float = Annotated[float, BeforeValidator(_as_float)]
# Sizes are a 143-value enum in the spec that changes often; kept a plain str
# (pgcloud_nb.sizes knows the table) so a new size never fails validation.
Size = str


def _none_as_empty(value: Any) -> Any:
    return {} if value is None else value


def _none_as_list(value: Any) -> Any:
    # A server may write an empty list as null (Go's nil slices do).
    return [] if value is None else value


ConfigSection = Annotated[dict[str, Any], BeforeValidator(_none_as_empty)]
BouncerSection = Annotated[dict[str, str], BeforeValidator(_none_as_empty)]
T = TypeVar("T")
List = Annotated[list[T], BeforeValidator(_none_as_list)]
