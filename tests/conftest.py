"""Shared fixtures: real sandboxes in throwaway homes, and the run's figures.

Three flavours, each started once per session: ``sandbox`` with the rate limit
off (most tests), ``limited_sandbox`` with the real API's 10 requests per 10 s,
and ``faulty_sandbox`` where 20% of answers fail (500/503/429/dropped).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FIGURES: dict[str, str] = {}


@pytest.fixture
def figures() -> dict[str, str]:
    """Name → value (with its unit): printed in the terminal summary, kept in test-artifacts/."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("pgcloud-nb figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "figures.json").write_text(json.dumps(FIGURES, indent=1) + "\n")


def _start(tmp_root: Path, name: str, **knobs: object) -> tuple[Sandbox, SandboxInfo]:
    home = tmp_root / name
    settings = Settings(home=home, sample_interval=2.0, **knobs)  # type: ignore[arg-type]
    sb = Sandbox(home, settings)
    return sb, sb.start()


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pgcloud-nb-tests-"))
    root.chmod(0o755)
    yield root
    # As root the clusters live outside the home (a link to a /tmp folder the PostgreSQL
    # user can reach): remove those too, or every run leaves its clusters behind.
    for link in root.glob("*/clusters"):
        target = link.resolve()
        if link.is_symlink() and target.name.startswith("pgcloud-nb-"):
            shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(sandbox_root: Path) -> Iterator[SandboxInfo]:
    sb, info = _start(sandbox_root, "main", rate_limit=0)
    yield info
    sb.stop()


@pytest.fixture(scope="session")
def limited_sandbox(sandbox_root: Path) -> Iterator[SandboxInfo]:
    sb, info = _start(sandbox_root, "limited", rate_limit=10, rate_window=10.0)
    yield info
    sb.stop()


@pytest.fixture(scope="session")
def faulty_sandbox(sandbox_root: Path) -> Iterator[SandboxInfo]:
    faults = {"500": 0.05, "503": 0.05, "429": 0.05, "drop": 0.05}
    sb, info = _start(sandbox_root, "faulty", rate_limit=0, faults=faults, seed=7)
    yield info
    sb.stop()


@pytest.fixture(scope="module")
def pg(sandbox: SandboxInfo) -> Iterator[Client]:
    """A client on the ``sandbox`` with no request budget (the limit is off there too)."""
    client = pgcloud_nb.connect(
        api_key=sandbox.key_id,
        api_secret=sandbox.key_secret,
        org_id=sandbox.org_id,
        base_url=sandbox.url,
        budget=Budget.unlimited(),
    )
    yield client
    client.close()


@pytest.fixture
def api(sandbox: SandboxInfo) -> Iterator[httpx.Client]:
    """A bare httpx client on the sandbox, for testing the HTTP API itself."""
    with httpx.Client(
        base_url=f"{sandbox.url}/v1/organizations/{sandbox.org_id}",
        auth=(sandbox.key_id, sandbox.key_secret),
        timeout=60,
    ) as client:
        yield client
