"""Figures the notebook tests measure, printed at the end of the run (with or without -s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FIGURES: dict[str, str] = {}


@pytest.fixture
def figures() -> dict[str, str]:
    """Name → value (with its unit); shown in the terminal summary and kept in test-artifacts/."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("pgcloud-nb notebook figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "notebook-figures.json").write_text(json.dumps(FIGURES, indent=1) + "\n")
