"""What :func:`pgcloud_nb.spec.validate_body` adds to jsonschema: ECMA-262 patterns, safe text.

- **Patterns mean what the spec means.** JSON Schema's ``pattern`` is an ECMA-262
  expression, searched for in the string. Python's ``re`` differs where it
  matters: ``$`` also matches before a final newline (so ``"k\\n"`` passed the tag
  pattern ``^[a-zA-Z0-9._-]+$``), and ``\\d``/``\\w`` match other scripts' digits
  and letters. :func:`ecma_regex` compiles a pattern with ``$`` as ``\\Z`` (outside
  classes and escapes) and ASCII classes, and :func:`whole_string_validator` uses it.
- **No field holds a control character or a lone surrogate** (:func:`text_problem`).
  A NUL ends a C string (libpq cut a password short at it), a newline ends a line
  of a configuration file, a lone surrogate (``"\\ud800"`` in JSON) has no UTF-8
  form, so no server, file or log could take it, and a bidirectional control
  (U+202E…) makes a name read otherwise than it is. No field of the API needs any
  of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache, lru_cache
from typing import Any, Protocol

__all__ = [
    "SchemaError",
    "SchemaValidator",
    "ecma_regex",
    "text_problem",
    "unsafe_text",
    "whole_string_validator",
]


class SchemaError(Protocol):
    """What :mod:`pgcloud_nb.spec` reads of a ``jsonschema.ValidationError``."""

    @property
    def message(self) -> str: ...
    @property
    def validator(self) -> Any: ...
    @property
    def validator_value(self) -> Any: ...
    @property
    def instance(self) -> Any: ...
    @property
    def schema(self) -> Any: ...
    @property
    def absolute_path(self) -> Sequence[str | int]: ...


class SchemaValidator(Protocol):
    """What :mod:`pgcloud_nb.spec` uses of a jsonschema validator."""

    def iter_errors(self, instance: Any) -> Iterable[SchemaError]: ...


@lru_cache(maxsize=256)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` (ECMA-262, as JSON Schema writes it) compiled with its ECMA meaning."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":  # an escape, "\$" included, is copied as it is
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append("\\Z" if ch == "$" and not in_class else ch)
        i += 1
    return re.compile("".join(out), re.ASCII)


@cache
def whole_string_validator() -> Callable[..., SchemaValidator]:
    """Draft 2020-12 with ``pattern`` read as ECMA-262 (:func:`ecma_regex`): the class.

    jsonschema is imported here, on first use, not with this module: its import runs
    ``jsonschema._format``, which builds rfc3987-syntax's IRI grammar with lark when that
    is installed (JupyterLab's jupyter-events pulls it in): seconds of CPU at every
    sandbox start for a server that has not validated anything yet.
    """
    import jsonschema

    def pattern_rule(
        validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
    ) -> Iterator[jsonschema.ValidationError]:
        if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern_rule})


# C0 and C1 controls, DEL, the UTF-16 surrogates, and Unicode's bidirectional controls
# (Bidi_Control: they reorder what a name looks like in a table or a log, "Trojan Source").
_UNSAFE_TEXT = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be taken as it is, or None: a control character or a surrogate."""
    found = _UNSAFE_TEXT.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    kind = "a bidirectional control" if found.group() in _BIDI else kind
    return f"contains {kind} (U+{code:04X})"


def unsafe_text(body: Any) -> list[tuple[list[str | int], str]]:
    """Every string of ``body``, property names too, that :func:`text_problem` refuses.

    Each comes as (the field's path, why); a refused name is shown escaped.
    """
    found: list[tuple[list[str | int], str]] = []
    stack: list[tuple[list[str | int], Any]] = [([], body)]
    while stack:  # iterative: a body's depth is the client's choice
        parts, node = stack.pop()
        if isinstance(node, str):
            if why := text_problem(node):
                found.append((parts, why))
        elif isinstance(node, dict):
            for key, value in node.items():
                if why := text_problem(str(key)):
                    found.append(([*parts, ascii(str(key))[1:-1]], f"the property name {why}"))
                else:
                    stack.append(([*parts, str(key)], value))
        elif isinstance(node, list):
            stack.extend(([*parts, i], item) for i, item in enumerate(node))
    return sorted(found, key=lambda f: [str(p) for p in f[0]])
