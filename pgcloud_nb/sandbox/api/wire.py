"""Answers and requests of the sandbox's HTTP API: envelopes, errors, parsing.

Every answer uses the spec's envelopes (``{status, requestId, result}`` /
``{status, error, requestId}``); every body is validated against the embedded
spec, and an error names the field or parameter, in the API's own wording.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from pgcloud_nb import spec
from pgcloud_nb.sandbox.errors import HTTPProblem

__all__ = [
    "bad_request",
    "envelope",
    "json_body",
    "json_body_config",
    "ok",
    "parse_date",
    "parse_int",
]


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


# -- request parsing ----------------------------------------------------------


async def json_body(request: Request, schema_name: str, **kw: Any) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        body: Any = {}
    else:
        ctype = request.headers.get("content-type", "")
        # The docs say the content-type header is required (API-NOTES §1).
        if "json" not in ctype.lower():
            raise bad_request("BAD_REQUEST: Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("BAD_REQUEST: request body is not valid JSON") from None
    errors = spec.validate_body(schema_name, body, **kw)
    if errors:
        raise bad_request("; ".join(str(e) for e in errors))
    assert isinstance(body, dict)
    return body


def parse_date(request: Request, name: str, *, required: bool = True) -> datetime | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise bad_request(f"BAD_REQUEST: query parameter {name} is required")
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"BAD_REQUEST: {name}: '{value}' is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise bad_request(f"BAD_REQUEST: {name}: '{value}' needs a time zone (e.g. Z)")
    if parsed.microsecond % 1000:
        # docs/api-behaviour.md §10.1: at most millisecond precision.
        raise bad_request(f"BAD_REQUEST: {name}: '{value}' has more than millisecond precision")
    return parsed


def parse_int(
    request: Request, name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise bad_request(f"BAD_REQUEST: {name}: '{value}' is not an integer") from None
    if n < minimum or (maximum is not None and n > maximum):
        top = f" and {maximum}" if maximum is not None else ""
        raise bad_request(f"BAD_REQUEST: {name}: {n} must be between {minimum}{top}")
    return n


async def json_body_config(request: Request) -> dict[str, Any]:
    """Config writes accept an empty section, as the real API and the seed's
    ``"pgBouncerConfig":{}`` do, although the spec says minProperties 1."""
    try:
        return await json_body(request, "postgresInstanceConfig")
    except HTTPProblem as exc:
        # Only a JSON object sent as JSON gets the second, lenient look; a wrong
        # content type, bad JSON or a non-object stays the 400 json_body gave.
        if "json" not in request.headers.get("content-type", "").lower():
            raise
        try:
            raw = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise exc from None
        if not isinstance(raw, dict):
            raise
        errors = [
            e
            for e in spec.validate_body("postgresInstanceConfig", raw)
            if not (e.field in ("pgConfig", "pgBouncerConfig") and raw.get(e.field) == {})
        ]
        if errors:
            raise bad_request("; ".join(str(e) for e in errors)) from exc
        assert isinstance(raw, dict)
        return raw
