"""Where a secret, or something shaped like a credential, shows in an executed notebook.

Shared by the secrets test (``test_secrets.py``) and the publisher (``publish.py``),
so that a published copy passes exactly the scan the tests apply. The secrets to look
for are the ones ``nbrun.execute`` recorded from the API traffic of the run; the
shapes catch a credential the recorder could not know (a password typed by hand).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from urllib.parse import quote

from nbformat import NotebookNode

# A URL or key=value connection string with a password that is not a mask.
SHAPES = (
    re.compile(r"postgres(?:ql)?://[^\s:/@'\"<>]+:(?!\*)[^\s@'\"<>]+@"),
    re.compile(r"\bpassword\s*=\s*(?!\*|SecretStr\(|None\b|['\"]?\*)[^\s&'\"<>),]+"),
    re.compile(r"\bPGPASSWORD\s*=\s*(?!\*)\S+"),
)


def _forms(secret: str) -> set[str]:
    return {secret, html.escape(secret), json.dumps(secret)[1:-1], quote(secret, safe="")}


def _hint(secret: str) -> str:
    """Enough to tell findings apart, never the secret itself."""
    return f"a {len(secret)}-character secret starting {secret[:2]!r}"


def places(nb: NotebookNode) -> Iterator[tuple[str, str]]:
    """(where, text) for every output part of every cell, and the saved widget state."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for i, output in enumerate(cell.get("outputs", [])):
            yield f"cell {cell.get('id')!r} output {i}", json.dumps(output, ensure_ascii=False)
    widgets = nb.metadata.get("widgets")
    if widgets is not None:
        yield "saved widget state", json.dumps(widgets, ensure_ascii=False)


def findings(nb: NotebookNode, secrets: set[str]) -> list[str]:
    """Every place a secret, or something shaped like a credential, shows; [] when clean."""
    found = []
    for where, text in places(nb):
        for secret in secrets:
            if any(form in text for form in _forms(secret)):
                found.append(f"{where}: {_hint(secret)}")
        for shape in SHAPES:
            if match := shape.search(text):
                key = re.split(r"(?<=[=:])", match[0], maxsplit=2)[:2]
                found.append(f"{where}: shaped like a credential: {''.join(key)}***")
    return found
