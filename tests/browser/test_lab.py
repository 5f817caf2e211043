"""The widgets in a real JupyterLab, driven through Debian's chromium.

Opens ``widgets.ipynb`` (a create form, a picker, the fleet table and a live
chart), runs it, checks that every widget renders, submits the create form by
clicking, checks the new service through the API, and waits for the chart to
redraw twice more. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labpage import kernel_idle, until

from pgcloud_nb.client import Client

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture
def page(browser: Any, artifacts: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    yield page
    page.screenshot(path=str(artifacts / "lab-last.png"), full_page=True)
    context.close()


def _redraws(page: Any) -> int:
    text = page.locator(".pgcloud-chart-status").first.inner_text(timeout=5_000)
    found = re.search(r"redraws (\d+)", text)
    return int(found[1]) if found else -1


def _field(page: Any, label: str) -> Any:
    form = page.locator(".pgcloud-create-form")
    return form.locator(f".widget-text:has(label:text-is('{label}')) input").first


def test_widgets_render_create_and_chart_in_jupyterlab(
    lab: Any, page: Any, pg: Client, artifacts: Path
) -> None:
    page.goto(lab.notebook_url("widgets.ipynb"))
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    until(page, "the kernel to be Idle", lambda: kernel_idle(page), 90)

    # Run all, from the menu as a person would.
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_selector(".pgcloud-live-chart", timeout=90_000)
    until(
        page,
        "every cell to finish",
        lambda: page.locator(".jp-InputPrompt", has_text="[*]").count() == 0 and kernel_idle(page),
        90,
    )

    for cls in ("pgcloud-create-form", "pgcloud-fleet-table", "pgcloud-live-chart"):
        assert page.locator(f".{cls}").count() == 1, f"{cls} did not render"
    assert page.locator(".pgcloud-live-chart img").count() == 1
    assert "Error displaying widget" not in page.content()
    assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    page.screenshot(path=str(artifacts / "lab-01-after-run-all.png"), full_page=True)

    # Fill in the form and click Create.
    name = f"browser-{uuid.uuid4().hex[:6]}"
    _field(page, "name").fill(name)
    _field(page, "region").fill("eu-west-2")
    _field(page, "region").press("Tab")
    start_redraws = _redraws(page)
    page.locator(".pgcloud-create-form button", has_text="Create service").click()
    status = page.locator(".pgcloud-create-form .widget-html", has_text=re.compile("running after"))
    until(page, "the form to report running", lambda: status.count() > 0, 120)
    page.locator(".pgcloud-create-form").screenshot(path=str(artifacts / "lab-02-created.png"))

    # The service exists, as the API says.
    found = [s for s in pg.list_services() if s.name == name]
    assert len(found) == 1, f"{name} not in the API's list"
    assert found[0].state == "running" and found[0].region == "eu-west-2"
    assert "PGPASSWORD" not in page.inner_text("body")  # nothing written or shown yet

    # The chart picks the new service up and redraws at least twice more.
    until(page, "two more chart redraws", lambda: _redraws(page) >= start_redraws + 2, 90)
    page.locator(".pgcloud-live-chart").screenshot(path=str(artifacts / "lab-03-chart.png"))
    assert "Error displaying widget" not in page.content()
    assert page.locator(".pgcloud-errors .pgcloud-error").count() == 0, page.locator(
        ".pgcloud-errors"
    ).all_inner_texts()
    pg.delete_service(found[0].id)
