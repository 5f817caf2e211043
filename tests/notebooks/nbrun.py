"""Shared by the notebook tests: which notebooks, a clean environment, expected outputs,
and running a notebook with nbclient while recording every secret the API sent.

The notebooks are committed without outputs (tests/notebooks/test_committed.py), so the
outputs nbval compares for the cells tagged ``nbval-check-output`` live beside them in
``expected.json``, keyed by notebook and cell id. :func:`with_expected` puts them into a
copy of the notebook, the reference nbval reads; ``python tests/notebooks/update_expected.py``
rewrites them from a fresh run on the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = (
    "01-quickstart.ipynb",
    "02-crud-lifecycle.ipynb",
    "03-config-tuning.ipynb",
    "04-metrics-live-charts.ipynb",
    "05-fleet-analysis.ipynb",
    "06-fleet-history.ipynb",
)
CHECK_TAG = "nbval-check-output"
EXPECTED = HERE / "expected.json"
SANITIZE = HERE / "sanitize.cfg"
# Where the quickstart's first service reads "running" (the figure "time to first running service").
FIRST_RUNNING = ("01-quickstart.ipynb", "wait")

# libpq's variables: a developer's own would steer the notebooks' psql and pgbench elsewhere.
_LIBPQ = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSERVICE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGPASSFILE",
    "DATABASE_URL",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any API key, sandbox home or libpq target.

    Notebooks run by the tests must find no cloud credentials: with none they use
    the sandbox the test chose (through ``extra``), never a developer's real account.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLICKHOUSE_") and k != "PGCLOUD_SANDBOX_HOME" and k not in _LIBPQ
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def reachable_dir(prefix: str) -> Path:
    """A fresh folder under the system temp dir that the PostgreSQL user can traverse.

    (pytest's ``tmp_path`` is mode 0700 under a 0700 parent: no good for a sandbox
    home, whose clusters run as the unprivileged ``postgres`` user.)
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def read(name: str) -> NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def code_cells(nb: NotebookNode) -> list[NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def checked(nb: NotebookNode) -> list[NotebookNode]:
    """The cells whose output nbval compares (in --nbval-lax mode: only these)."""
    return [c for c in code_cells(nb) if CHECK_TAG in c.metadata.get("tags", [])]


# -- sanitizing -------------------------------------------------------------------------------


def sanitize_patterns() -> list[tuple[str, str]]:
    # nbval's own reading of the file (nbval.plugin.get_sanitize_patterns).
    text = SANITIZE.read_text("utf-8")
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)


def sanitize(text: str, patterns: Iterable[tuple[str, str]] | None = None) -> str:
    for regex, replace in patterns if patterns is not None else sanitize_patterns():
        text = re.sub(regex, replace, text)
    return text


# -- expected outputs -------------------------------------------------------------------------

