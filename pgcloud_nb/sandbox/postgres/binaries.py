"""Find the PostgreSQL server binaries the sandbox runs each service with.

Each sandbox service is a real PostgreSQL server, so the sandbox needs a
folder holding ``initdb``, ``pg_ctl`` and ``postgres`` of one installation.
The places tried, in order:

1. ``$PGCLOUD_SANDBOX_PG_BINDIR`` (an explicit choice always wins; no fallback
   when it is wrong, so a typo is reported instead of silently ignored);
2. ``PATH``, when all three programs resolve to the same real folder (Debian
   links only some of them into /usr/local/bin or /usr/bin);
3. ``pg_config --bindir``;
4. ``/usr/lib/postgresql/<major>/bin``, highest major first (Debian/Ubuntu);
5. the binaries bundled in the PyPI ``pgserver`` package (PostgreSQL 16), for
   machines without a system PostgreSQL. It is located, not imported.

The error lists every place tried and why it was rejected.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from pgcloud_nb.sandbox.errors import PgBinariesNotFound

__all__ = ["ENV_BINDIR", "find_bindir", "server_major"]

ENV_BINDIR = "PGCLOUD_SANDBOX_PG_BINDIR"
REQUIRED = ("initdb", "pg_ctl", "postgres")


def _missing(bindir: Path) -> list[str]:
    return [p for p in REQUIRED if not os.access(bindir / p, os.X_OK)]


def _from_path() -> Path | str:
    found = {name: shutil.which(name) for name in REQUIRED}
    if not all(found.values()):
        return "not all of " + ", ".join(REQUIRED) + " are on PATH"
    # Resolve symlinks: /usr/local/bin/pg_ctl may point into /usr/lib/postgresql/15/bin.
    dirs = {Path(p).resolve().parent for p in found.values() if p}
    if len(dirs) != 1:
        return f"they resolve to different folders: {sorted(map(str, dirs))}"
    return dirs.pop()


def _from_pg_config() -> Path | str:
    exe = shutil.which("pg_config")
    if not exe:
        return "pg_config is not on PATH"
    try:
        out = subprocess.run(
            [exe, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"pg_config --bindir failed: {e}"
    return Path(out)


def _from_debian() -> Path | str:
    root = Path("/usr/lib/postgresql")
    majors = sorted(
        (int(p.name) for p in root.glob("*") if p.name.isdigit() and not _missing(p / "bin")),
        reverse=True,
    )
    return root / str(majors[0]) / "bin" if majors else f"no {root}/<major>/bin with all binaries"


def _from_pgserver() -> Path | str:
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return "the pgserver package is not installed"
    return Path(spec.origin).parent / "pginstall" / "bin"


def find_bindir() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``; see the module docstring."""
    if env := os.environ.get(ENV_BINDIR):
        bindir = Path(env).expanduser()
        if missing := _missing(bindir):
            raise PgBinariesNotFound(f"${ENV_BINDIR}={env} lacks executable {', '.join(missing)}")
        return bindir.resolve()
    tried: list[str] = [f"${ENV_BINDIR}: not set"]
    for label, probe in (
        ("PATH", _from_path),
        ("pg_config --bindir", _from_pg_config),
        ("/usr/lib/postgresql/*/bin", _from_debian),
        ("pgserver (PyPI)", _from_pgserver),
    ):
        found = probe()
        if isinstance(found, Path):
            if not (missing := _missing(found)):
                return found.resolve()
            found = f"{found} lacks {', '.join(missing)}"
        tried.append(f"{label}: {found}")
    raise PgBinariesNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Tried:\n  "
        + "\n  ".join(tried)
        + f"\nInstall PostgreSQL (e.g. apt-get install postgresql), `pip install pgserver`, "
        f"or set ${ENV_BINDIR}."
    )


@functools.lru_cache(maxsize=8)
def server_major(bindir: Path) -> int:
    """The major version of ``bindir/postgres``, e.g. 15 for "postgres (PostgreSQL) 15.8"."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise PgBinariesNotFound(f"{bindir}/postgres --version failed: {e}") from e
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if not m:
        raise PgBinariesNotFound(f"unexpected output from {bindir}/postgres --version: {out!r}")
    return int(m.group(1))
