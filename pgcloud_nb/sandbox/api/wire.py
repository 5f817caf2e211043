"""Answers and requests of the sandbox's HTTP API: envelopes, errors, parsing.

Every answer uses the spec's envelopes (``{status, requestId, result}`` /
``{status, error, requestId}``); every body is validated against the embedded
spec, and an error names the field or parameter, in the API's own wording.

What a request may carry, beyond the spec (each refused with a 400 naming the
field or parameter, before anything is stored or handed to a server):

- a body of at most :data:`MAX_BODY` bytes (else 413), UTF-8 JSON (RFC 8259:
  no ``NaN``/``Infinity``, no name given twice in one object), nested at most
  :data:`MAX_DEPTH` levels, with integers inside 64 bits and finite numbers;
- no control character or lone surrogate in any string
  (:func:`pgcloud_nb.specrules.text_problem`), in bodies and query parameters alike;
- a query parameter at most once, and never empty when it must be a date, a
  number or one of a list of values;
- pgConfig values PostgreSQL could parse (:mod:`.pgvalues`).
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from pgcloud_nb import spec
from pgcloud_nb.sandbox.api import pgvalues
from pgcloud_nb.sandbox.errors import HTTPProblem
from pgcloud_nb.specrules import text_problem

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "bad_request",
    "envelope",
    "json_body",
    "json_body_config",
    "ok",
    "parse_date",
    "parse_int",
    "prepare_validation",
    "query_value",
    "shown",
]

MAX_BODY = 1 << 20  # bytes: the largest valid body (50 tags, 31 settings) is under 20 KiB
# The deepest valid body is tags[0].key (3 levels); anything far deeper is an attack on
# the parser or the validator, which recurse.
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the real API's integers (a Go service's)
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would take "1_0", "١", " 1"


def prepare_validation() -> threading.Thread:
    """Load the body validator (:func:`pgcloud_nb.spec.prepare`) in a daemon thread.

    The server answers meanwhile: its start does not wait for jsonschema's import, and
    a body that comes first waits only for what is left of it (the import's lock).
    """
    return spec.prepare_in_background()


def envelope(status: int, *, result: Any = None, error: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "requestId": str(uuid.uuid4())}
    if error is not None:
        body["error"] = error
    elif result is not None:
        body["result"] = result
    return body


def ok(result: Any = None) -> JSONResponse:
    return JSONResponse(envelope(200, result=result))


def bad_request(message: str) -> HTTPProblem:
    return HTTPProblem(400, message)


def shown(value: str, limit: int = 60) -> str:
    """``value`` as an error may quote it: control characters escaped, long ones cut short."""
    text = value if text_problem(value) is None else ascii(value)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- request bodies -------------------------------------------------------------------


def _too_large() -> HTTPProblem:
    return HTTPProblem(413, f"PAYLOAD_TOO_LARGE: the request body is over {MAX_BODY} bytes (1 MiB)")


async def read_body(request: Request) -> bytes:
    """The body, refused with a 413 as soon as it passes :data:`MAX_BODY` (announced or not).

    Only handlers read bodies, after the key check: a request without the key gets
    its 401 whatever it carries.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


class _Refused:
    """A JSON value parsed but not taken; the walk reports it under its field's name."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _int(text: str) -> int | _Refused:
    # Checked before int(): Python refuses past 4,300 digits with a ValueError of its own.
    digits = text.lstrip("-")
    value = int(text) if len(digits) <= 19 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        return _Refused(f"an integer of {len(digits)} digits is out of range (64-bit)")
    return value


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"{shown(text, 30)} is out of range")


def _constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        # RFC 8259 leaves a repeated name to the parser; two readers could disagree.
        out[key] = _Refused("is given more than once") if key in out else value
    return out


def _parse(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"BAD_REQUEST: request body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise bad_request(
            f"BAD_REQUEST: request body: nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:
        where = (
            f" ({exc.msg} at character {exc.pos})" if isinstance(exc, json.JSONDecodeError) else ""
        )
        raise bad_request(f"BAD_REQUEST: request body is not valid JSON{where}") from None


def _unreadable(body: Any) -> list[spec.FieldError]:
    """Values :func:`_parse` refused, and nesting past :data:`MAX_DEPTH`, by field."""
    found: list[spec.FieldError] = []
    stack: list[tuple[list[str | int], Any]] = [([], body)]
    while stack:
        parts, node = stack.pop()
        if isinstance(node, _Refused):
            found.append(spec.FieldError(spec.field_path(parts), node.why))
        elif isinstance(node, dict | list) and len(parts) >= MAX_DEPTH:
            found.append(spec.FieldError(spec.field_path(parts), f"nested deeper than {MAX_DEPTH}"))
        elif isinstance(node, dict):
            stack.extend(([*parts, shown(str(k), 200)], v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(([*parts, i], v) for i, v in enumerate(node))
    return sorted(found, key=lambda e: e.field)


def _check_content_type(request: Request) -> None:
    # The content type is required (docs/api-behaviour.md, "Request bodies"); JSON is UTF-8.
    media, *params = request.headers.get("content-type", "").lower().split(";")
    subtype = media.strip().rpartition("/")[2]
    if subtype != "json" and not subtype.endswith("+json"):
        raise bad_request("BAD_REQUEST: Content-Type must be application/json")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise bad_request("BAD_REQUEST: Content-Type: JSON must be sent as UTF-8")


async def json_body(
    request: Request,
    schema_name: str,
    *,
    required: tuple[str, ...] = (),
    empty_sections: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The request's JSON object, checked against ``schema_name`` and the rules above.

    ``required`` adds fields the spec leaves optional; a section named in
    ``empty_sections`` may be ``{}`` although the spec asks for one property.
    """
    raw = await read_body(request)
    body: Any = {}
    if raw.strip():
        _check_content_type(request)
        body = _parse(raw)
        if unreadable := _unreadable(body):
            raise bad_request("; ".join(str(e) for e in unreadable))
    errors = [
        e
        for e in spec.validate_body(schema_name, body, required=required)
        if not (e.field in empty_sections and isinstance(body, dict) and body.get(e.field) == {})
    ]
    if isinstance(body, dict) and isinstance(body.get("pgConfig"), dict):
        named = {e.field for e in errors}
        errors += [e for e in pgvalues.problems(body["pgConfig"]) if e.field not in named]
    if errors:
        raise bad_request("; ".join(str(e) for e in errors))
    assert isinstance(body, dict)
    return body


async def json_body_config(request: Request) -> dict[str, Any]:
    """Config writes accept an empty section, as the real API and the seed's
    ``"pgBouncerConfig":{}`` do, although the spec says minProperties 1."""
    return await json_body(
        request, "postgresInstanceConfig", empty_sections=("pgConfig", "pgBouncerConfig")
    )


# -- query parameters ---------------------------------------------------------------------


def query_value(request: Request, name: str) -> str | None:
    """The one value of query parameter ``name``, or None; a 400 for two, or a control character."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_request(f"BAD_REQUEST: query parameter {name} is given {len(values)} times")
    if why := text_problem(values[0]):
        raise bad_request(f"BAD_REQUEST: {name}: {why}")
    return values[0]


def parse_date(request: Request, name: str, *, required: bool = True) -> datetime | None:
    value = query_value(request, name)
    if value is None or (value == "" and required):
        if required:
            raise bad_request(f"BAD_REQUEST: query parameter {name} is required")
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f"BAD_REQUEST: {name}: '{shown(value)}' is not an RFC 3339 date-time"
        ) from None
    if parsed.tzinfo is None:
        raise bad_request(f"BAD_REQUEST: {name}: '{shown(value)}' needs a time zone (e.g. Z)")
    if parsed.microsecond % 1000:
        # docs/api-behaviour.md §10.1: at most millisecond precision.
        raise bad_request(
            f"BAD_REQUEST: {name}: '{shown(value)}' has more than millisecond precision"
        )
    return parsed


def parse_int(
    request: Request, name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = query_value(request, name)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise bad_request(f"BAD_REQUEST: {name}: '{shown(value)}' is not an integer")
    top = INT64_MAX if maximum is None else maximum
    # Past 19 digits it is out of any range; int() would refuse past 4,300 (a ValueError).
    n = int(value) if len(value.lstrip("+-")) <= 19 else None
    if n is None or not minimum <= n <= top:
        raise bad_request(
            f"BAD_REQUEST: {name}: '{shown(value)}' must be between {minimum} and {top}"
        )
    return n
