"""Input pieces shared by the forms: fields with an error beside them, tag rows,
pgConfig text, and writing connection details to a private file.

Validation is never hand-written here: bodies go through
:func:`pgcloud_nb.spec.validate_body`, the embedded official spec, and each
:class:`~pgcloud_nb.spec.FieldError` is routed to the field it names.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..jobs import Message, close_children
from ..messages import styled
from ..models import PostgresService
from ..sizes import SizeSpec, all_sizes
from ..spec import FieldError, pg_config_keys
from .wording import Worded

__all__ = [
    "ErrorLabel",
    "TagRows",
    "config_value",
    "families",
    "family_label",
    "parse_config_text",
    "remove_connection_details",
    "route_errors",
    "write_connection_details",
]


class ErrorLabel(Message, widgets.HTML):
    """The text beside a field, in the theme's error colour; empty when the field is fine."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("pgcloud-field-error")

    def set(self, messages: Iterable[str], *, tone: str = "error") -> None:
        text = "; ".join(messages)
        self.value = styled(html.escape(text), tone) if text else ""

    def clear(self) -> None:
        self.value = ""

    @property
    def text(self) -> str:
        return re.sub(r"<[^>]+>", "", html.unescape(self.value))


def body_block(body: Any, title: str = "PATCH body") -> str:
    """HTML showing a request body exactly as it will be sent."""
    text = html.escape(json.dumps(body, indent=1), quote=False)
    return f"<small>{html.escape(title)}</small><pre class='pgcloud-body'>{text}</pre>"


def beside(widget: widgets.Widget, error: ErrorLabel) -> widgets.HBox:
    """A field with its error label on the right."""
    return widgets.HBox([widget, error], layout=widgets.Layout(align_items="center"))


def route_errors(
    errors: Iterable[FieldError], labels: Mapping[str, ErrorLabel], fallback: ErrorLabel
) -> None:
    """Put each error beside the field it names: the label whose key is the longest prefix.

    ``tags[1].value`` goes to ``labels["tags[1]"]`` if there is one, else to
    ``labels["tags"]``; a field no label claims goes to ``fallback``.
    """
    found: dict[str, list[str]] = {}
    for err in errors:
        key = max(
            (k for k in labels if err.field == k or err.field.startswith((k + ".", k + "["))),
            key=len,
            default=None,
        )
        where = key if key is not None else "\0fallback"
        named = key == err.field or isinstance(err, Worded)  # the message names its field
        shown = err.message if named else f"{err.field}: {err.message}"
        found.setdefault(where, []).append(shown)
    # A label may serve several keys (and be the fallback too): set each one once.
    per_label: dict[int, tuple[ErrorLabel, list[str]]] = {}
    for key, label in [*labels.items(), ("\0fallback", fallback)]:
        per_label.setdefault(id(label), (label, []))[1].extend(found.get(key, []))
    for label, messages in per_label.values():
        label.set(messages)


# -- tags ------------------------------------------------------------------------


