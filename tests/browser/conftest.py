"""JupyterLab on a free port, in a temp dir, pointed at the test sandbox; and chromium.

The server gets a throwaway config, settings and workspace folder, so nothing
of the machine's own JupyterLab setup leaks in, and the news prompt is off.
Chromium is Debian's (``/usr/bin/chromium``), driven by the pip ``playwright``
package; ``playwright install`` is never needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pgcloud_nb.sandbox import SandboxInfo

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab(sandbox: SandboxInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("jupyter") is None:
        pytest.skip("jupyter is not installed")
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(HERE / "widgets.ipynb", root / "widgets.ipynb")
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # Every cell in the page, not only those near the view (JupyterLab 4 windows long
    # notebooks): the checks after Run All read every output.
    tracker = root / ".settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    token, port = secrets.token_hex(16), _free_port()
    # As `pgcloud-nb lab` does: the kernels get the sandbox's folder, never its key (nor
    # any cloud key of this machine), and connect() reads the key from that folder.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLICKHOUSE_")},
        "PGCLOUD_SANDBOX_HOME": str(sandbox.home),
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = root / "lab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={root / '.settings'}",
        f"--LabApp.workspaces_dir={root / '.workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Lab(url, token, root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if ARTIFACTS.exists():
            shutil.copy(log, ARTIFACTS / "jupyterlab.log")


# Module scope, not session: playwright's sync API keeps an asyncio loop running in
# this thread while it is open, which would break every later test that runs a loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # .ci/setup --test installs it; a missing browser must not pass as a skip.
        pytest.fail(f"{CHROMIUM} is missing (run .ci/setup --test, or apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
