"""The executed copies under docs/notebooks/ (``python tests/notebooks/publish.py``).

No kernel, no sandbox: each notebook of ``notebooks/`` has a published copy whose code is
the committed notebook's (a notebook changed without republishing fails here), that ran
every code cell without an error, kept its outputs and its widget state, and shows
nothing shaped like a credential (the secrets themselves were scanned for when the
copy was made, ``secretscan.findings``; only their shapes can be checked afterwards).
"""

from __future__ import annotations

import nbformat
import nbrun
import pytest
from publish import NOTE_ID, PUBLISHED, notebooks
from secretscan import findings

NAMES = notebooks()


def test_every_notebook_is_published() -> None:
    published = sorted(p.name for p in PUBLISHED.glob("*.ipynb"))
    assert published == NAMES, "run: python tests/notebooks/publish.py"


@pytest.mark.parametrize("name", NAMES)
def test_the_copy_is_the_notebook_run_clean(name: str) -> None:
    path = PUBLISHED / name
    if not path.exists():
        pytest.fail(f"docs/notebooks/{name} is missing: run python tests/notebooks/publish.py")
    copy = nbformat.read(path, as_version=4)
    nbformat.validate(copy)
    assert copy.cells[0].id == NOTE_ID, "the copy does not say what it is"
    committed = [(c.id, c.cell_type, c.source) for c in nbrun.read(name).cells]
    published = [(c.id, c.cell_type, c.source) for c in copy.cells[1:]]
    assert published == committed, f"docs/notebooks/{name} is stale: republish it"

    cells = nbrun.code_cells(copy)
    assert all(c.execution_count for c in cells), "a code cell did not run"
    errors = [c.id for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells failed in the published run: {errors}"
    assert sum(len(c.outputs) for c in cells) >= len(cells) // 2, "outputs are missing"
    assert copy.metadata.get("widgets"), "no widget state saved"
    assert not findings(copy, set()), "something shaped like a credential is published"
