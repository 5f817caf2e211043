"""Servers and folders made by an older sandbox, brought under today's access rules at start.

Older versions trusted the unix socket (``trust`` in ``pg_hba.conf``), put the
sockets of deep homes in a predictable ``/tmp/pgcloud-nb-<uid>-s-<hash>``
folder that anyone could have made first, and left ``.backups`` and CA files
readable by all. Servers outlive the sandbox, so some of them may still run
that way when a new sandbox starts; :func:`harden_clusters` runs before it
resumes them:

- every folder and file below the clusters folder loses its group and other
  permissions, and ``.backups`` becomes the server user's, 0700;
- every data folder, and every base backup, gets today's ``pg_hba.conf`` and
  ``pg_ident.conf``; a running server re-reads them at once (SIGHUP);
- a running server that listens anywhere but its private socket folder is
  stopped (fast, nothing lost): resuming starts it again with today's settings;
- templates of the older layout are removed.

The roles follow at the server's next start or session (:mod:`postgres.roles`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
from pathlib import Path

from pgcloud_nb.sandbox.postgres import access, datadir, private, process
from pgcloud_nb.sandbox.postgres.cluster import Cluster
from pgcloud_nb.sandbox.postgres.osuser import pg_user, write_if_changed

__all__ = ["harden_clusters"]

log = logging.getLogger("pgcloud_nb.sandbox")

LEGACY_SOCKETS = "/tmp/pgcloud-nb-*-s-*"  # where older versions put deep homes' sockets


def harden_clusters(clusters_dir: Path) -> int:
    """Apply the module docstring to every server below ``clusters_dir``; returns how
    many running servers had to be stopped."""
    real = Path(clusters_dir).resolve()
    if not real.is_dir():
        return 0
    _private_backups(real / ".backups")
    for entry in sorted(real.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        # The template folder itself stays crossable (0710) for initdb as the server's user.
        for tree in entry.iterdir() if entry.name == ".template" else [entry]:
            if tree.is_dir() and not tree.is_symlink():
                private.tighten_tree(tree)
    if (real / ".template").is_dir():
        datadir.drop_stale_templates(real / ".template")
    for hba in real.glob(".backups/*/base/*/pg_hba.conf"):
        write_if_changed(hba, access.hba_of(hba.parent))  # the access list it was taken with
        write_if_changed(hba.with_name("pg_ident.conf"), access.ident())
    return sum(_harden(Cluster(pgdata.parent, 0)) for pgdata in sorted(real.glob("*/pgdata")))


def _private_backups(folder: Path) -> None:
    """``.backups``, made by older versions as root's 0755: the server user's, 0700."""
    user = pg_user()
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, user.pw_uid, user.pw_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _harden(cluster: Cluster) -> bool:
    """Today's access files for one server; True if it ran and had to be stopped."""
    changed = cluster.write_access()
    pid = cluster.postmaster_pid()
    if pid is None:
        return False
    listening = process.listening_in(cluster.pgdata)
    if listening is not None and listening != cluster.socket_dir:
        log.warning(
            "%s listens in %s, not its private socket folder: stopping it to restart it there",
            cluster.root.name,
            listening,
        )
        cluster.stop("fast")
        with contextlib.suppress(OSError):  # an older version's folder, now empty: ours to drop
            if listening.match(LEGACY_SOCKETS) and stat.S_ISDIR(os.lstat(listening).st_mode):
                shutil.rmtree(listening)
        return True
    if changed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)  # pg_hba.conf and pg_ident.conf are read on reload
    return False
