"""Driving a notebook in JupyterLab through playwright: open, run all, wait, read back.

Shared by the browser tests (with the ``lab``, ``browser`` and ``artifacts`` fixtures
of ``conftest.py``). Every wait polls a condition with a deadline and, on timeout,
fails saying what it waited for and what the widgets' error panels show.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

__all__ = [
    "after_run_all",
    "kernel_idle",
    "low_contrast",
    "open_notebook",
    "run_all",
    "saved_notebook",
    "set_theme",
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
    # all_inner_texts does not wait: on a loaded machine the status bar can be missing for
    # a while after the notebook panel shows (a 5 s wait for it failed two runs), and
    # ``until`` is the one place that decides how long to keep looking.
    return any("Idle" in text for text in page.locator("#jp-main-statusbar").all_inner_texts())


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


def saved_notebook(page: Any, lab: Any, name: str, timeout: float = 90) -> dict[str, Any]:
    """Save with Ctrl+S and return the notebook as the server stored it (outputs included)."""
    pressed = [0.0]

    def save() -> None:
        page.locator(".jp-NotebookPanel").first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        pressed[0] = time.monotonic()

    save()

    def stored() -> dict[str, Any] | None:
        if time.monotonic() - pressed[0] > 15:
            # a Ctrl+S that a busy page dropped (seen once on a loaded machine): ask again
            save()
        answer = httpx.get(
            f"{lab.url}/api/contents/{name}", params={"token": lab.token, "content": 1}, timeout=10
        )
        if answer.status_code >= 500:
            # A read that meets the save half-way (the server swaps in its temp file): again.
            return None
        answer.raise_for_status()
        model = answer.json()
        cells = [c for c in model["content"]["cells"] if c["cell_type"] == "code"]
        ran = cells and all(c.get("execution_count") for c in cells)
        return model["content"] if ran else None

    result: dict[str, Any] = until(page, f"{name} to be saved with its outputs", stored, timeout)
    return result


def set_theme(lab: Any, theme: str) -> None:
    """The theme (``"JupyterLab Light"`` or ``"JupyterLab Dark"``) of the pages opened next."""
    answer = httpx.put(
        f"{lab.url}/lab/api/settings/@jupyterlab/apputils-extension:themes",
        params={"token": lab.token},
        json={"raw": json.dumps({"theme": theme})},
        timeout=10,
    )
    answer.raise_for_status()


# Every widget output of the page: is it on screen with something in it (text, a picture,
# a canvas, a field)? The live chart: does its picture have drawn size (an <img> of a
# real PNG, or ipympl's canvas)? The fleet table: how many rows? Error panels that show.
_AFTER_RUN_ALL = """() => {
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 8; };
  // JupyterLab 4.6 no longer marks a widget's output with its MIME type: find the output
  // areas that hold a widget view (ipywidgets 8 gives every view the jupyter-widgets class).
  const views = [...document.querySelectorAll(".jp-OutputArea-output")].filter(o =>
    o.matches("[data-mime-type='application/vnd.jupyter.widget-view+json']") ||
    o.matches(".jupyter-widgets") || o.querySelector(".jupyter-widgets") !== null);
  const filled = views.filter(v => shown(v) && (v.innerText.trim() !== "" ||
    v.querySelector("img, canvas, input, select, textarea, svg") !== null));
  const charts = [...document.querySelectorAll(".pgcloud-live-chart")].map(c => {
    const img = c.querySelector("img");
    const canvas = c.querySelector("canvas");
    return {
      img: img ? [img.naturalWidth, img.naturalHeight] : null,
      canvas: canvas ? [canvas.width, canvas.height] : null,
    };
  });
  const tables = [...document.querySelectorAll(".pgcloud-fleet-table")].map(
    t => t.querySelectorAll("table tbody tr").length);
  const panels = [...document.querySelectorAll(".pgcloud-errors .pgcloud-error")]
    .filter(shown).map(e => e.innerText.trim().slice(0, 300));
  // The tallest fleet-table row (one line of text is about 30 px), and progress boxes
  // beside a progress line (tqdm's notebook bar has one; the package's line has none).
  const rowHeights = [...document.querySelectorAll(".pgcloud-fleet-table table tbody tr")]
    .map(r => Math.round(r.getBoundingClientRect().height));
  const tallestRow = rowHeights.length ? Math.max(...rowHeights) : 0;
  const progressBoxes = document.querySelectorAll(".jp-OutputArea-output .widget-hprogress").length;
  return {widgets: views.length, filled: filled.length, charts, tables, panels, tallestRow,
          progressBoxes};
}"""


def after_run_all(page: Any) -> dict[str, Any]:
    """What a reader sees once Run All is done: widgets, the chart, the table, error panels."""
    report: dict[str, Any] = page.evaluate(_AFTER_RUN_ALL)
    return report


# WCAG's contrast ratio between an element's text colour and the first opaque background
# behind it (its own or an ancestor's), for the widget texts a reader must read.
_CONTRAST = """(selector) => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.innerText.trim() || el.getBoundingClientRect().height === 0) continue;
    let bg = null;
    for (let n = el; n && !bg; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) bg = c.slice(0, 3);
    }
    const fg = rgb(getComputedStyle(el).color).slice(0, 3);
    const [a, b] = [lum(fg), lum(bg || [255, 255, 255])].sort((x, y) => y - x);
    out.push({text: el.innerText.trim().slice(0, 80), ratio: (a + 0.05) / (b + 0.05)});
  }
  return out;
}"""


def low_contrast(page: Any, selector: str, minimum: float = 4.5) -> tuple[int, list[str]]:
    """How many texts matched ``selector``, and those below ``minimum`` contrast (WCAG AA)."""
    found: list[dict[str, Any]] = page.evaluate(_CONTRAST, selector)
    low = [f"{f['text']!r}: {f['ratio']:.1f}" for f in found if f["ratio"] < minimum]
    return len(found), low
