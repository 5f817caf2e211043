"""Making a service's data folder: ``initdb``, or a copy of a template made once.

``initdb`` alone costs about a second, and a create must reach ``running`` in
≤ 3 s on a small box, so :func:`make` copies a pristine data folder made once
per set of binaries (in ``template_dir``, reachable by the PostgreSQL user) and
falls back to ``initdb`` only without one. Both have the pg_stat_statements
extension in the ``postgres`` database, as on the real service, and the roles
of :mod:`postgres.roles`: the bootstrap superuser is the sandbox's own
``pgcloud_admin``, and ``postgres`` (the API's user) is not a superuser. Certificates and
settings are written afterwards by :meth:`~pgcloud_nb.sandbox.postgres.cluster.Cluster.init`.

Split out of :mod:`postgres.cluster`, which calls :func:`make` from ``Cluster.init``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

from pgcloud_nb.sandbox.errors import EngineError
from pgcloud_nb.sandbox.postgres import binaries, roles
from pgcloud_nb.sandbox.postgres.access import ADMIN
from pgcloud_nb.sandbox.postgres.osuser import chown_tree, pg_env, run_pg, usable_clusters_dir

__all__ = ["REVISION", "copy", "drop_stale_templates", "initdb", "make"]

# Part of a template's name: a template made by an older layout (bootstrap superuser
# ``postgres``, trust in pg_hba.conf) is never copied again, and is removed.
REVISION = "r2"

_template_lock = threading.Lock()


def template(bindir: Path, template_dir: Path) -> Path:
    """A pristine data folder for ``bindir``, made once (initdb + pg_stat_statements)."""
    digest = hashlib.sha1(str(bindir).encode()).hexdigest()[:8]
    key = f"pg{binaries.server_major(bindir)}-{REVISION}-{digest}"
    with _template_lock:
        # initdb runs as the PostgreSQL user, so the folder must be reachable by it.
        folder = usable_clusters_dir(template_dir).resolve()
        drop_stale_templates(folder)
        ready = folder / key
        if ready.is_dir():
            return ready
        work = folder / f"{key}.tmp{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        chown_tree(work)
        initdb(bindir, work)
        try:
            work.rename(ready)  # atomic: a half-made template is never used
        except OSError:  # another sandbox process finished first
            shutil.rmtree(work, ignore_errors=True)
        return ready


def drop_stale_templates(folder: Path) -> None:
    """Remove the templates an older layout made in ``folder`` (see :data:`REVISION`)."""
    for old in folder.glob("pg*"):
        if old.is_dir() and not old.is_symlink() and f"-{REVISION}-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)


def initdb(bindir: Path, pgdata: Path) -> None:
    run_pg(
        [
            bindir / "initdb",
            "-D",
            pgdata,
            "-U",
            ADMIN,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--no-instructions",
        ],
        what="initdb",
    )
    # Single-user mode: no port, no password, no settings yet. Makes the pg_stat_statements
    # view exist in the postgres database, as on the real service, and the roles.
    statements = [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
        *roles.fresh_sql(binaries.server_major(bindir)),
    ]
    run_pg(
        [
            bindir / "postgres",
            "--single",
            "-D",
            pgdata,
            "-c",
            "shared_preload_libraries=",
            "postgres",  # the database
        ],
        what="creating pg_stat_statements and the roles",
        input="\n".join(statements) + "\n",
    )


def make(bindir: Path, pgdata: Path, template_dir: Path | None) -> None:
    """Make the data folder ``pgdata``: a copy of the template, or initdb without one."""
    if template_dir is None:
        pgdata.mkdir(mode=0o700)
        chown_tree(pgdata)
        initdb(bindir, pgdata)
    else:
        copy(template(bindir, Path(template_dir)), pgdata)


def copy(src: Path, pgdata: Path) -> None:
    """Copy a data folder (the template, or a base backup for a restore or replica)."""
    # cp -a keeps owners and modes and beats shutil.copytree; --sparse skips the
    # zeros of the preallocated WAL segment (less to write back on a busy disk).
    done = subprocess.run(
        ["cp", "-a", "--sparse=always", str(src), str(pgdata)], capture_output=True, env=pg_env()
    )
    if done.returncode:
        raise EngineError(f"copying {src} failed: {done.stderr.decode()}")
