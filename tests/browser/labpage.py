"""Driving a notebook in JupyterLab through playwright: open, run all, wait, read back.

Shared by the browser tests (with the ``lab``, ``browser`` and ``artifacts`` fixtures
of ``conftest.py``). Every wait polls a condition with a deadline and, on timeout,
fails saying what it waited for and what the widgets' error panels show.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

__all__ = [
    "kernel_idle",
    "open_notebook",
    "run_all",
    "saved_notebook",
    "until",
    "wait_until_done",
    "widget_failures",
]


def until(page: Any, what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            errors = page.locator(".pgcloud-errors").all_inner_texts()
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}; "
                f"error panels: {[e for e in errors if e.strip()]!r}"
            )
        page.wait_for_timeout(250)


def kernel_idle(page: Any) -> bool:
    text = page.locator("#jp-main-statusbar").inner_text(timeout=5_000)
    return "Idle" in text


def open_notebook(page: Any, lab: Any, name: str, timeout: float = 90) -> None:
    """Open ``name`` (in the lab's root folder) and wait until its kernel is Idle."""
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    until(page, "the kernel to be Idle", lambda: kernel_idle(page), timeout)


def run_all(page: Any) -> None:
    """Run ▸ Run All Cells, from the menu as a person would."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _prompts(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def wait_until_done(page: Any, timeout: float) -> None:
    """Wait until Run All has finished: no cell at ``[*]``, the last one numbered, Idle.

    (JupyterLab renders only the cells near the view, so only the rendered prompts
    can be read; Run All leaves the last cell in view.)
    """

    def done() -> bool:
        prompts = _prompts(page)
        return (
            bool(prompts)
            and "[*]:" not in prompts
            and re.fullmatch(r"\[\d+\]:", prompts[-1]) is not None
            and kernel_idle(page)
        )

    until(page, "every cell to run", done, timeout)


def widget_failures(page: Any) -> list[str]:
    """Widgets that failed to render, and errors shown in the package's widget panels."""
    content = page.content()
    failures = []
    if "Error displaying widget" in content:
        failures.append("Error displaying widget")
    failures += [
        f"widget error panel: {t.strip()[:300]}"
        for t in page.locator(".pgcloud-errors .pgcloud-error").all_inner_texts()
    ]
    return failures


def saved_notebook(page: Any, lab: Any, name: str, timeout: float = 30) -> dict[str, Any]:
    """Save with Ctrl+S and return the notebook as the server stored it (outputs included)."""
    page.locator(".jp-NotebookPanel").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")

    def stored() -> dict[str, Any] | None:
        answer = httpx.get(
            f"{lab.url}/api/contents/{name}", params={"token": lab.token, "content": 1}, timeout=10
        )
        answer.raise_for_status()
        model = answer.json()
        cells = [c for c in model["content"]["cells"] if c["cell_type"] == "code"]
        ran = cells and all(c.get("execution_count") for c in cells)
        return model["content"] if ran else None

    result: dict[str, Any] = until(page, f"{name} to be saved with its outputs", stored, timeout)
    return result
