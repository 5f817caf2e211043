"""The notebooks as committed: each of notebooks/, listed in nbrun, valid, output-free, tagged.

No kernel, no sandbox: these checks take a moment and catch a notebook saved with its
outputs (which could hold a password), a checked cell without an expected output, or a
cell relying on a trailing ``;`` (nbval ignores it, so the output would still be checked).
"""

from __future__ import annotations

import re

import nbformat
import nbrun
import pytest


def test_every_notebook_in_the_folder_is_listed_in_nbrun() -> None:
    found = sorted(p.name for p in nbrun.NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == list(nbrun.NOTEBOOKS)


@pytest.mark.parametrize("name", nbrun.NOTEBOOKS)
def test_committed_without_outputs(name: str) -> None:
    nb = nbrun.read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert "widgets" not in nb.metadata, "saved widget state: clear it before committing"
    for cell in nbrun.code_cells(nb):
        assert cell.outputs == [], f"{name}:{cell.id} has outputs"
        assert cell.execution_count is None, f"{name}:{cell.id} has an execution count"
        assert "execution" not in cell.metadata, f"{name}:{cell.id} has execution timing"
    ids = [c.id for c in nb.cells]
    assert len(ids) == len(set(ids)), f"{name}: duplicate cell ids"


@pytest.mark.parametrize("name", nbrun.NOTEBOOKS)
def test_checked_cells_have_expected_outputs(name: str) -> None:
    nb = nbrun.read(name)
    expected = nbrun.load_expected().get(name, {})
    checked = [c.id for c in nbrun.checked(nb)]
    assert checked, f"{name}: no cell is tagged {nbrun.CHECK_TAG}"
    assert sorted(expected) == sorted(checked), (
        f"{name}: expected.json and the tagged cells disagree; "
        "run python tests/notebooks/update_expected.py"
    )
    nbformat.validate(nbrun.with_expected(name, expected))
    for cell_id, outputs in expected.items():
        assert outputs, f"{name}:{cell_id}: a checked cell with no output checks nothing"
        assert outputs == nbrun.comparable(outputs), f"{name}:{cell_id} is not sanitized"
        assert "postgres://" not in str(outputs)


@pytest.mark.parametrize("name", nbrun.NOTEBOOKS)
def test_no_trailing_semicolons_and_a_cleanup_cell(name: str) -> None:
    nb = nbrun.read(name)
    for cell in nbrun.code_cells(nb):
        last = cell.source.rstrip().splitlines()[-1] if cell.source.strip() else ""
        assert not re.search(r";\s*(#.*)?$", last), (
            f"{name}:{cell.id} ends with ';': assign to _ instead (nbval ignores ';')"
        )
    cells = nbrun.code_cells(nb)
    assert cells[-1].id == "cleanup" and "delete_service" in cells[-1].source
    assert nbrun.CHECK_TAG in cells[-1].metadata.get("tags", [])


def test_the_first_running_marker_exists() -> None:
    name, cell_id = nbrun.FIRST_RUNNING
    cell = next(c for c in nbrun.code_cells(nbrun.read(name)) if c.id == cell_id)
    assert "pg.wait(" in cell.source