# Output parts nbval never compares (nbval.plugin.IPyNbFile.skip_compare, without nbdime).
_SKIPPED = {"application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}


def comparable(outputs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Outputs as stored in expected.json: sanitized, without the parts nbval skips."""
    patterns = sanitize_patterns()
    out: list[dict[str, Any]] = []
    for o in outputs:
        kind = o["output_type"]
        if kind == "stream":
            if out and out[-1]["output_type"] == "stream" and out[-1]["name"] == o["name"]:
                out[-1]["text"] += sanitize(o["text"], patterns)  # nbval coalesces streams too
            else:
                out.append(
                    {
                        "output_type": "stream",
                        "name": o["name"],
                        "text": sanitize(o["text"], patterns),
                    }
                )
        elif kind in ("execute_result", "display_data"):
            data = {
                k: sanitize(v if isinstance(v, str) else "".join(v), patterns)
                for k, v in o["data"].items()
                if k not in _SKIPPED
            }
            if data:
                out.append({"output_type": kind, "data": data})
        else:
            raise ValueError(f"a checked cell must not produce a {kind!r} output")
    return out


def load_expected() -> dict[str, dict[str, list[dict[str, Any]]]]:
    data: dict[str, dict[str, list[dict[str, Any]]]] = json.loads(EXPECTED.read_text("utf-8"))
    return data


def with_expected(name: str, expected: Mapping[str, list[dict[str, Any]]]) -> NotebookNode:
    """The notebook with the expected outputs in its checked cells, as nbval's reference.

    nbval compares only cells that have been run (an execution count), so each
    checked cell gets one; the others stay as committed: no outputs, not run.
    """
    nb = read(name)
    for count, cell in enumerate(checked(nb), start=1):
        if cell.id not in expected:
            raise KeyError(f"{name}: no expected output for checked cell {cell.id!r}")
        cell.execution_count = count
        cell.outputs = [nbformat.from_dict(_stored(o, count)) for o in expected[cell.id]]
    nbformat.validate(nb)
    return nb


def _stored(output: Mapping[str, Any], count: int) -> dict[str, Any]:
    """An expected output in the notebook format (metadata, execution count)."""
    if output["output_type"] == "stream":
        return dict(output)
    extra = {"execution_count": count} if output["output_type"] == "execute_result" else {}
    return {**output, "metadata": {}, **extra}


def copy_notebooks(dest: Path, *, expected: bool) -> list[Path]:
    """Copy the notebooks to ``dest`` (with nbval's references when ``expected``)."""
    dest.mkdir(parents=True, exist_ok=True)
    table = load_expected() if expected else {}
    paths = []
    for name in NOTEBOOKS:
        target = dest / name
        if expected:
            nbformat.write(with_expected(name, table.get(name, {})), target)
        else:
            shutil.copy(NOTEBOOK_DIR / name, target)
        paths.append(target)
    return paths


# -- running with nbclient, recording secrets ---------------------------------------------------

# Runs first in the kernel: every request and answer that goes through httpx (the
# client, its widgets and charts, from any thread) is searched for the two secret
# fields. This is independent of how the client stores them.
_RECORD = r"""
import json as _json
import httpx as _httpx

_pgcloud_seen = set()

def _pgcloud_walk(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("password", "connectionString") and isinstance(value, str) and value:
                _pgcloud_seen.add(value)
            else:
                _pgcloud_walk(value)
    elif isinstance(obj, list):
        for value in obj:
            _pgcloud_walk(value)

_pgcloud_send = _httpx.Client.send

def _pgcloud_recording_send(self, request, *args, **kwargs):
    try:
        _pgcloud_walk(_json.loads(request.content or b"null"))
    except ValueError:
        pass
    response = _pgcloud_send(self, request, *args, **kwargs)
    if "json" in response.headers.get("content-type", ""):
        response.read()
        try:
            _pgcloud_walk(response.json())
        except ValueError:
            pass
    return response

_httpx.Client.send = _pgcloud_recording_send
"""

# Runs last: writes what was recorded, plus every secret the package registered for
# redaction (API key secrets, chosen passwords), to a file; prints nothing.
_DUMP = r"""
try:
    import pgcloud_nb.redaction as _pgcloud_redaction
    _pgcloud_seen |= set(getattr(_pgcloud_redaction, "_known", ()))
except ImportError:
    pass
with open({path!r}, "w") as _out:
    _json.dump(sorted(_pgcloud_seen), _out)
"""


def execute(
    path: Path, env: Mapping[str, str], secrets_file: Path, timeout: int = 600
) -> NotebookNode:
    """Run the notebook at ``path`` in its folder (errors kept as outputs, every cell run).

    Returns the executed notebook without the two recording cells; the secrets the
    kernel saw are in ``secrets_file`` (a JSON list).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    first = nbformat.v4.new_code_cell(_RECORD)
    last = nbformat.v4.new_code_cell(_DUMP.format(path=str(secrets_file)))
    nb.cells = [first, *nb.cells, last]
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        record_timing=True,
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(env))
    for cell in (first, last):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            raise RuntimeError(f"recording cell failed: {errors[0].ename}: {errors[0].evalue}")
    nb.cells = nb.cells[1:-1]
    return nb
