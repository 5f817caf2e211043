"""One real PostgreSQL server per sandbox service: make, start, stop, configure, remove.

Why it looks like this:

- **Speed.** A create must reach ``running`` in ≤ 3 s and a restart take ≤ 1 s
  (the product's figures) on a small box. ``initdb`` alone costs about a second,
  so :meth:`Cluster.init` copies a template data folder made once per set of
  binaries (``template_dir``) and then writes fresh certificates and settings.
  Start and stop signal the postmaster and poll ``postmaster.pid`` every 10 ms
  instead of going through ``pg_ctl -w`` (which polls every 100 ms).
- **Root.** PostgreSQL refuses to run as root, so as root every PostgreSQL
  program runs as an unprivileged user (``postgres``, or
  ``$PGCLOUD_SANDBOX_PG_USER``) who owns the service folder. Every parent of a
  data folder must be traversable by that user: :func:`usable_clusters_dir`
  moves an unreachable folder under /tmp and leaves a symlink behind.
- **Adoption.** Servers outlive the sandbox process (they run in their own
  session). A new :class:`Cluster` for the same folder finds its server through
  ``postmaster.pid``, checking that the pid really is that folder's postmaster.
- **Secrets.** Passwords reach the server only as SCRAM verifiers computed
  client-side, in a session with statement logging and pg_stat_statements'
  utility tracking off, so the clear password is in no log or statistics view.

Layout of a service folder (``root``)::

    pgdata/            the data folder; server.crt/server.key, pgcloud-base.conf
                       (sandbox-managed settings) and pgcloud.conf (user settings) live here
    socket/            unix socket (0700): the only way in without a password
    log/               startup.log (stderr before the log collector) and jsonlog files
    ca.pem             the service's CA certificate
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq, sql

from . import certs, pgbin

__all__ = [
    "Cluster",
    "ConfigValueError",
    "EngineError",
    "free_port",
    "pg_user",
    "scram_verifier",
    "stop_all",
    "usable_clusters_dir",
]

ENV_PG_USER = "PGCLOUD_SANDBOX_PG_USER"
SUPERUSER = "postgres"
USER_CONF = "pgcloud.conf"
USER_HEADER = "user settings (the API's pgConfig), managed by pgcloud-nb"
BASE_CONF = "pgcloud-base.conf"
FIRST_START = ".first-start.json"  # what start() still has to do once: set the password
POLL = 0.01
SOCKET_PATH_MAX = 100  # sockaddr_un holds 107 bytes; leave room for ".s.PGSQL.<port>"
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

HBA = """\
# pgcloud-nb sandbox. The socket folder is 0700, so only the server's user (and root) get here.
local     all          all                 trust
hostssl   all          all   127.0.0.1/32  scram-sha-256
hostssl   all          all   ::1/128       scram-sha-256
hostssl   replication  all   127.0.0.1/32  scram-sha-256
hostssl   replication  all   ::1/128       scram-sha-256
# Like the real service: no connection without TLS.
hostnossl all          all   0.0.0.0/0     reject
hostnossl all          all   ::/0          reject
"""


class EngineError(RuntimeError):
    """A PostgreSQL server could not be made, started, stopped or configured."""


class ConfigValueError(EngineError, ValueError):
    """A setting was refused by PostgreSQL; the previous settings stay in force."""

    def __init__(self, param: str, pg_message: str) -> None:
        super().__init__(f"{param}: {pg_message}")
        self.param = param
        self.pg_message = pg_message

    @property
    def message(self) -> str:
        """Alias of ``pg_message`` (the app's error envelope reads this name)."""
        return self.pg_message


# ---------------------------------------------------------------------------- users, folders


def pg_user() -> pwd.struct_passwd:
    """The account PostgreSQL runs as: ourselves, or an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    name = os.environ.get(ENV_PG_USER, "postgres")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise EngineError(
            f"running as root, PostgreSQL needs an unprivileged user: no user {name!r} "
            f"(create it, or set ${ENV_PG_USER})"
        ) from None
    if user.pw_uid == 0:
        raise EngineError(f"${ENV_PG_USER}={name} is root; PostgreSQL refuses to run as root")
    return user


def _traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can reach ``path`` (every folder from / down to it has x for them)."""
    if user.pw_uid == os.geteuid() != 0:
        return os.access(path, os.X_OK)
    groups = {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == user.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def usable_clusters_dir(wanted: Path) -> Path:
    """``wanted`` if the PostgreSQL user can reach it, else a symlink to a reachable /tmp folder.

    The sandbox keeps "one folder" (its home) even as root, whose home is 0700:
    the clusters then really live in /tmp/pgcloud-nb-<uid>-<hash>, and
    ``wanted`` points there. Returns ``wanted`` either way.
    """
    wanted = Path(wanted).absolute()
    user = pg_user()
    if wanted.is_symlink() or not wanted.exists():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        target = wanted.resolve()
        # A dangling or fresh path: try it where it is first.
        if not wanted.is_symlink() and _traversable(wanted.parent.resolve(), user):
            wanted.mkdir(mode=0o711, exist_ok=True)
            return wanted
        if wanted.is_symlink() and target.is_dir() and _traversable(target, user):
            return wanted
    elif _traversable(wanted.resolve(), user):
        return wanted
    digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:10]
    real = Path(f"/tmp/pgcloud-nb-{os.geteuid()}-{digest}")
    with contextlib.suppress(FileExistsError):
        real.mkdir(mode=0o711)
    st = real.lstat()  # refuse a folder someone else planted in /tmp
    if real.is_symlink() or st.st_uid != os.geteuid():
        raise EngineError(f"{real} exists and is not ours; remove it")
    real.chmod(0o711)  # traversable, not listable
    if wanted.is_symlink():
        wanted.unlink()
    elif wanted.is_dir():
        if any(wanted.iterdir()):
            raise EngineError(
                f"{wanted} is not reachable by user {user.pw_name!r} and is not empty; "
                "move it under a reachable folder or set PGCLOUD_SANDBOX_HOME"
            )
        wanted.rmdir()
    wanted.symlink_to(real, target_is_directory=True)
    return wanted


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (never 5432, the system server's port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 5432:
            return port


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password``, computed locally.

    libpq computes it (SASLprep included) without a server when the algorithm is
    given, so a never-connected PGconn is enough.
    """
    conn = pq.PGconn.connect_start(b"host=/nonexistent port=1")
    try:
        verifier: bytes = conn.encrypt_password(
            password.encode(), SUPERUSER.encode(), b"scram-sha-256"
        )
        return verifier.decode()
    finally:
        conn.finish()


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{escaped}'"


def _render_conf(settings: dict[str, str], header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{name} = {_conf_quote(str(value))}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def _proc_alive(pid: int) -> bool:
    """True for a live process; false for a zombie (PID 1 here may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# ---------------------------------------------------------------------------- templates

_template_lock = threading.Lock()
_cluster_locks: dict[Path, threading.RLock] = {}
_cluster_locks_guard = threading.Lock()


def _lock_for(root: Path) -> threading.RLock:
    """One lock per service folder: two threads must not start or reconfigure it at once."""
    with _cluster_locks_guard:
        return _cluster_locks.setdefault(root, threading.RLock())


def _template(bindir: Path, template_dir: Path) -> Path:
    """A pristine data folder for ``bindir``, made once (initdb + pg_stat_statements)."""
    key = f"pg{pgbin.server_major(bindir)}-{hashlib.sha1(str(bindir).encode()).hexdigest()[:8]}"
    with _template_lock:
        # initdb runs as the PostgreSQL user, so the folder must be reachable by it.
        folder = usable_clusters_dir(template_dir).resolve()
        ready = folder / key
        if ready.is_dir():
            return ready
        work = folder / f"{key}.tmp{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        _chown_tree(work)
        _initdb(bindir, work)
        try:
            work.rename(ready)  # atomic: a half-made template is never used
        except OSError:  # another sandbox process finished first
            shutil.rmtree(work, ignore_errors=True)
        return ready


def _initdb(bindir: Path, pgdata: Path) -> None:
    _run_pg(
        [bindir / "initdb", "-D", pgdata, "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
         "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"],
        what="initdb",
    )
    # Single-user mode: no port, no password, no settings yet; makes the pg_stat_statements
    # view exist in the admin database, as on the real service.
    _run_pg(
        [bindir / "postgres", "--single", "-D", pgdata, "-c", "shared_preload_libraries=",
         SUPERUSER],
        what="creating pg_stat_statements",
        input="CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n",
    )


def _pg_env() -> dict[str, str]:
    # libpq/server variables of the caller (PGDATA, PGOPTIONS, ...) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _as_pg_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    u = pg_user()
    return {"user": u.pw_uid, "group": u.pw_gid, "extra_groups": []}


def _run_pg(args: list[Any], *, what: str, input: str | None = None) -> str:
    """Run a PostgreSQL program as the PostgreSQL user; EngineError with its output on failure."""
    try:
        done = subprocess.run(
            [str(a) for a in args], input=input, capture_output=True, text=True, timeout=120,
            cwd="/", env=_pg_env(), **_as_pg_user(),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineError(f"{what} failed: {e}") from e
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise EngineError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    u = pg_user()
    os.chown(path, u.pw_uid, u.pw_gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), u.pw_uid, u.pw_gid, follow_symlinks=False)


def _write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write atomically, owned by the PostgreSQL user (it must read conf and key files)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if os.geteuid() == 0:
        u = pg_user()
        os.chown(tmp, u.pw_uid, u.pw_gid)
    tmp.replace(path)


# ---------------------------------------------------------------------------- the cluster


class Cluster:
    """One service's PostgreSQL server, living in ``root``. All methods block."""

    def __init__(self, root: Path, port: int, *, bindir: Path | None = None) -> None:
        # Resolved once: PostgreSQL must get real paths (a symlinked home may sit in a 0700
        # folder the server's user cannot cross).
        self._root = Path(root).resolve()
        self._port = int(port)
        self._bindir = bindir
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
        if self._bindir is None:
            try:
                self._bindir = pgbin.find_bindir()
            except pgbin.PgBinariesNotFound as e:
                raise EngineError(str(e)) from e
        return self._bindir

    # -- making

    def init(
        self, password: str, *, hostnames: list[str], template_dir: Path | None = None
    ) -> None:
        """Make the data folder, certificates and settings; does not start the server."""
        if self.pgdata.exists():
            raise EngineError(f"{self.pgdata} already exists")
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _chown_tree(self._root)
        if template_dir is None:
            self.pgdata.mkdir(mode=0o700)
            _chown_tree(self.pgdata)
            _initdb(self.bindir, self.pgdata)
        else:
            src = _template(self.bindir, Path(template_dir))
            # cp -a keeps owners and modes and beats shutil.copytree; --sparse skips the
            # zeros of the preallocated WAL segment (less to write back on a busy disk).
            done = subprocess.run(
                ["cp", "-a", "--sparse=always", str(src), str(self.pgdata)], capture_output=True
            )
            if done.returncode:
                raise EngineError(f"copying template {src} failed: {done.stderr.decode()}")
        for d in (self.socket_dir, self.log_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            _chown_tree(d)

        self._write_certificates(hostnames)
        _write(self.pgdata / "pg_hba.conf", HBA)
        base = _render_conf(self._base_settings(), "managed by pgcloud-nb; not user settings")
        _write(self.pgdata / BASE_CONF, base)
        _write(self.pgdata / USER_CONF, _render_conf({}, USER_HEADER))
        main = self.pgdata / "postgresql.conf"
        # Later lines win: sandbox settings override initdb's, user settings override both.
        includes = f"\ninclude '{BASE_CONF}'\ninclude_if_exists '{USER_CONF}'\n"
        _write(main, main.read_text() + includes)
        _write(self._root / FIRST_START, json.dumps({"verifier": scram_verifier(password)}))

    def _base_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "127.0.0.1",
            "port": str(self._port),
            "unix_socket_directories": str(self.socket_dir),
            "ssl": "on",
            "ssl_cert_file": "server.crt",
            "ssl_key_file": "server.key",
            "ssl_min_protocol_version": "TLSv1.3",  # the real service's minimum (API-NOTES §5.1)
            "password_encryption": "scram-sha-256",
            "shared_preload_libraries": "pg_stat_statements",
            "compute_query_id": "on",
            "track_io_timing": "on",
            "logging_collector": "on",
            "log_destination": "jsonlog",
            "log_directory": str(self.log_dir),
            "log_filename": "postgresql-%Y-%m-%d.log",  # jsonlog writes postgresql-<date>.json
            "log_rotation_size": "10MB",
            # Many servers share a 2-core box: keep each one small.
            "shared_buffers": "32MB",
            "max_connections": "100",
            "max_wal_size": "256MB",
        }

    # -- running

    def _read_pidfile(self) -> list[str] | None:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def postmaster_pid(self) -> int | None:
        """The pid of this folder's live postmaster, or None."""
        lines = self._read_pidfile()
        if not lines or not lines[0].strip().lstrip("-").isdigit():
            return None
        pid = abs(int(lines[0]))
        if not _proc_alive(pid):
            return None
        try:  # a reused pid must not pass for our server
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid
        return pid if str(self.pgdata).encode() in cmdline else None

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
        have = pgbin.server_major(self.bindir)
        if made != have:
            raise EngineError(
                f"{self.pgdata} was made by PostgreSQL {made} but {self.bindir} is {have}; "
                f"set ${pgbin.ENV_BINDIR} to a PostgreSQL {made} bin folder"
            )

    def _launch(self) -> int:
        """Start the postmaster in the background; returns where its stderr starts."""
        # Stale lock files (kill -9, reboot) whose pid now belongs to someone else would
        # make the postmaster refuse to start.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{self._port}.lock").unlink(missing_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        _chown_tree(self.socket_dir)
        startup = self.log_dir / "startup.log"
        log_offset = startup.stat().st_size if startup.exists() else 0
        # The shell backgrounds the postmaster and exits: the server is nobody's child here,
        # sits in its own session (Ctrl-C on the sandbox does not reach it) and survives us.
        script = 'exec "$0" -D "$1" </dev/null >>"$2" 2>&1 &'
        try:
            subprocess.run(
                ["/bin/sh", "-c", script, str(self.bindir / "postgres"), str(self.pgdata),
                 str(startup)],
                check=True, cwd=str(self.pgdata), env=_pg_env(), start_new_session=True,
                timeout=30, **_as_pg_user(),
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise EngineError(f"could not launch {self.bindir / 'postgres'}: {e}") from e
        return log_offset

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        """Poll postmaster.pid until its status line says "ready" (PostgreSQL ≥ 10)."""
        deadline = time.monotonic() + timeout
        seen_pid = False
        while time.monotonic() < deadline:
            lines = self._read_pidfile()
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
        while _proc_alive(pid):
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
            # Belt and braces: even the verifier stays out of statistics and logs.
            conn.execute("SET pg_stat_statements.track_utility = off")
            conn.execute("SET log_statement = 'none'")
            conn.execute("SET log_min_duration_statement = -1")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(verifier)
                )
            )

    # -- settings

    def apply_config(self, settings: dict[str, str]) -> list[str]:
        """Replace the user settings, reload, and return the names still needing a restart.

        A value PostgreSQL refuses raises :class:`ConfigValueError`; the previous
        file is then back in place and the server never loaded the refused one.
        """
        for name in settings:
            if not _NAME_RE.match(name):
                raise ConfigValueError(name, f"invalid configuration parameter name {name!r}")
        with self._lock:
            return self._apply_config(settings)

    def _apply_config(self, settings: dict[str, str]) -> list[str]:
        path = self.pgdata / USER_CONF
        previous = path.read_text() if path.exists() else _render_conf({}, USER_HEADER)
        _write(path, _render_conf(settings, USER_HEADER))
        try:
            with self.connect() as conn:
                # pg_file_settings parses the files afresh in this session, so errors show
                # before the server loads them. A setting that merely needs a restart also
                # reads "could not be applied" there; `postgres -C` tells the two apart.
                flagged = conn.execute(
                    "SELECT name FROM pg_file_settings WHERE error IS NOT NULL AND sourcefile = %s",
                    [str(path)],
                ).fetchall()
                if flagged and (problem := self._config_problem()):
                    _write(path, previous)
                    raise ConfigValueError(problem[0] or flagged[0][0] or "", problem[1])
                return self._reload(conn)
        except psycopg.OperationalError as e:
            _write(path, previous)
            raise EngineError(f"server in {self._root} is not reachable: {e}") from e

    def _config_problem(self) -> tuple[str | None, str] | None:
        """(parameter, PostgreSQL's message) for the first error in the files, or None."""
        try:
            _run_pg([self.bindir / "postgres", "-D", self.pgdata, "-C", "port"], what="check")
        except EngineError as e:
            # Lines look like "<time> [pid] LOG:  invalid value for parameter "x": "y"".
            said = [
                m.group(2) for m in re.finditer(r"(LOG|FATAL|DETAIL|HINT):\s+(.*)", str(e))
                if "contains errors" not in m.group(2)
            ]
            message = " ".join(said) or str(e)
            param = re.search(r'parameter "([^"]+)"', message)
            return (param.group(1) if param else None), message
        return None

    def _reload(self, conn: psycopg.Connection[Any]) -> list[str]:
        row = conn.execute("SELECT pg_conf_load_time(), pg_reload_conf()").fetchone()
        assert row is not None
        before = row[0]
        # The postmaster re-reads, then signals backends; each statement boundary lets this
        # session catch up, after which pg_settings.pending_restart is current.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = conn.execute("SELECT pg_conf_load_time()").fetchone()
            if now and now[0] != before:
                break
            time.sleep(POLL)
        return self._pending(conn)

    @staticmethod
    def _pending(conn: psycopg.Connection[Any]) -> list[str]:
        rows = conn.execute("SELECT name FROM pg_settings WHERE pending_restart ORDER BY name")
        return [r[0] for r in rows]

    def pending_restart(self) -> list[str]:
        with self.connect() as conn:
            return self._pending(conn)

    def _write_certificates(self, hostnames: list[str]) -> None:
        # A fresh CA each time: the CA key is never kept, so nothing can mint more certs.
        ca_cert, ca_key = certs.make_ca(f"{hostnames[0] if hostnames else 'sandbox'} CA")
        cert, key = certs.make_server_cert(ca_cert, ca_key, hostnames)
        _write(self._root / "ca.pem", ca_cert, 0o644)
        _write(self.pgdata / "server.crt", cert, 0o644)
        _write(self.pgdata / "server.key", key, 0o600)

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


def stop_all(clusters_dir: Path, mode: str = "fast") -> int:
    """Stop every server below ``clusters_dir`` (all signalled first, then awaited).

    Works without the API server: `sandbox stop` uses it after a crash. Returns how
    many were running.
    """
    pids = [(c, c._signal_stop(mode)) for c in _clusters_below(clusters_dir)]
    for cluster, pid in pids:
        cluster._wait_stopped(pid)
    return sum(pid is not None for _, pid in pids)
