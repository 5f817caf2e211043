"""Each curated notebook, run top to bottom in JupyterLab in Debian's chromium.

Uses the widgets' harness (``conftest.py``: a throwaway JupyterLab pointed at the test
sandbox, chromium through playwright) and ``labpage``. For each notebook: Run All from
the menu, wait for every cell, then check that no cell errored (in the notebook as
saved by JupyterLab), that no widget failed to render or showed an error, and that
no connection string with a password is on the page. A screenshot of each is kept in
``test-artifacts/notebook-NN-*.png``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labpage import open_notebook, run_all, saved_notebook, wait_until_done, widget_failures

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
CREDENTIAL = re.compile(r"postgres(?:ql)?://[^\s:/@'\"<>]+:(?!\*)[^\s@'\"<>]+@")
# The widget worth a picture in each notebook (the README's screenshot is one of these).
HERO = {
    "02-crud-lifecycle.ipynb": ".pgcloud-create-form",
    "03-config-tuning.ipynb": ".pgcloud-config-editor",
}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(name: str, lab: Any, page: Any, artifacts: Path) -> None:
    shutil.copy(NOTEBOOK_DIR / name, lab.root / name)
    stem = name.removesuffix(".ipynb")
    open_notebook(page, lab, name)
    run_all(page)
    try:
        wait_until_done(page, timeout=420)
    finally:
        page.screenshot(path=str(artifacts / f"notebook-{stem}.png"))

    failures = widget_failures(page)
    assert not failures, failures
    assert not CREDENTIAL.search(page.content()), "a connection string with a password shows"

    nb = saved_notebook(page, lab, name)
    errors = [
        (cell.get("id"), out["ename"], str(out["evalue"])[:300])
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if out["output_type"] == "error"
    ]
    assert not errors, f"cells failed in JupyterLab: {errors}"

    # A picture of the notebook's most telling part: its widget, else its last figure.
    if hero := HERO.get(name):
        target = page.locator(hero).first
    else:
        target = page.locator(".jp-OutputArea-output img").last
    if target.count():
        target.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / f"notebook-{stem}.png"))
