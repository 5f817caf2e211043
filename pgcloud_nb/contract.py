"""The embedded OpenAPI documents, and what the client and the frames read from them.

The official OpenAPI files ship inside the package (``pgcloud_nb/openapi/``).
This module loads them (once) and answers, from the text itself:

- :func:`operation`: which operation a request is for, and the media types its
  responses declare; the requester sends that as ``Accept`` and reads the
  answer as JSON or as text accordingly (:class:`Operation`);
- :func:`property_kinds` and :func:`enum_values`: the type of each field of a
  component schema, and an enum's values, by which the frames type their columns.

It needs only PyYAML: the client imports it on every request path, and
jsonschema (which :mod:`pgcloud_nb.spec` validates request bodies with) takes
seconds to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "PROMETHEUS_FILE",
    "SPEC_FILE",
    "Operation",
    "enum_values",
    "load",
    "operation",
    "operations",
    "property_kinds",
]

SPEC_FILE = "managed-postgres-openapi.yml"
PROMETHEUS_FILE = "prometheus-openapi.yml"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def load(name: str = SPEC_FILE) -> dict[str, Any]:
    """One embedded OpenAPI document, parsed once per process."""
    text = (resources.files("pgcloud_nb") / "openapi" / name).read_text("utf-8")
    # libyaml's loader, when PyYAML was built with it, reads the spec in half the time
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc: dict[str, Any] = yaml.load(text, Loader=loader)
    return doc


def _component(name: str) -> dict[str, Any]:
    found: dict[str, Any] = load()["components"]["schemas"][name]
    return found


def enum_values(name: str) -> list[str]:
    """The values of an enum component (``pgSize``, ``pgHaType``, …)."""
    return list(_component(name)["enum"])


def property_kinds(name: str) -> dict[str, str]:
    """Each property of component schema ``name`` and its kind, in the spec's order.

    Kinds: ``integer``, ``number``, ``boolean``, ``date-time``, ``string``,
    ``enum:<component>`` (a string from a named enum such as ``pgStateProperty``),
    ``array``, ``object``, or ``a|b`` for a property typed as a list of types.
    """
    node = _component(name)
    while "$ref" in node:
        node = _component(node["$ref"].rsplit("/", 1)[-1])
    out: dict[str, str] = {}
    for prop, field in node.get("properties", {}).items():
        ref = None
        while "$ref" in field:
            ref = field["$ref"].rsplit("/", 1)[-1]
            field = _component(ref)
        kind = field.get("type", "object" if "properties" in field else "string")
        if isinstance(kind, list):
            out[prop] = "|".join(kind)
        elif "enum" in field and ref is not None:
            out[prop] = f"enum:{ref}"
        elif kind == "string" and field.get("format") == "date-time":
            out[prop] = "date-time"
        else:
            out[prop] = str(kind)
    return out


# --- operations and the content types they declare ----------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the embedded specs and the media types of its responses."""

    method: str  # upper case
    path: str  # the template, e.g. /v1/organizations/{organizationId}/postgres/{postgresId}
    operation_id: str
    success_types: tuple[str, ...]  # of its 2xx responses, parameters dropped
    error_types: tuple[str, ...]  # of its other responses

    @property
    def json(self) -> bool:
        """Whether a success answers JSON (an operation that declares no body counts as JSON)."""
        return not self.success_types or any(_is_json(t) for t in self.success_types)

    @property
    def accept(self) -> str:
        """The ``Accept`` header for this operation: what a success declares, errors after.

        A strict server answers 406 when ``Accept`` leaves out the type it would
        send (docs/api-behaviour.md, "TLS and the CA certificate"): the PEM and
        Prometheus endpoints get theirs, and the JSON error envelope stays
        acceptable at a lower preference. Media-type parameters (``charset``) are
        left out, so that any charset of the type is acceptable.
        """
        wanted = list(dict.fromkeys(self.success_types or ("application/json",)))
        extra = [t for t in dict.fromkeys(self.error_types) if t not in wanted]
        return ", ".join([*wanted, *(f"{t};q=0.5" for t in extra)])


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _media_types(responses: dict[str, Any], success: bool) -> tuple[str, ...]:
    found: list[str] = []
    for code, response in responses.items():
        if str(code).startswith("2") != success:
            continue
        for media in (response or {}).get("content") or {}:
            found.append(media.split(";", 1)[0].strip().lower())
    return tuple(dict.fromkeys(found))


@cache
def operations() -> tuple[Operation, ...]:
    """Every operation of the two embedded specs (Managed Postgres and Prometheus)."""
    out = []
    for name in (SPEC_FILE, PROMETHEUS_FILE):
        for template, item in load(name).get("paths", {}).items():
            for method, op in item.items():
                if method not in _METHODS:
                    continue
                responses = op.get("responses") or {}
                out.append(
                    Operation(
                        method=method.upper(),
                        path=template,
                        operation_id=op.get("operationId", f"{method} {template}"),
                        success_types=_media_types(responses, success=True),
                        error_types=_media_types(responses, success=False),
                    )
                )
    return tuple(out)


@cache
def _matchers() -> tuple[tuple[re.Pattern[str], int, Operation], ...]:
    out = []
    for op in operations():
        parts = op.path.strip("/").split("/")
        regex = "/".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        literal = sum(not p.startswith("{") for p in parts)
        out.append((re.compile(f"/?{regex}/?"), literal, op))
    return tuple(out)


@lru_cache(maxsize=1024)  # bounded: paths carry service ids
def operation(method: str, path: str) -> Operation | None:
    """The operation a request is for: ``path`` is the URL path, ids filled in.

    When two templates match (``…/postgres/prometheus`` is also
    ``…/postgres/{postgresId}``), the one with more literal segments wins, as
    OpenAPI says concrete paths match before templated ones. ``None`` for a
    request the specs do not describe.
    """
    method = method.upper()
    found = [
        (literal, op)
        for regex, literal, op in _matchers()
        if op.method == method and regex.fullmatch(path)
    ]
    return max(found, key=lambda f: f[0])[1] if found else None
