"""The embedded API contract, and request validation taken from it.

The official OpenAPI file ships inside the package (``pgcloud_nb/openapi/``), so
the sandbox, the forms and the tests all validate against the same text the
real API publishes, instead of a hand-copied set of rules that could drift.
(:mod:`pgcloud_nb.contract` loads the files, and tells the client and the
frames what each operation answers.)

``validate_body`` checks a request body against one schema and returns every
problem as a :class:`FieldError` naming the field, in the API's own wording
(``BAD_REQUEST: request body.tags[0].key: '…'``, docs/api-behaviour.md §1.4).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from pgcloud_nb.contract import SPEC_FILE, enum_values, load
from pgcloud_nb.livecontract import overlaid
from pgcloud_nb.specrules import SchemaError, SchemaValidator, unsafe_text, whole_string_validator

__all__ = [
    "UNKNOWN",
    "FieldError",
    "enum_values",
    "load",
    "pg_config_keys",
    "prepare",
    "prepare_in_background",
    "resolved",
    "schema",
    "validate_body",
]

_URI = "urn:pgcloud-nb:managed-postgres-openapi"


# An unknown property, as the live API words it: "request body property can't be
# validated: <name>" (docs/api-behaviour.md, "The wording of 400 errors").
UNKNOWN = "can't be validated"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``field`` is a dotted path such as ``tags[0].key``."""

    field: str
    message: str

    def __str__(self) -> str:
        if self.message == UNKNOWN:  # the live API's own wording for these
            return f"request body property {UNKNOWN}: {self.field}"
        where = f"request body.{self.field}" if self.field else "request body"
        return f"BAD_REQUEST: {where}: {self.message}"


def spec_path(name: str = SPEC_FILE) -> str:
    """Filesystem path of an embedded spec file (for schemathesis and tools)."""
    return str(resources.files("pgcloud_nb") / "openapi" / name)


def schema(name: str) -> dict[str, Any]:
    """One component schema, with ``$ref``s left for the validator to resolve."""
    found: dict[str, Any] = load()["components"]["schemas"][name]
    return found


def pg_config_keys() -> dict[str, dict[str, Any]]:
    """The 31 known pgConfig keys and their schemas."""
    props: dict[str, dict[str, Any]] = schema("pgConfig")["properties"]
    return props


@cache
def _live() -> dict[str, Any]:
    """The spec with the live contract's overlay (:mod:`pgcloud_nb.livecontract`): what
    request bodies are validated against."""
    return overlaid(load())


def _live_properties(name: str) -> dict[str, Any]:
    schemas = _live()["components"]["schemas"]
    node = schemas[name]
    while "$ref" in node:
        node = schemas[node["$ref"].rsplit("/", 1)[-1]]
    found: dict[str, Any] = node.get("properties", {})
    return found


@cache
def _registry() -> object:
    """The whole spec document, for resolving "#/components/schemas/X" (a ``referencing.Registry``).

    jsonschema and referencing are imported here and in :func:`_validator`, on first
    use (why: :func:`pgcloud_nb.specrules.whole_string_validator`); :func:`prepare`
    does it ahead of the first request.
    """
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = Resource.from_contents(_live(), default_specification=DRAFT202012)
    return Registry().with_resource(_URI, doc)


@cache
def _validator(name: str) -> SchemaValidator:
    from jsonschema import FormatChecker

    ref = {"$ref": f"{_URI}#/components/schemas/{name}"}
    return whole_string_validator()(ref, registry=_registry(), format_checker=FormatChecker())


def prepare() -> None:
    """Import jsonschema and load the spec for validation now, not at the first body.

    The sandbox runs it in a thread as it starts, so that neither its start nor its
    first request waits for that import.
    """
    whole_string_validator()
    _registry()


@cache
def prepare_in_background() -> threading.Thread:
    """Run :func:`prepare` in a daemon thread, once per process; the thread.

    The sandbox's server starts it as it starts, and the forms that check bodies do as
    they are built, so that a form's first check does not stall the kernel for the import.
    """
    thread = threading.Thread(target=prepare, name="pgcloud-nb-validation", daemon=True)
    thread.start()
    return thread


def resolved(name: str) -> dict[str, Any]:
    """A component schema with its ``$ref`` chain followed to the schema it names."""
    node = schema(name)
    while "$ref" in node:
        node = schema(node["$ref"].rsplit("/", 1)[-1])
    return node


def field_path(parts: Iterable[str | int]) -> str:
    """A field's name as the API's errors write it: ``tags[0].key``, ``pgConfig.work_mem``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(err: SchemaError) -> str:
    value = err.instance
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if err.validator == "enum":
        return f"{shown} is not one of the allowed values"
    if err.validator in ("type", "format", "pattern"):
        return (
            f"{shown} is not a valid {err.validator_value if err.validator == 'type' else 'value'}"
        )
    return err.message if len(err.message) <= 160 else f"{shown} breaks the '{err.validator}' rule"


def validate_body(name: str, body: Any, *, required: tuple[str, ...] = ()) -> list[FieldError]:
    """Every problem with ``body`` against schema ``name``; empty when it is valid.

    The schemas are the spec's with the live contract laid over them
    (:mod:`pgcloud_nb.livecontract`: ``ipAccessList``, tags need a value).
    Beyond the schema: the body must be a JSON object (the spec's object schemas
    lack ``type: object``), and unknown top-level properties are refused, as the
    real API does ("request body property can't be validated: name"); no string, nor
    property name, may hold a control character or a lone surrogate, and ``pattern``
    has its ECMA-262 meaning (:mod:`pgcloud_nb.specrules`).
    ``required`` adds fields the real API needs although the spec marks them
    optional (docs/api-behaviour.md §1.3).
    """
    if not isinstance(body, dict):
        return [FieldError("", f"expected a JSON object, got {type(body).__name__}")]
    # Text no field may hold comes first: it is the reason, whatever else the field breaks.
    errors = [FieldError(field_path(parts), why) for parts, why in unsafe_text(body)]
    known = _live_properties(name)
    for key in body:
        if key not in known:
            errors.append(FieldError(str(key), UNKNOWN))
    for key in required:
        if key not in body:
            errors.append(FieldError(key, "is required"))
    for err in sorted(_validator(name).iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = list(err.absolute_path)
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            path = [*path, missing] if missing else path
            errors.append(FieldError(field_path(path), "is required"))
        elif err.validator == "additionalProperties":
            known_here = err.schema.get("properties", {})
            for extra in (k for k in err.instance if k not in known_here):
                errors.append(FieldError(field_path([*path, extra]), UNKNOWN))
        else:
            errors.append(FieldError(field_path(path), _describe(err)))
    # A field may break several rules; report each field once, first rule first.
    seen: set[str] = set()
    unique = []
    for e in errors:
        if e.field not in seen:
            seen.add(e.field)
            unique.append(e)
    return unique
