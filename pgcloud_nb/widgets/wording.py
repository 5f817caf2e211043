"""Problems in a person's words, and the checks the spec cannot make.

The spec's validator speaks JSON Schema (``'' should be non-empty``, ``'xxx…' is
too long``). The forms show the same problems as a person would say them
("Name is required", "Name is 60 characters; the limit is 50"), each still
routed to the field it names. The spec types most ``pgConfig`` keys as
``string|integer``, so ``max_connections=abc`` passes it; :func:`config_problems`
checks each value against the kind of its parameter (a number, a size, a
duration) as :mod:`pgcloud_nb.pgparams` reads them, before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..pgparams import PG_DEFAULTS, typed_value
from ..regions import accepts, known
from ..spec import UNKNOWN, FieldError, schema

__all__ = [
    "Worded",
    "config_problems",
    "duplicate_tags",
    "humane",
    "in_words",
    "region_problems",
]

LABELS = {
    "name": "Name",
    "provider": "Provider",
    "region": "Region",
    "size": "Size",
    "postgresVersion": "PostgreSQL version",
    "haType": "HA",
    "tags": "Tags",
    "pgConfig": "pgConfig",
    "key": "Tag key",
    "value": "Tag value",
}


class Worded(FieldError):
    """A problem already worded for a person, naming its field itself: shown as it is."""


_PARTS = re.compile(r"[^.\[\]]+")
_KIND_WORDS = {
    "integer": "a number, such as {example}",
    "real": "a number, such as {example}",
    "memory": "a size such as {example} (units kB, MB, GB, TB; a bare number is in the "
    "parameter's own unit)",
    "duration": "a duration such as {example} (units us, ms, s, min, h, d)",
}


def _parts(field: str) -> list[str]:
    return [p for p in _PARTS.findall(field) if not p.isdigit()]


def _schema_at(root: str, field: str) -> dict[str, Any]:
    """The schema of ``field`` (``tags[0].key``) inside schema ``root``, refs followed."""
    node = schema(root)
    for part in ["", *_parts(field)]:
        while "$ref" in node:
            node = schema(node["$ref"].rsplit("/", 1)[-1])
        if "items" in node and part:
            node = node["items"]
            while "$ref" in node:
                node = schema(node["$ref"].rsplit("/", 1)[-1])
        if part:
            node = node.get("properties", {}).get(part, {})
    while "$ref" in node:
        node = schema(node["$ref"].rsplit("/", 1)[-1])
    return node


def _value_at(body: Any, field: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", field):
        if isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        elif isinstance(body, dict) and part in body:
            body = body[part]
        else:
            return None
    return body


def _label(field: str) -> str:
    parts = _parts(field)
    last = parts[-1] if parts else field
    if parts[:1] == ["pgConfig"] and len(parts) > 1:
        return last
    return LABELS.get(last, last)


def humane(err: FieldError, body: Any, root: str) -> FieldError:
    """``err`` (from validating ``body`` against schema ``root``) in a person's words."""
    label, msg = _label(err.field), err.message
    value = _value_at(body, err.field)
    node = _schema_at(root, err.field)
    if msg == "is required" or msg.endswith("should be non-empty"):
        text = f"{label} is required"
    elif msg.endswith("is too long") and isinstance(value, str | list):
        limit = node.get("maxLength", node.get("maxItems"))
        unit = "characters" if isinstance(value, str) else "items"
        text = f"{label} is {len(value)} {unit}; the limit is {limit}"
    elif msg.endswith("is too short") and isinstance(value, str):
        text = f"{label} needs at least {node.get('minLength')} character(s)"
    elif msg.endswith("is not one of the allowed values"):
        allowed = node.get("enum") or []
        choices = f": choose one of {', '.join(map(str, allowed))}" if len(allowed) <= 8 else ""
        text = f"{value!r} is not a {label.lower()} the API offers{choices}"
        if label == err.field.split(".")[-1]:  # a pgConfig key: keep its own name
            text = f"{value!r} is not allowed for {label}{choices}"
    elif msg.endswith("is not a valid value") and "pattern" in node:
        text = f"{label} {value!r} may hold only letters, digits, '.', '_' and '-'"
    elif "less than the minimum of" in msg:
        text = f"{label} must be at least {node.get('minimum')} (it is {value!r})"
    elif "greater than the maximum of" in msg:
        text = f"{label} must be at most {node.get('maximum')} (it is {value!r})"
    elif msg == UNKNOWN:
        text = f"{label} is not a setting the API accepts"
    else:
        return err
    keep = "; to send it as text, quote it"
    if keep in msg:  # a hint added by the form itself
        text += msg[msg.index(keep) :]
    return Worded(err.field, text)


def in_words(errors: Iterable[FieldError], body: Any, root: str) -> list[FieldError]:
    """Every error of ``errors`` in a person's words."""
    return [humane(err, body, root) for err in errors]


def config_problems(config: Mapping[str, Any], *, prefix: str = "") -> list[FieldError]:
    """Values of ``config`` that are not of their parameter's kind (``max_connections=abc``).

    The kind is that of PostgreSQL's default for the key (:data:`pgcloud_nb.pgparams.PG_DEFAULTS`):
    numbers, sizes and durations are checked; enums are the spec's to check; keys
    the API does not accept are left to the spec's "not a setting" error.
    """
    errors = []
    for key, value in config.items():
        default = PG_DEFAULTS.get(key)
        if default is None or isinstance(value, bool):
            continue
        want = typed_value("pgConfig", key, default)[1]
        got = typed_value("pgConfig", key, value)[1]
        numeric = ("integer", "real")
        fits = got in numeric if want in numeric else got == want or want == "text"
        if not fits:
            example = schema("pgConfig").get("properties", {}).get(key, {}).get("example", default)
            expected = _KIND_WORDS[want].format(example=example)
            errors.append(FieldError(f"{prefix}{key}", f"{value!r} is not {expected}"))
    return errors


def region_problems(body: Mapping[str, Any], extra: Iterable[str] = ()) -> list[FieldError]:
    """The body's region, when its provider is not known to serve it (docs/api-behaviour.md
    §12.6: the package's one list; ``extra`` adds regions, as the sandbox's setting does)."""
    region, provider = body.get("region"), str(body.get("provider"))
    if not region or accepts(provider, region, extra):
        return []
    choices = ", ".join((*known(provider), *extra))
    why = f"{region!r} is not a region Managed Postgres serves on {provider}"
    return [Worded("region", f"{why}: choose one of {choices}")]


def duplicate_tags(tags: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """One error on ``tags`` naming every key given twice (the API keeps one tag per key)."""
    keys = [t.get("key") for t in tags]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    return [Worded("tags", f"duplicate tag key(s): {', '.join(dupes)}")] if dupes else []
