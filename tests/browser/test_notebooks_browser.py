"""Each curated notebook, run top to bottom in JupyterLab in Debian's chromium.

Uses the widgets' harness (``conftest.py``: a throwaway JupyterLab whose kernels get the
test sandbox's folder as ``pgcloud-nb lab`` gives it, chromium through playwright) and
``labpage``. For each notebook (``notebooks/*.ipynb``): Run All from the menu, wait for
every cell, then read what a person would see once it is done:

- every widget output on screen with something in it (the figure: widgets with content);
- the live chart still showing drawn lines (an ``<img>`` of real size, or ipympl's
  canvas) and the fleet table still showing rows: only a clean-up would close them;
- no cell error (in the notebook as saved by JupyterLab), no widget that failed to
  render, no error panel left showing, no connection string with a password.

Two notebooks run in JupyterLab's dark theme (the config editor's, and the live
chart's): there the widget labels and an error message must keep a WCAG AA contrast.
Screenshots go to ``test-artifacts/notebook-*.png``; the figures to the run's summary.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labpage import (
    after_run_all,
    low_contrast,
    open_notebook,
    run_all,
    saved_notebook,
    set_theme,
    until,
    wait_until_done,
    widget_failures,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
CREDENTIAL = re.compile(r"postgres(?:ql)?://[^\s:/@'\"<>]+:(?!\*)[^\s@'\"<>]+@")
# The widget worth a picture in each notebook (the README's screenshot is one of these).
HERO = {
    "02-crud-lifecycle.ipynb": ".pgcloud-create-form",
    "03-config-tuning.ipynb": ".pgcloud-config-editor",
    "04-metrics-live-charts.ipynb": ".pgcloud-live-chart",
    "05-fleet-analysis.ipynb": ".pgcloud-fleet-table",
}
DARK = {"03-config-tuning.ipynb", "04-metrics-live-charts.ipynb"}
# Texts a reader must read in the widgets: labels, status lines, messages, table cells.
READABLE = (
    ".jp-OutputArea-output .widget-label, .jp-OutputArea-output .widget-html-content, "
    ".jp-OutputArea-output .pgcloud-chart-status, .jp-OutputArea-output .pgcloud-error"
)


@pytest.fixture
def page(browser: Any, lab: Any, name: str) -> Iterator[Any]:
    set_theme(lab, "JupyterLab Dark" if name in DARK else "JupyterLab Light")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()
    set_theme(lab, "JupyterLab Light")


def _shot(page: Any, selector: str | None, path: Path) -> None:
    """A picture of the notebook's most telling part: its widget, else its last figure."""
    target = page.locator(selector or ".jp-OutputArea-output img").last
    if target.count():
        target.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    page.screenshot(path=str(path))


def _chart_drawn(chart: dict[str, Any]) -> bool:
    size = chart["img"] or chart["canvas"] or [0, 0]
    return size[0] > 200 and size[1] > 100


def _dark_checks(page: Any, name: str, artifacts: Path, figures: dict[str, str]) -> None:
    stem = name.removesuffix(".ipynb")
    if name == "03-config-tuning.ipynb":
        # An error a person can cause: a value that is no number, then Dry run.
        editor = page.locator(".pgcloud-config-editor").first
        box = editor.locator(".widget-gridbox input").first  # max_connections, the first row
        box.fill("abc")
        box.press("Tab")
        editor.locator("button", has_text="Dry run").click()
        until(
            page,
            "the editor to flag the value",
            lambda: (
                page.locator(".pgcloud-config-editor .pgcloud-error").count()
                + page.locator(
                    ".pgcloud-config-editor .widget-html-content", has_text="abc"
                ).count()
            ),
            60,  # the check runs as a job on the kernel: on a loaded machine it took over 15 s
        )
        _shot(page, ".pgcloud-config-editor", artifacts / f"notebook-{stem}-dark-error.png")
    count, low = low_contrast(page, READABLE)
    figures[f"  {stem} in the dark theme"] = f"{count} widget texts, {len(low)} below 4.5:1"
    assert count, "no widget text found to check"
    assert not low, f"hard to read in the dark theme: {low[:10]}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(
    name: str, lab: Any, page: Any, artifacts: Path, figures: dict[str, str]
) -> None:
    shutil.copy(NOTEBOOK_DIR / name, lab.root / name)
    stem = name.removesuffix(".ipynb")
    theme = "dark" if name in DARK else "light"
    open_notebook(page, lab, name)
    run_all(page)
    try:
        wait_until_done(page, timeout=420)
    finally:
        page.screenshot(path=str(artifacts / f"notebook-{stem}.png"))

    failures = widget_failures(page)
    assert not CREDENTIAL.search(page.content()), "a connection string with a password shows"
    nb = saved_notebook(page, lab, name)
    errors = [
        (cell.get("id"), out["ename"], str(out["evalue"])[:300])
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if out["output_type"] == "error"
    ]
    seen = after_run_all(page)
    figures.setdefault(
        "After Run All of each notebook in JupyterLab",
        "widgets with content of widgets shown, cell errors, error panels (aim: all, 0, 0)",
    )
    figures[f"  {stem} ({theme})"] = (
        f"{seen['filled']} of {seen['widgets']} widgets with content, {len(errors)} cell "
        f"errors, {len(seen['panels'])} error panels"
        + (
            f", chart {'drawn' if all(map(_chart_drawn, seen['charts'])) else 'EMPTY'}"
            if seen["charts"]
            else ""
        )
        + (f", table rows {seen['tables']}" if seen["tables"] else "")
    )
    _shot(page, HERO.get(name), artifacts / f"notebook-{stem}.png")

    assert not errors, f"cells failed in JupyterLab: {errors}"
    assert not failures, failures
    assert not seen["panels"], f"error panels left showing: {seen['panels']}"
    # Every notebook shows widgets: 0 of 0 would pass the check below without looking (as
    # when a JupyterLab release stopped marking widget outputs with their type).
    assert seen["widgets"] > 0, "no widget output found after Run All"
    if name.startswith("04-"):
        assert seen["charts"], "notebook 04's live chart was not found"
    if name.startswith("05-"):
        assert seen["tables"], "notebook 05's fleet table was not found"
    assert seen["filled"] == seen["widgets"], (
        f"only {seen['filled']} of {seen['widgets']} widgets show anything"
    )
    for chart in seen["charts"]:
        assert _chart_drawn(chart), f"the live chart shows no drawing after Run All: {chart}"
    for rows in seen["tables"]:
        assert rows > 0, "the fleet table shows no rows after Run All"
    # one line a row, however many tags (chips stacked over lines made 73 px rows)
    assert seen["tallestRow"] < 45, f"a fleet-table row is {seen['tallestRow']} px high"
    assert not seen["progressBoxes"], "a progress line shows an empty progress box"
    if name in DARK:
        _dark_checks(page, name, artifacts, figures)