class TagRows(widgets.VBox):
    """Editable key/value rows with a remove button each, and an "add tag" button.

    ``rows_errors`` has one :class:`ErrorLabel` per row, keyed ``tags[i]`` as the
    spec's field paths are, so :func:`route_errors` can place errors per row.
    Callbacks given to :meth:`on_change` run after any edit: a key or value
    typed, a row added or removed.
    """

    def __init__(self, tags: Mapping[str, str | None] | None = None, **kwargs: Any) -> None:
        self.add_button = widgets.Button(description="add tag", icon="plus")
        self.add_button.on_click(lambda _: self.add())
        self._rows: list[tuple[widgets.Text, widgets.Text, ErrorLabel, widgets.HBox]] = []
        self._listeners: list[Callable[[], object]] = []
        super().__init__(**kwargs)
        self.set_tags(tags or {})

    def on_change(self, callback: Callable[[], object]) -> None:
        self._listeners.append(callback)

    def _changed(self, _: object = None) -> None:
        for callback in self._listeners:
            callback()

    def add(self, key: str = "", value: str = "") -> tuple[widgets.Text, widgets.Text]:
        """Append a row and return its key and value fields."""
        k = widgets.Text(value=key, placeholder="key", layout=widgets.Layout(width="14em"))
        v = widgets.Text(value=value, placeholder="value", layout=widgets.Layout(width="14em"))
        err = ErrorLabel()
        remove = widgets.Button(
            icon="trash", tooltip="remove this tag", layout=widgets.Layout(width="3em")
        )
        row = widgets.HBox([k, v, remove, err])
        entry = (k, v, err, row)
        remove.on_click(lambda _: self._remove(entry))
        k.observe(self._changed, "value")
        v.observe(self._changed, "value")
        self._rows.append(entry)
        self._render()
        self._changed()
        return k, v

    def _remove(self, entry: tuple[widgets.Text, widgets.Text, ErrorLabel, widgets.HBox]) -> None:
        self._rows.remove(entry)
        self._render()
        _close_tree(entry[3])  # a removed row is gone for good: free its callbacks
        self._changed()

    def remove(self, key: str) -> None:
        """Remove every row whose key is ``key``."""
        for entry in [e for e in self._rows if e[0].value.strip() == key]:
            self._remove(entry)

    def _render(self) -> None:
        self.children = [*(row for *_, row in self._rows), self.add_button]

    def set_tags(self, tags: Mapping[str, str | None]) -> None:
        for *_, row in self._rows:
            _close_tree(row)
        self._rows = []
        for key, value in tags.items():
            self.add(key, value or "")
        self._render()

    def fields(self) -> list[tuple[widgets.Text, widgets.Text]]:
        return [(k, v) for k, v, *_ in self._rows]

    def payload(self) -> list[dict[str, str]]:
        """The tags in the API's list form; rows with neither key nor value are skipped."""
        return [
            {"key": k.value.strip(), "value": v.value.strip()}
            for k, v, *_ in self._rows
            if k.value.strip() or v.value.strip()
        ]

    def as_dict(self) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.payload()}

    def error_labels(self) -> dict[str, ErrorLabel]:
        """``tags[i]`` → that row's error label (``i`` counts the rows :meth:`payload` keeps)."""
        kept = [e for e in self._rows if e[0].value.strip() or e[1].value.strip()]
        return {f"tags[{i}]": err for i, (_, _, err, _) in enumerate(kept)}


def _close_tree(widget: widgets.Widget) -> None:
    close_children(widget)
    widget.close()


# -- pgConfig values ---------------------------------------------------------------


def config_value(text: str) -> Any:
    """A value as typed: JSON scalars become numbers/strings, anything else stays text.

    As clickhousectl's ``config patch --set`` does: ``200`` is sent as an integer
    (so the spec's ``minimum`` applies), ``"-1"`` (quoted) as the string ``-1``
    (the spec's own examples send -1 that way), ``64MB`` as a string.
    """
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | str) and not isinstance(value, bool) else text


def parse_config_text(text: str) -> tuple[dict[str, Any], list[FieldError]]:
    """``key=value`` lines (blank lines and ``#`` comments skipped) → a pgConfig dict.

    Lines that are not ``key=value`` come back as errors on ``pgConfig``.
    """
    config: dict[str, Any] = {}
    errors: list[FieldError] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            errors.append(FieldError("pgConfig", f"line {lineno}: expected key=value"))
            continue
        config[key.strip()] = config_value(value)
    return config, errors


def config_placeholder() -> str:
    """Two example lines taken from the spec's own examples."""
    keys = pg_config_keys()
    names = [k for k in ("max_connections", "work_mem") if k in keys]
    lines = [f"{k}={keys[k].get('example', '')}" for k in names]
    return "\n".join(lines)


# -- sizes ------------------------------------------------------------------------


