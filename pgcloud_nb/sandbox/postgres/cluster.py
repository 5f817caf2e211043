"""One real PostgreSQL server per sandbox service: make, start, stop, configure, remove.

Why it looks like this:

- **Speed.** A create must reach ``running`` in ≤ 3 s and a restart take ≤ 1 s
  (the product's figures) on a small box. ``initdb`` alone costs about a second,
  so :meth:`Cluster.init` copies a template data folder made once per set of
  binaries (``template_dir``, see :mod:`postgres.datadir`) and then writes fresh
  certificates and settings. Start and stop signal the postmaster and poll
  ``postmaster.pid`` every 10 ms instead of going through ``pg_ctl -w`` (which
  polls every 100 ms).
- **Root.** PostgreSQL refuses to run as root, so as root every PostgreSQL
  program runs as an unprivileged user who owns the service folder
  (:mod:`postgres.osuser`, which also makes the clusters folder reachable by that user).
- **Adoption.** Servers outlive the sandbox process (they run in their own
  session). A new :class:`Cluster` for the same folder finds its server through
  ``postmaster.pid``, checking that the pid really is that folder's postmaster.
- **Secrets.** Passwords reach the server only as SCRAM verifiers computed
  client-side (:mod:`postgres.passwords`), so the clear password is in no log.

Layout of a service folder (``root``)::

    pgdata/            the data folder; server.crt/server.key, pgcloud-base.conf
                       (sandbox-managed settings) and pgcloud.conf (user settings) live here
    socket/            unix socket (0700): the only way in without a password
    log/               startup.log (stderr before the log collector) and jsonlog files
    ca.pem             the service's CA certificate

The settings files are rendered and checked by
:mod:`postgres.conffiles`; the exceptions live in
:mod:`pgcloud_nb.sandbox.errors`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import binaries, certs, conffiles, datadir, osuser, passwords
from pgcloud_nb.sandbox.postgres.conffiles import (
    BASE_CONF,
    HBA,
    USER_CONF,
    USER_HEADER,
    render_conf,
)
from pgcloud_nb.sandbox.postgres.datadir import SUPERUSER
from pgcloud_nb.sandbox.postgres.osuser import (
    POLL,
    as_pg_user,
    chown_tree,
    pg_env,
    proc_alive,
    read_pidfile,
    write_owned,
)
from pgcloud_nb.sandbox.postgres.passwords import scram_verifier

__all__ = ["Cluster", "check_settings", "find_bindir", "free_port", "stop_all"]

FIRST_START = ".first-start.json"  # what start() still has to do once: set the password
SOCKET_PATH_MAX = 100  # sockaddr_un holds 107 bytes; leave room for ".s.PGSQL.<port>"
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


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
        own = self._root / "socket"
        if len(str(own)) + len("/.s.PGSQL.65535") <= SOCKET_PATH_MAX:
            return own
        # Deep homes overflow sockaddr_un; a short, stable stand-in keeps adoption working.
        digest = hashlib.sha1(str(self._root).encode()).hexdigest()[:12]
        return Path(f"/tmp/pgcloud-nb-{os.geteuid()}-s-{digest}")

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
        self._write_certificates(hostnames)
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
        for d in (self.socket_dir, self.log_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            chown_tree(d)
        self.write_base_conf(extra)

    def write_base_conf(self, extra: dict[str, str]) -> bool:
        """(Re)write pg_hba.conf and the sandbox-managed settings; True when they changed.

        The caller reloads or restarts a running server (archive_mode needs a restart).
        """
        settings = {**conffiles.base_settings(self._port, self.socket_dir, self.log_dir), **extra}
        text = render_conf(settings, "managed by pgcloud-nb; not user settings")
        changed = False
        for path, data in ((self.pgdata / "pg_hba.conf", HBA), (self.pgdata / BASE_CONF, text)):
            try:
                same = path.read_text() == data
            except OSError:
                same = False
            if not same:
                write_owned(path, data)
                changed = True
        return changed

    def set_signal(self, kind: str | None) -> None:
        """Leave exactly one recovery signal file: "standby", "recovery" or none."""
        for name in ("standby", "recovery"):
            path = self.pgdata / f"{name}.signal"
            if name == kind:
                write_owned(path, "")
            else:
                path.unlink(missing_ok=True)

    def reload(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")

    # -- running

    def postmaster_pid(self) -> int | None:
        """The pid of this folder's live postmaster, or None."""
        return osuser.postmaster_pid(self.pgdata)

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 30) -> None:
        """Start the server; return once it accepts connections (then set a pending password)."""
        with self._lock:
            if not self.pgdata.is_dir():
                raise EngineError(f"{self.pgdata} does not exist; call init() first")
            if not self.is_running():
                self._check_version()
                self._wait_ready(timeout, self._launch())
            first = self._root / FIRST_START
            if first.exists():  # kept until it worked, so a failed first start retries it
                self._alter_password(json.loads(first.read_text())["verifier"])
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

    def _launch(self) -> int:
        """Start the postmaster in the background; returns where its stderr starts."""
        # Stale lock files (kill -9, reboot) whose pid now belongs to someone else would
        # make the postmaster refuse to start.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{self._port}.lock").unlink(missing_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        chown_tree(self.socket_dir)
        startup = self.log_dir / "startup.log"
        log_offset = startup.stat().st_size if startup.exists() else 0
        # The shell backgrounds the postmaster and exits: the server is nobody's child here,
        # sits in its own session (Ctrl-C on the sandbox does not reach it) and survives us.
        script = 'exec "$0" -D "$1" </dev/null >>"$2" 2>&1 &'
        try:
            subprocess.run(
                [
                    "/bin/sh",
                    "-c",
                    script,
                    str(self.bindir / "postgres"),
                    str(self.pgdata),
                    str(startup),
                ],
                check=True,
                cwd=str(self.pgdata),
                env=pg_env(),
                start_new_session=True,
                timeout=30,
                **as_pg_user(),
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise EngineError(f"could not launch {self.bindir / 'postgres'}: {e}") from e
        return log_offset

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        """Poll postmaster.pid until its status line says "ready" (PostgreSQL ≥ 10)."""
        deadline = time.monotonic() + timeout
        seen_pid = False
        while time.monotonic() < deadline:
            lines = read_pidfile(self.pgdata)
            if lines and len(lines) >= 8:
                seen_pid = True
                if not self.is_running():
                    break
                if lines[7].strip() == "ready":
                    return
            elif seen_pid or self._startup_failed(log_offset):
                break
            time.sleep(POLL)
        else:
            raise EngineError(
                f"server in {self._root} not ready after {timeout:g}s\n{self.log_tail()}"
            )
        raise EngineError(f"server in {self._root} failed to start\n{self.log_tail()}")

    def _startup_failed(self, log_offset: int) -> bool:
        # Before postmaster.pid exists, the only sign of an early exit is its stderr.
        try:
            with open(self.log_dir / "startup.log", "rb") as f:
                f.seek(log_offset)
                fresh = f.read()
        except FileNotFoundError:
            return False
        return b"FATAL:" in fresh or b"PANIC:" in fresh

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's stderr and newest log file, for error messages."""
        out: list[str] = []
        startup = self.log_dir / "startup.log"
        logs = sorted(self.log_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in [startup, *logs[-1:]]:
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if path.suffix == ".json":
                text = [_json_line(t) for t in text]
            out += [f"--- {path.name}", *text]
        return "\n".join(out) or "(no server log)"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (smart, fast or immediate); nothing to do when it is not running."""
        with self._lock:
            self._wait_stopped(self._signal_stop(mode))

    def _signal_stop(self, mode: str) -> int | None:
        if mode not in STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(STOP_SIGNALS)}, got {mode!r}")
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, STOP_SIGNALS[mode])
        return pid

    def _wait_stopped(self, pid: int | None, timeout: float = 60) -> None:
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while proc_alive(pid):
            if time.monotonic() > deadline:
                # A stuck shutdown: immediate mode, then kill, rather than hang the caller.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT if timeout > 0 else signal.SIGKILL)
                timeout, deadline = -1, time.monotonic() + 5
            time.sleep(POLL)

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
        """An autocommit superuser session over the unix socket (trusted: no password)."""
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 10)
        return psycopg.connect(
            host=str(self.socket_dir), port=self._port, user=SUPERUSER, dbname=dbname, **kw
        )

    def set_password(self, password: str) -> None:
        """Set the superuser password; only its SCRAM verifier is sent to the server."""
        self._alter_password(scram_verifier(password))

    def _alter_password(self, verifier: str) -> None:
        with self.connect() as conn:
            passwords.alter_password(conn, verifier)

    # -- settings

    def apply_config(self, settings: dict[str, str]) -> list[str]:
        """Replace the user settings, reload, and return the names still needing a restart.

        A value PostgreSQL refuses raises :class:`ConfigValueError`; the previous
        file is then back in place and the server never loaded the refused one.
        """
        applied, _ = conffiles.split_supported(self.bindir, settings)
        conffiles.check_values(self.bindir, self.pgdata, applied)
        with self._lock:
            return self._apply_config(applied)

    def _apply_config(self, settings: dict[str, str]) -> list[str]:
        path = self.pgdata / USER_CONF
        previous = path.read_text() if path.exists() else render_conf({}, USER_HEADER)
        write_owned(path, render_conf(settings, USER_HEADER))
        try:
            with self.connect() as conn:
                # pg_file_settings parses the files afresh in this session, so errors show
                # before the server loads them. A setting that merely needs a restart also
                # reads "could not be applied" there; `postgres -C` tells the two apart.
                flagged = conn.execute(
                    "SELECT name FROM pg_file_settings WHERE error IS NOT NULL AND sourcefile = %s",
                    [str(path)],
                ).fetchall()
                if flagged and (problem := conffiles.config_problem(self.bindir, self.pgdata)):
                    write_owned(path, previous)
                    raise ConfigValueError(problem[0] or flagged[0][0] or "", problem[1])
                return conffiles.reload_conf(conn)
        except psycopg.OperationalError as e:
            write_owned(path, previous)
            raise EngineError(f"server in {self._root} is not reachable: {e}") from e

    def pending_restart(self) -> list[str]:
        with self.connect() as conn:
            return conffiles.pending_restart(conn)

    def install_certificates(self, hostnames: list[str]) -> None:
        """A new CA and server certificate (a restored service or replica: new names)."""
        with self._lock:
            self._write_certificates(hostnames)

    def copy_identity(self, other: Cluster) -> None:
        """Serve ``other``'s certificate: an HA standby answers for the same names, so
        the service's CA keeps verifying after a switchover."""
        write_owned(self._root / "ca.pem", other.ca_pem(), 0o644)
        for name, mode in (("server.crt", 0o644), ("server.key", 0o600)):
            write_owned(self.pgdata / name, (other.pgdata / name).read_bytes(), mode)

    def _write_certificates(self, hostnames: list[str]) -> None:
        # A fresh CA each time: the CA key is never kept, so nothing can mint more certs.
        ca_cert, ca_key = certs.make_ca(f"{hostnames[0] if hostnames else 'sandbox'} CA")
        cert, key = certs.make_server_cert(ca_cert, ca_key, hostnames)
        write_owned(self._root / "ca.pem", ca_cert, 0o644)
        write_owned(self.pgdata / "server.crt", cert, 0o644)
        write_owned(self.pgdata / "server.key", key, 0o600)

    def reissue_certificate(self, hostnames: list[str]) -> None:
        """New CA and server certificate for new names (a rename); a reload makes
        new connections use them without a restart."""
        with self._lock:
            self._write_certificates(hostnames)
            if self.is_running():
                with self.connect() as conn:
                    conn.execute("SELECT pg_reload_conf()")

    def ca_pem(self) -> str:
        return (self._root / "ca.pem").read_text()

    def remove(self) -> None:
        """Stop at once and delete every file of the cluster."""
        with self._lock:
            self.stop("immediate")
            shutil.rmtree(self._root, ignore_errors=True)
            if self.socket_dir != self._root / "socket":
                shutil.rmtree(self.socket_dir, ignore_errors=True)


def _json_line(text: str) -> str:
    try:
        rec = json.loads(text)
    except ValueError:
        return text
    return f"{rec.get('error_severity', '?')}: {rec.get('message', '')}"


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


def check_settings(settings: dict[str, str], template_dir: Path, major: int | None = None) -> None:
    """ConfigValueError for a value this PostgreSQL refuses, before any service exists.

    Checked against the template data folder, so a create, restore or replica with
    a bad pgConfig gets its 400 at once instead of a server that never starts.
    """
    bindir = find_bindir(major)
    applied, _ = conffiles.split_supported(bindir, settings)
    if applied:
        conffiles.check_values(bindir, datadir.template(bindir, template_dir), applied)


def stop_all(clusters_dir: Path, mode: str = "fast") -> int:
    """Stop every server below ``clusters_dir`` (all signalled first, then awaited).

    Works without the API server: `sandbox stop` uses it after a crash. Returns how
    many were running.
    """
    pids = [(c, c._signal_stop(mode)) for c in _clusters_below(clusters_dir)]
    for cluster, pid in pids:
        cluster._wait_stopped(pid)
    return sum(pid is not None for _, pid in pids)
