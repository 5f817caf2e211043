"""One real PostgreSQL server per sandbox service: make, start, stop, configure, remove.

Why it looks like this:

- **Speed.** A create must reach ``running`` in ≤ 3 s and a restart take ≤ 1 s
  (the product's figures) on a small box. ``initdb`` alone costs about a second,
  so :meth:`Cluster.init` copies a template data folder made once per set of
  binaries (``template_dir``, see :mod:`postgres.datadir`) and then writes fresh
  certificates and settings. The postmaster itself is started and stopped by
  :mod:`postgres.process`.
- **Root.** PostgreSQL refuses to run as root, so as root every PostgreSQL
  program runs as an unprivileged user who owns the service folder
  (:mod:`postgres.osuser`, which also makes the clusters folder reachable by that user).
- **Adoption.** Servers outlive the sandbox process (they run in their own
  session). A new :class:`Cluster` for the same folder finds its server through
  ``postmaster.pid``, checking that the pid really is that folder's postmaster.
- **Who may reach it.** The API's user (``postgres``) over TLS with its password,
  and is no PostgreSQL superuser (:mod:`postgres.roles`); the sandbox through
  the private socket by peer authentication (:mod:`postgres.access`,
  :mod:`postgres.sessions`); nobody else.
- **Secrets.** Passwords reach the server only as SCRAM verifiers computed
  client-side (:mod:`postgres.passwords`), so the clear password is in no log.

Layout of a service folder (``root``, 0700, the server's user's)::

    pgdata/            the data folder; server.crt/server.key, pg_hba.conf, pg_ident.conf,
                       pgcloud-base.conf (sandbox-managed settings) and pgcloud.conf
                       (user settings) live here
    socket/            unix socket (0700), unless the path is too long for one
                       (:func:`postgres.private.socket_dir`)
    log/               startup.log (stderr before the log collector) and jsonlog files
    ca.pem             the service's CA certificate
    pgcloud.started.conf  the user settings of its last start (``conffiles.starting``)

The settings files are written by :mod:`postgres.conffiles` and judged by
:mod:`postgres.confcheck`; the exceptions live in :mod:`pgcloud_nb.sandbox.errors`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import (
    access,
    binaries,
    certs,
    confcheck,
    conffiles,
    datadir,
    osuser,
    passwords,
    private,
    process,
    roles,
    sessions,
)
from pgcloud_nb.sandbox.postgres.conffiles import BASE_CONF, USER_CONF, USER_HEADER, render_conf
from pgcloud_nb.sandbox.postgres.osuser import chown_tree, write_if_changed, write_owned
from pgcloud_nb.sandbox.postgres.passwords import scram_verifier

__all__ = ["Cluster", "find_bindir", "free_port", "stop_all"]

FIRST_START = ".first-start.json"  # what start() still has to do once: set the password


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (never 5432, the system server's port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 5432:
            return port


# ---------------------------------------------------------------------------- locks

_cluster_locks: dict[Path, threading.RLock] = {}
_cluster_locks_guard = threading.Lock()


def _lock_for(root: Path) -> threading.RLock:
    """One lock per service folder: two threads must not start or reconfigure it at once."""
    with _cluster_locks_guard:
        return _cluster_locks.setdefault(root, threading.RLock())


# ---------------------------------------------------------------------------- the cluster


class Cluster:
    """One service's PostgreSQL server, living in ``root``. All methods block."""

    def __init__(
        self, root: Path, port: int, *, bindir: Path | None = None, major: int | None = None
    ) -> None:
        # Resolved once: PostgreSQL must get real paths (a symlinked home may sit in a 0700
        # folder the server's user cannot cross).
        self._root = Path(root).resolve()
        self._port = int(port)
        self._bindir = bindir
        self._major = major  # the postgresVersion asked for: what a new data folder gets
        self._lock = _lock_for(self._root)

    def __repr__(self) -> str:
        return f"Cluster({str(self._root)!r}, port={self._port})"

    # -- paths

    @property
    def root(self) -> Path:
        return self._root

    @property
    def port(self) -> int:
        return self._port

    @property
    def pgdata(self) -> Path:
        return self._root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return private.socket_dir(self._root)

    @property
    def log_dir(self) -> Path:
        return self._root / "log"

    @property
    def bindir(self) -> Path:
        """The binaries of the major that made the data folder (see ``binaries.for_node``);
        before it exists, those of the major asked for, or the nearest one."""
        if self._bindir is not None:
            return self._bindir
        bindir = find_bindir(self._major, self.pgdata)
        if binaries.datadir_major(self.pgdata) is not None:
            self._bindir = bindir  # made: fixed from now on
        return bindir

    # -- making

    def init(
        self,
        password: str,
        *,
        hostnames: list[str],
        template_dir: Path | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Make the data folder, certificates and settings; does not start the server.

        ``extra`` adds sandbox-managed settings to the base file (WAL archiving,
        replication: see :mod:`pgcloud_nb.sandbox.postgres.replication`).
        """
        if self.pgdata.exists():
            raise EngineError(f"{self.pgdata} already exists")
        self.init_from(lambda pgdata: datadir.make(self.bindir, pgdata, template_dir), extra or {})
        certs.install(self._root, self.pgdata, hostnames)
        write_owned(self.pgdata / USER_CONF, render_conf({}, USER_HEADER))
        main = self.pgdata / "postgresql.conf"
        # Later lines win: sandbox settings override initdb's, user settings override both.
        includes = f"\ninclude '{BASE_CONF}'\ninclude_if_exists '{USER_CONF}'\n"
        write_owned(main, main.read_text() + includes)
        write_owned(self._root / FIRST_START, json.dumps({"verifier": scram_verifier(password)}))

    def init_from(self, make_pgdata: Callable[[Path], None], extra: dict[str, str]) -> None:
        """Make the data folder with ``make_pgdata(pgdata)`` (a copy of a base backup, or
        pg_basebackup of a primary: it already holds the settings includes and the
        user's pgcloud.conf), then write this node's own base settings.

        Certificates are the caller's choice: :meth:`install_certificates` for a new
        service, :meth:`copy_identity` for a node of the same service.
        """
        if self.pgdata.exists():
            raise EngineError(f"{self.pgdata} already exists")
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        chown_tree(self._root)
        make_pgdata(self.pgdata)
        chown_tree(self.pgdata)
        self.log_dir.mkdir(mode=0o700, exist_ok=True)
        chown_tree(self.log_dir)
        private.ensure_socket_dir(self._root)
        self.write_base_conf(extra)

    def write_base_conf(self, extra: dict[str, str]) -> bool:
        """(Re)write who may connect and the sandbox-managed settings; True when changed.

        The caller reloads or restarts a running server (archive_mode needs a restart).
        """
        settings = {**conffiles.base_settings(self._port, self.socket_dir, self.log_dir), **extra}
        text = render_conf(settings, "managed by pgcloud-nb; not user settings")
        return write_if_changed(self.pgdata / BASE_CONF, text) | self.write_access()

    def write_access(self, sources: list[str] | None = None) -> bool:
        """(Re)write pg_hba.conf and pg_ident.conf (:mod:`postgres.access`); True when changed.
        ``sources`` (from the IP access list) are recorded, and kept when not given."""
        hba = write_if_changed(self.pgdata / "pg_hba.conf", access.hba_of(self.pgdata, sources))
        return write_if_changed(self.pgdata / "pg_ident.conf", access.ident()) | hba

    def set_signal(self, kind: str | None) -> None:
        """Leave exactly one recovery signal file: "standby", "recovery" or none."""
        for name in ("standby", "recovery"):
            path = self.pgdata / f"{name}.signal"
            if name == kind:
                write_owned(path, "")
            else:
                path.unlink(missing_ok=True)

    def reload(self) -> None:
        """SIGHUP, what ``pg_reload_conf()`` sends, needs no session: a server still
        recovering from a crash (taking no connections yet) rereads its files too."""
        process.signal_reload(self.pgdata)

    # -- running

    def postmaster_pid(self) -> int | None:
        """The pid of this folder's live postmaster, or None."""
        return osuser.postmaster_pid(self.pgdata)

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 30) -> None:
        """Start the server; return once it accepts connections (then set a pending password).

        A server made before the sandbox had its own roles gets them here
        (:func:`postgres.roles.ensure`), running or not.
        """
        with self._lock:
            if not self.pgdata.is_dir():
                raise EngineError(f"{self.pgdata} does not exist; call init() first")
            if not self.is_running():
                self._check_version()
                self._launch(timeout)
            with self.superuser() as conn:
                roles.ensure(conn, self.superuser)
                first = self._root / FIRST_START
                if first.exists():  # kept until it worked, so a failed first start retries it
                    passwords.alter_password(conn, json.loads(first.read_text())["verifier"])
                    first.unlink()

    def _check_version(self) -> None:
        try:
            made = int((self.pgdata / "PG_VERSION").read_text().strip())
        except (OSError, ValueError) as e:
            raise EngineError(f"{self.pgdata} is not a PostgreSQL data folder: {e}") from e
        have = binaries.server_major(self.bindir)
        if made != have:
            raise EngineError(
                f"{self.pgdata} was made by PostgreSQL {made} but {self.bindir} is {have}; "
                f"set ${binaries.ENV_BINDIR} to a PostgreSQL {made} bin folder"
            )

    def _launch(self, timeout: float) -> None:
        # The socket's folder is checked every time: private, ours, no symlink. A stale
        # lock file (kill -9, reboot) would make the postmaster refuse to start.
        sockets = private.ensure_socket_dir(self._root)
        (sockets / f".s.PGSQL.{self._port}.lock").unlink(missing_ok=True)
        with conffiles.starting(self.pgdata):  # once ready: the settings it started with
            log_offset = process.launch(self.bindir, self.pgdata, self.log_dir)
            process.wait_ready(self.pgdata, self.log_dir, timeout, log_offset)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's stderr and newest log file, for error messages."""
        return process.log_tail(self.log_dir, lines)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (smart, fast or immediate); nothing to do when it is not running."""
        with self._lock:
            process.wait_stopped(process.signal_stop(self.pgdata, mode))

    def restart(self, timeout: float = 30) -> None:
        """Stop (fast) and start again, so settings that need a restart take effect."""
        with self._lock:
            self.stop("fast")
            self.start(timeout)

    def start_time(self) -> dt.datetime:
        with self.connect() as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert row is not None
        started: dt.datetime = row[0]
        return started

    # -- sessions

    def connect(self, dbname: str = "postgres", **kw: Any) -> psycopg.Connection[Any]:
        """An autocommit session of the sandbox's monitoring role over the unix socket:
        statistics and settings, no more rights than the service's own user
        (:mod:`postgres.sessions`)."""
        return sessions.monitor(self.socket_dir, self._port, self._lock, dbname, **kw)

    def superuser(self, dbname: str = "postgres", **kw: Any) -> psycopg.Connection[Any]:
        """An autocommit session of the internal superuser, seeing ``pg_catalog`` only:
        for the engine's own work (:mod:`postgres.sessions`)."""
        return sessions.superuser(self.socket_dir, self._port, self._lock, dbname, **kw)

    def set_password(self, password: str) -> None:
        """Set the API user's password; only its SCRAM verifier is sent to the server."""
        with self.superuser() as conn:
            passwords.alter_password(conn, scram_verifier(password))

    # -- settings

    def apply_config(self, settings: dict[str, str]) -> list[str]:
        """Replace the user settings, reload, and return the names still needing a restart.

        A value PostgreSQL refuses raises :class:`ConfigValueError`; the previous
        file is then back in place and the server never loaded the refused one.
        """
        applied, _ = confcheck.split_supported(self.bindir, settings)
        confcheck.check_values(self.bindir, self.pgdata, applied)
        with self._lock:
            return conffiles.apply_user_conf(self.pgdata, self.bindir, applied, self.superuser)

    def pending_restart(self) -> list[str]:
        with self.connect() as conn:
            return conffiles.pending_restart(conn)

    def install_certificates(self, hostnames: list[str]) -> None:
        """A new CA and server certificate (a restored service or replica: new names)."""
        with self._lock:
            certs.install(self._root, self.pgdata, hostnames)

    def copy_identity(self, other: Cluster) -> None:
        """Serve ``other``'s certificate: an HA standby answers for the same names, so
        the service's CA keeps verifying after a switchover."""
        certs.copy_identity(other.root, other.pgdata, self._root, self.pgdata)

    def reissue_certificate(self, hostnames: list[str]) -> None:
        """New CA and server certificate for new names (a rename); a reload makes
        new connections use them without a restart."""
        with self._lock:
            certs.install(self._root, self.pgdata, hostnames)
            if self.is_running():
                self.reload()

    def ca_pem(self) -> str:
        return (self._root / certs.CA_FILE).read_text()

    def remove(self) -> None:
        """Stop at once and delete every file of the cluster."""
        with self._lock:
            self.stop("immediate")
            shutil.rmtree(self._root, ignore_errors=True)
            if self.socket_dir != self._root / "socket":
                shutil.rmtree(self.socket_dir, ignore_errors=True)


def _clusters_below(clusters_dir: Path) -> Iterator[Cluster]:
    for pidfile in sorted(Path(clusters_dir).glob("*/pgdata/postmaster.pid")):
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:  # stopped meanwhile
            continue
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 0
        yield Cluster(pidfile.parent.parent, port)


def find_bindir(major: int | None = None, pgdata: Path | None = None) -> Path:
    """The binaries for ``major`` (or for the data folder ``pgdata``); EngineError if none."""
    try:
        if pgdata is not None:
            return binaries.for_node(pgdata, major).bindir
        return binaries.find_bindir(major)
    except PgBinariesNotFound as e:
        raise EngineError(str(e)) from e


def stop_all(clusters_dir: Path, mode: str = "fast") -> int:
    """Stop every server below ``clusters_dir`` (all signalled first, then awaited).

    Works without the API server: `sandbox stop` uses it after a crash. Returns how
    many were running.
    """
    pids = [process.signal_stop(c.pgdata, mode) for c in _clusters_below(clusters_dir)]
    for pid in pids:
        process.wait_stopped(pid)
    return sum(pid is not None for pid in pids)