def families(provider: str) -> dict[str, list[SizeSpec]]:
    """The provider's sizes, grouped by family (``r8gd``), in the size table's order."""
    groups: dict[str, list[SizeSpec]] = {}
    for spec in all_sizes():
        if spec.provider == provider:
            groups.setdefault(spec.family, []).append(spec)
    return groups


def family_label(family: str, sizes: Sequence[SizeSpec]) -> str:
    per_cpu = sizes[0].memory_gib / sizes[0].vcpus
    cpus = f"{sizes[0].vcpus}–{sizes[-1].vcpus}"
    return f"{family} · {per_cpu:g} GiB/vCPU · {cpus} vCPU"


# -- connection details ------------------------------------------------------------


# libpq's environment names, so that `set -a; . file; psql` just works.
_LIBPQ = {
    "HOST": "PGHOST",
    "PORT": "PGPORT",
    "USER": "PGUSER",
    "PASSWORD": "PGPASSWORD",
    "DATABASE": "PGDATABASE",
    "URL": "DATABASE_URL",
}


def _details(service: PostgresService) -> dict[str, str]:
    """HOST, PORT, USER, PASSWORD, DATABASE and URL, from the create response."""
    url = service.reveal_connection_string()
    password = service.reveal_password()
    if not url and not password:
        raise ValueError(
            f"the API sent no credentials for {service.name or service.id}: it sends them only "
            "in the create response; reset the password to get new ones"
        )
    params: dict[str, str] = {}
    if url:
        from psycopg.conninfo import conninfo_to_dict

        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    out = {
        "HOST": params.get("host") or service.hostname or "",
        "PORT": params.get("port") or "5432",  # the real port (docs/api-behaviour.md §3.2)
        "USER": params.get("user") or service.username or "postgres",
        "PASSWORD": params.get("password") or password or "",
        "DATABASE": params.get("dbname") or "postgres",
    }
    if url:
        out["URL"] = url
    return out


def _quote(value: str) -> str:
    # Single quotes: literal for both python-dotenv and sh. dotenv's \' escape is the
    # one thing sh reads differently; the API's passwords are not known to use quotes.
    if not re.search(r"[^\w@%+=:,./-]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_connection_details(
    service: PostgresService, path: str | os.PathLike[str], *, prefix: str | None = None
) -> list[str]:
    """Write the service's credentials to ``path`` (mode 0600), merged into what is there.

    The file is ``KEY=value`` lines that both python-dotenv and ``set -a; . file``
    read. Without ``prefix`` the names are libpq's (``PGHOST``…, ``DATABASE_URL``),
    so ``psql`` finds them; with one they are ``<prefix>HOST``… Lines of other keys
    are kept; ours are replaced. The file is replaced atomically and is never
    readable by others, even for a moment. Returns the names written (not values).
    """
    target = Path(path).expanduser()
    values = {
        (_LIBPQ[k] if prefix is None else prefix + k): v for k, v in _details(service).items()
    }
    kept = _lines_without(target, set(values))
    _write_private(target, [*kept, *(f"{k}={_quote(v)}" for k, v in values.items())])
    return list(values)


def remove_connection_details(path: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Remove the lines of ``names`` from ``path`` (kept 0600); delete it if nothing is left."""
    target = Path(path).expanduser()
    if not target.exists():
        return
    kept = _lines_without(target, set(names))
    if any(line.strip() for line in kept):
        _write_private(target, kept)
    else:
        target.unlink()


def _lines_without(target: Path, names: set[str]) -> list[str]:
    if not target.exists():
        return []
    return [
        line
        for line in target.read_text("utf-8").splitlines()
        if line.split("=", 1)[0].strip().removeprefix("export ").strip() not in names
    ]


def _write_private(target: Path, lines: list[str]) -> None:
    """Replace ``target`` atomically with ``lines``; never readable by others, even for a moment."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_prefix(name: str) -> str:
    """``my pg`` → ``PGCLOUD_MY_PG_`` (a .env holds many services; prefixes keep them apart)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() or "SERVICE"
    return f"PGCLOUD_{slug}_"
