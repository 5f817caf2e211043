"""pgConfig values checked as PostgreSQL would parse them, before any server sees them.

The running server judges every value of a parameter it knows (a 400 in its own
words). A key of the API that the running major lacks (``transaction_timeout``
before 17) has no server to judge it: it is stored, and would reach a newer
server's configuration as it is. So every value is first checked here, the way
PostgreSQL's own parser reads a setting of that parameter's type (guc.c
``parse_int``, ``parse_real`` and ``convert_to_base_unit``), which is what the
newest major accepts:

- **integer** parameters (the spec's ``string|integer`` keys): a number in C's
  syntax (decimal, ``0x`` hex, leading-zero octal, or a decimal fraction PostgreSQL
  rounds), then, for a parameter with a unit, one of its unit's suffixes
  (``kB``…``TB`` for memory, ``us``…``d`` for time; ``2m`` is no unit), the
  result in the 32-bit range once converted to the parameter's base unit;
- **real** parameters (the spec's ``string|number`` keys): a finite number, no unit;
- **enum** parameters: the spec's own list (checked by the schema).

Each parameter's own range (``max_connections`` ≥ 1, …) is left to the server that
knows it, as are the spec's ``minimum`` values, which disagree with PostgreSQL's
(``max_slot_wal_keep_size`` is -1 by default). Control characters were refused before
(:func:`pgcloud_nb.specrules.text_problem`).

The units and each key's base unit are :mod:`pgcloud_nb.pgparams`'s
(``MEMORY_UNITS``, ``TIME_UNITS``, ``UNIT_OF``), the one copy the client's frames
and widgets read too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pgcloud_nb import spec
from pgcloud_nb.pgparams import MEMORY_UNITS, TIME_UNITS, UNIT_OF

__all__ = ["problems", "value_problem"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_SPACE = " \t\n\r\f\v"  # C's isspace()
# strtol(…, 0): hex, octal (a leading 0), or decimal; strtod: a decimal with a fraction or
# an exponent (its hex floats and inf/nan are no setting's value: refused, as PostgreSQL
# refuses NaN and the infinities fail every range).
_STRTOL = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> tuple[float, str] | None:
    """The number at the start of ``text`` and what follows it, as guc.c reads it."""
    text = text.lstrip(_SPACE)
    found = _STRTOL.match(text)
    if found and text[found.end() : found.end() + 1] not in (".", "e", "E"):
        digits = found.group().lstrip("+-")
        base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
        # Past 24 digits no base fits 64 bits (and int() refuses past 4,300 digits).
        value = int(digits, base) if len(digits) <= 24 else 2**63
        if abs(value) < 2**63:  # else strtol's ERANGE: read again as a double
            return float(-value if found.group().startswith("-") else value), text[found.end() :]
    found = _STRTOD.match(text)
    return None if found is None else (float(found.group()), text[found.end() :])


def value_problem(key: str, kind: str, text: str) -> str | None:
    """Why PostgreSQL would refuse ``text`` for ``key`` (of ``kind`` integer or real), or None."""
    quoted = "'" + (ascii(text)[1:-1] if len(text) <= 60 else ascii(text[:57])[1:-1] + "...") + "'"
    parsed = _number(text)
    if parsed is None:
        return f"{quoted} is not a number"
    number, rest = parsed
    unit = rest.strip(_SPACE)
    if kind == "real":
        if not math.isfinite(number):
            return f"{quoted} is out of range"
        return f"{quoted} takes no unit" if unit else None
    kind_size = UNIT_OF.get(key)
    if unit:
        units = MEMORY_UNITS if kind_size and kind_size[0] == "memory" else TIME_UNITS
        if kind_size is None or unit not in units:
            valid = ", ".join(units) if kind_size else "none"
            return f"{quoted} has no valid unit (valid units: {valid})"
        number = number * units[unit] / kind_size[1]
    if not (math.isfinite(number) and INT_MIN <= round(number) <= INT_MAX):
        return f"{quoted} is out of range for a 32-bit setting"
    return None


def _kind(schema: Mapping[str, Any]) -> str | None:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "enum" in schema:
        return None  # the spec lists the values
    return "integer" if "integer" in types else "real" if "number" in types else None


def problems(pg_config: Mapping[str, Any]) -> list[spec.FieldError]:
    """A :class:`~pgcloud_nb.spec.FieldError` per value of ``pg_config`` no PostgreSQL takes."""
    keys = spec.pg_config_keys()
    found = []
    for key, value in pg_config.items():
        kind = _kind(keys.get(key, {}))
        if kind is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            continue  # an unknown key or a wrong type: the schema's to report
        if why := value_problem(key, kind, str(value)):
            found.append(spec.FieldError(f"pgConfig.{key}", why))
    return found
