"""No password or connection string ever reaches a notebook's outputs or saved widget state.

Each notebook runs top to bottom with nbclient, as a user would save it (outputs and
widget state included), against its own sandbox reached through environment
credentials (the path a cloud user takes). Which secrets to look for is not guessed:
a first, hidden cell wraps ``httpx.Client.send`` in the kernel and records every
``password`` and ``connectionString`` that any request or answer carried, from any
thread (the client, its widgets, its charts); a last hidden cell adds everything the
package registered for redaction (the API key's secret, passwords given to
``reset_password``) and writes the lot to a file. The sandbox never stores a
password (only its SCRAM verifier), so the API traffic is the one place to learn them.

Then the whole executed notebook (every output of every cell, every MIME type, and the
widget state nbclient saves in its metadata) is searched for each secret, in plain,
HTML-escaped, JSON-escaped and URL-encoded forms, and for the shape of a connection
string that carries a password. The test expects zero, and also checks that the
notebook ran without errors, deleted every service it created, and left no secret in
a file anyone but its owner can read.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import nbrun
import pytest
from nbformat import NotebookNode
from secretscan import findings

import pgcloud_nb
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.redaction import redact
from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def nb_sandbox() -> Iterator[SandboxInfo]:
    home = nbrun.reachable_dir("pgcloud-nb-secrets-") / "sandbox"
    sb = Sandbox(home, Settings(home=home, rate_limit=0, sample_interval=2.0))
    info = sb.start()
    yield info
    sb.stop()
    shutil.rmtree(home.parent, ignore_errors=True)


def _run(name: str, work: Path, info: SandboxInfo) -> tuple[NotebookNode, set[str]]:
    record = work.parent / "secrets.json"
    env = nbrun.clean_env(**info.env())
    nb = nbrun.execute(work / name, env, record)
    return nb, set(json.loads(record.read_text())) | {info.key_secret}


@pytest.mark.parametrize("name", nbrun.NOTEBOOKS)
def test_no_secret_in_outputs_or_widget_state(
    name: str, nb_sandbox: SandboxInfo, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(nbrun.NOTEBOOK_DIR / name, work / name)
    nb, secrets = _run(name, work, nb_sandbox)
    passwords = [s for s in secrets if "://" not in s and s != nb_sandbox.key_secret]
    assert passwords, "the recorder saw no password: the test would prove nothing"
    assert any("://" in s for s in secrets), "the recorder saw no connection string"
    found = findings(nb, secrets)
    assert not found, "secrets in the notebook:\n" + "\n".join(found)

    errors = [
        (c.id, o.ename, redact(str(o.evalue)))
        for c in nbrun.code_cells(nb)
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors, f"cells failed: {errors}"
    assert nb.metadata.get("widgets"), "no widget state was saved: the scan missed it"

    # Credentials written to files (the 0600 file, .env) are fine, if nobody else can read them.
    for path in work.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            text = path.read_text("utf-8", errors="replace")
            if any(s in text for s in secrets) and path.suffix != ".ipynb":
                assert path.stat().st_mode & 0o077 == 0, f"{path.name} holds a secret, not 0600"

    # Every service the notebook created is gone (or going).
    with pgcloud_nb.connect(
        nb_sandbox.key_id,
        nb_sandbox.key_secret,
        org_id=nb_sandbox.org_id,
        base_url=nb_sandbox.url,
        budget=Budget.unlimited(),
        env_file=None,
    ) as pg:
        left = [s.name for s in pg.list_services() if s.state != "deleting"]
    assert not left, f"services left behind: {left}"


def test_the_scan_finds_a_planted_leak(nb_sandbox: SandboxInfo, tmp_path: Path) -> None:
    """A control: a notebook that does leak, in an output and in a widget, is caught."""
    work = tmp_path / "work"
    work.mkdir()
    leak = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LEAK)])
    leak.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(leak, work / "leak.ipynb")
    nb, secrets = _run("leak.ipynb", work, nb_sandbox)
    assert not [o.ename for o in nb.cells[0].outputs if o.output_type == "error"]
    found = findings(nb, secrets)
    assert any("output" in f and "secret" in f for f in found), found
    assert any("widget state" in f for f in found), found
    assert any("shaped like a credential" in f for f in found), found
    assert not [f for f in found for s in secrets if s in f]  # findings never quote a secret


LEAK = """
import ipywidgets, pgcloud_nb
pg = pgcloud_nb.connect()
svc = pg.create_service(name="leak", region="us-east-1", size="r8gd.large")
print(svc.reveal_password())
ipywidgets.Text(value=svc.reveal_connection_string())
pg.wait(svc.id, progress=False)
pg.delete_service(svc.id)
pg.wait_gone(svc.id, progress=False)
"""
