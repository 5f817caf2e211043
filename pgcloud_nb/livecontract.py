"""The live contract beyond the shipped spec file: a small, explicit overlay on its schemas.

The official OpenAPI file inside the package predates parts of the live API
that ClickHouse's own clients already use (docs/api-behaviour.md, "The newer
live contract"). Rather than edit that file, :func:`overlaid` lays these few
changes over a copy of it, and :mod:`pgcloud_nb.spec` validates request bodies
against the result:

- ``ipAccessList`` on create, restore and read-replica bodies: a list of rules
  ``{source, description, portRange}``; on PATCH, ``{add: [rules], remove: [{id}]}``
  ("IP access lists");
- a tag needs its ``value`` ("Errors in the live wording").

Every other schema is the official one, unknown properties still refused.
What the schema cannot say (a source is an address or CIDR range, a port range
runs upwards, no duplicate rules) the sandbox checks itself
(:mod:`pgcloud_nb.sandbox.services.access_lists`).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["DEFAULT_PORT_RANGE", "IP_RULE", "MAX_RULES", "OVERLAY", "overlaid"]

# The sandbox's own bounds (the live limits are not published).
MAX_RULES = 100
MAX_DESCRIPTION = 255

# A rule without portRange covers every port of the service, PostgreSQL's and PgBouncer's
# (docs/api-behaviour.md §12.2).
DEFAULT_PORT_RANGE = "5432..6432"
# clickhousectl 0.5.0 sends "5432" or "5432..6432".
PORT_RANGE_PATTERN = r"^[0-9]{1,5}(\.\.[0-9]{1,5})?$"

IP_RULE: dict[str, Any] = {
    "type": "object",
    "title": "IP access rule",
    "properties": {
        "source": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "portRange": {"type": "string", "pattern": PORT_RANGE_PATTERN},
    },
    "required": ["source"],
    "additionalProperties": False,
}

_RULES: dict[str, Any] = {"type": "array", "items": IP_RULE, "maxItems": MAX_RULES}

_CHANGES: dict[str, Any] = {
    "type": "object",
    "title": "IP access list changes",
    "properties": {
        "add": _RULES,
        "remove": {
            "type": "array",
            "maxItems": MAX_RULES,
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 64}},
                "required": ["id"],
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

# Component name -> what is laid over it: properties are added, "required" replaced.
OVERLAY: dict[str, dict[str, Any]] = {
    "PostgresServicePostRequest": {"properties": {"ipAccessList": _RULES}},
    "PostgresServiceRestoreRequest": {"properties": {"ipAccessList": _RULES}},
    "PostgresServiceReadReplicaRequest": {"properties": {"ipAccessList": _RULES}},
    "PostgresServicePatchRequest": {"properties": {"ipAccessList": _CHANGES}},
    "ResourceTagsV1": {"required": ["key", "value"]},
}


def overlaid(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of the spec document ``doc`` with :data:`OVERLAY` laid over its schemas."""
    out = copy.deepcopy(doc)
    schemas = out["components"]["schemas"]
    for name, layer in OVERLAY.items():
        target = schemas[name]
        target.setdefault("properties", {}).update(copy.deepcopy(layer.get("properties", {})))
        if "required" in layer:
            target["required"] = list(layer["required"])
    return out
