"""Publish an executed copy of every notebook under docs/notebooks/, in one command.

    python tests/notebooks/publish.py [NOTEBOOK ...]

Runs each notebook of ``notebooks/`` (all of them by default: ``notebooks/*.ipynb``)
top to bottom with nbclient in a temporary copy, against a new sandbox with the
default settings (the real API's rate limit on) and no credentials, as ``pgcloud-nb
lab`` would; outputs are kept and the widget state is saved, so a reader sees the
results on the repository page without running anything.

A copy is written only if it is clean: no cell failed, and the scan the secrets test
applies (``secretscan.findings``: every password and connection string the API sent
during the run, in plain, HTML-, JSON- and URL-encoded forms, and anything shaped
like a credential) finds nothing in any output or in the widget state. Otherwise the
publisher says where (never the secret) and leaves the old copy alone.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

# nbrun beside this file; the package from this checkout even when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

import nbformat
import nbrun
from nbformat import NotebookNode
from secretscan import findings

PUBLISHED = nbrun.ROOT / "docs" / "notebooks"
NOTE_ID = "published-note"


def notebooks() -> list[str]:
    return sorted(p.name for p in nbrun.NOTEBOOK_DIR.glob("*.ipynb"))


def _note(name: str, seconds: float) -> NotebookNode:
    cell = nbformat.v4.new_markdown_cell(
        f"*An executed copy of [`notebooks/{name}`](../../notebooks/{name}), with its "
        f"outputs, run top to bottom on the sandbox in {seconds:.0f} s by "
        "`python tests/notebooks/publish.py`. IDs, times and timings are that run's; "
        "passwords never reach an output. Open the notebook itself to run it.*"
    )
    cell.id = NOTE_ID
    return cell


def tidy(nb: NotebookNode, name: str, seconds: float) -> NotebookNode:
    """The copy as published: a note on top, no per-cell timing (noise in every diff)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.cells.insert(0, _note(name, seconds))
    return nb


def publish_one(name: str, work: Path, env: dict[str, str], record: Path) -> str | None:
    """Run, check and write one copy; returns why it was refused, or None."""
    shutil.copy(nbrun.NOTEBOOK_DIR / name, work / name)
    started = time.monotonic()
    nb = nbrun.execute(work / name, env, record)
    seconds = time.monotonic() - started
    secrets = set(json.loads(record.read_text("utf-8")))
    errors = [
        f"cell {c.id!r}: {o.ename}"
        for c in nbrun.code_cells(nb)
        for o in c.outputs
        if o.output_type == "error"
    ]
    if errors:
        return "cells failed: " + "; ".join(errors)
    if found := findings(nb, secrets):
        return "secrets in the outputs:\n  " + "\n  ".join(found)
    if not secrets:
        return "the recorder saw no secret at all: the scan would prove nothing"
    PUBLISHED.mkdir(parents=True, exist_ok=True)
    nbformat.write(tidy(nb, name, seconds), PUBLISHED / name)
    print(f"{name}: published in {seconds:.0f} s ({len(secrets)} secrets scanned for, 0 found)")
    return None


def main(argv: list[str]) -> int:
    names = argv or notebooks()
    unknown = sorted(set(names) - set(notebooks()))
    if unknown:
        print(f"unknown notebook(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    from pgcloud_nb.sandbox import Sandbox

    root = nbrun.reachable_dir("pgcloud-nb-publish-")
    home, work = root / "sandbox", root / "notebooks"
    work.mkdir()
    env = nbrun.clean_env(PGCLOUD_SANDBOX_HOME=str(home))
    refused = 0
    try:
        for name in names:
            if why := publish_one(name, work, env, root / "secrets.json"):
                print(f"{name}: NOT published, {why}", file=sys.stderr)
                refused += 1
    finally:
        Sandbox(home).stop()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
