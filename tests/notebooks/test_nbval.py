"""nbval runs every notebook, as CI's own pytest job would (the hvplot way).

``python -m pytest --nbval-lax`` in a subprocess, on copies of the notebooks whose
checked cells carry their expected outputs (``expected.json``), against a brand-new
sandbox with the default settings (rate limit on: 10 requests per 10 s) and no
credentials anywhere: the first notebook's ``connect()`` starts the sandbox, as on a
fresh machine. Prints the time for the whole suite and the time to the first running service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import nbrun
import pytest

from pgcloud_nb.sandbox import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _cell_times(junit: Path) -> dict[str, list[float]]:
    """Notebook name → seconds per code cell (setup included: cell 0 starts the kernel)."""
    times: dict[str, dict[int, float]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        notebook = next(
            (
                n
                for n in nbrun.NOTEBOOKS
                if n.removesuffix(".ipynb") in case.get("classname", "") + case.get("file", "")
            ),
            None,
        )
        if notebook is None or not name.startswith("Cell "):
            continue
        times.setdefault(notebook, {})[int(name.split()[1])] = float(case.get("time", 0))
    return {nb: [cells[i] for i in sorted(cells)] for nb, cells in times.items()}


def test_every_notebook_passes_nbval(figures: dict[str, str]) -> None:
    root = nbrun.reachable_dir("pgcloud-nb-nbval-")
    home, work = root / "sandbox", root / "notebooks"
    (root / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
    junit = root / "nbval.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(work),
        "--nbval-lax",
        "--nbval-current-env",
        f"--nbval-sanitize-with={nbrun.SANITIZE}",
        "--nbval-cell-timeout=300",
        "-c",
        str(root / "pytest.ini"),
        f"--rootdir={root}",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        "-q",
        "-rfE",
        "--color=no",
    ]
    env = nbrun.clean_env(PGCLOUD_SANDBOX_HOME=str(home))
    started = time.monotonic()
    try:
        nbrun.copy_notebooks(work, expected=True)
        run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1700)
        elapsed = time.monotonic() - started
        out = run.stdout + run.stderr
        summary = [line for line in out.splitlines() if line.strip()][-1:]
        print("\n".join(summary))
        assert run.returncode == 0, f"nbval failed (exit {run.returncode}):\n{out[-12000:]}"
        times = _cell_times(junit)
    finally:
        Sandbox(home).stop()
        shutil.rmtree(root, ignore_errors=True)

    assert sorted(times) == sorted(nbrun.NOTEBOOKS), f"nbval ran {sorted(times)}"
    name, cell_id = nbrun.FIRST_RUNNING
    ids = [c.id for c in nbrun.code_cells(nbformat.read(nbrun.NOTEBOOK_DIR / name, 4))]
    first_running = sum(times[name][: ids.index(cell_id) + 1])
    figures["Time for the full notebook suite in CI"] = (
        f"{elapsed:.0f} s for {len(nbrun.NOTEBOOKS)} notebooks under nbval "
        f"(sandbox start included; {summary[0] if summary else ''})"
    )
    figures["Time to first running service in the quickstart"] = (
        f"{first_running:.1f} s from kernel start to `running`, the sandbox started from nothing"
    )
    for notebook, cells in times.items():
        figures[f"  {notebook}"] = f"{sum(cells):.0f} s"
