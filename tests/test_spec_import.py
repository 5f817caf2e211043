"""The sandbox server starts without importing jsonschema; validation loads it on its own.

jsonschema's import builds rfc3987-syntax's grammar (seconds of CPU) when JupyterLab's
dependencies are installed, so :mod:`pgcloud_nb.specrules` imports it on first use and
the server loads it in a thread as it starts (``wire.prepare_validation``). Each check
runs in a fresh interpreter: this one has imported jsonschema long ago.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

APP_IMPORT = """
import sys
import pgcloud_nb.sandbox.api.app
import pgcloud_nb.widgets
print(sorted(m for m in ("jsonschema", "referencing") if m in sys.modules))
"""

PREPARED = """
import sys
from pgcloud_nb import spec
from pgcloud_nb.sandbox.api.wire import prepare_validation
prepare_validation().join(timeout=300)
print("jsonschema" in sys.modules)
body = {"name": "n", "tags": [{"key": "k!", "value": "v"}]}
print(spec.validate_body("PostgresServicePostRequest", body))
"""


def _run(code: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_the_server_and_the_widgets_import_no_validator() -> None:
    assert _run(APP_IMPORT) == ["[]"]


def test_prepare_validation_loads_it_and_bodies_are_checked_as_before() -> None:
    loaded, errors = _run(PREPARED)
    assert loaded == "True"
    # The spec's own rules, through jsonschema: a tag key its pattern refuses (the
    # ECMA-262 pattern rule of specrules) and a required field, each named.
    assert "field='tags[0].key', message=\"'k!' is not a valid value\"" in errors
    assert "field='provider', message='is required'" in errors
