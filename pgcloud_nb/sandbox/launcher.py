"""Start, find and stop the sandbox's API server, from Python or the CLI.

The server is a detached process (``python -m pgcloud_nb.sandbox``) in its own
session. It gets its settings through ``PGCLOUD_SANDBOX_*`` variables
(:meth:`Settings.to_env`) and logs to ``<home>/server.log``. Its url and pid are
in ``<home>/server.json``. ``<home>/server.lock`` is held (``fcntl.flock``) for
the server's whole life, so one home never has two servers. The lock is also
how :meth:`Sandbox.stop` tells a live server from a stale pid: the kernel drops
the lock when the process dies, even after ``kill -9``.

A server counts as *running* when its pid is alive **and**
``GET /v1/organizations`` answers 200 with the home's credentials. These probes
carry :data:`~pgcloud_nb.sandbox.api.realism.PROBE_HEADER` with the key (the header
counts only beside the right key and secret), so they never use up the rate limit
and are never hit by injected faults.

``PGCLOUD_SANDBOX_APP="module:factory"`` replaces the app factory. Tests use it
to run the process machinery on a stand-in app.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from pgcloud_nb.pidlock import lock_holder
from pgcloud_nb.sandbox.api.realism import PROBE_HEADER
from pgcloud_nb.sandbox.errors import SandboxError
from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.postgres import osuser
from pgcloud_nb.sandbox.settings import Settings

__all__ = [
    "APP_ENV",
    "DEFAULT_APP",
    "EXIT_LOCKED",
    "Sandbox",
    "SandboxInfo",
    "ensure_running",
]

APP_ENV = "PGCLOUD_SANDBOX_APP"
DEFAULT_APP = "pgcloud_nb.sandbox.api.app:create_app"
# The server's exit code when another server holds the home's lock (EX_TEMPFAIL).
EXIT_LOCKED = 75
LOCK_WAIT = 3.0  # a server waits this long for the lock: a Sandbox may be peeking at it
LOG_KEEP = 5 * 1024 * 1024  # server.log is rotated to server.log.1 past this size at start


@dataclass(frozen=True)
class SandboxInfo:
    """How to reach a running sandbox. The repr masks the key secret."""

    url: str
    org_id: str
    key_id: str
    key_secret: str
    home: Path
    pid: int

    def __repr__(self) -> str:
        return (
            f"SandboxInfo(url={self.url!r}, org_id={self.org_id!r}, key_id={self.key_id!r}, "
            f"key_secret='***', home={str(self.home)!r}, pid={self.pid})"
        )

    def env(self) -> dict[str, str]:
        """The variables the client (and clickhousectl) read, pointing at this sandbox."""
        return {
            "CLICKHOUSE_API_URL": self.url,
            "CLICKHOUSE_CLOUD_API_KEY": self.key_id,
            "CLICKHOUSE_CLOUD_API_SECRET": self.key_secret,
            "CLICKHOUSE_ORG_ID": self.org_id,
        }


class Sandbox:
    """One sandbox home and its server process.

    ``home`` overrides ``settings.home``. Without ``settings``, the knobs come
    from the ``PGCLOUD_SANDBOX_*`` variables. ``app`` is a ``"module:factory"``
    path, read from ``$PGCLOUD_SANDBOX_APP`` when not given.
    """

    def __init__(
        self,
        home: Path | str | None = None,
        settings: Settings | None = None,
        app: str | None = None,
    ) -> None:
        settings = settings if settings is not None else Settings.from_env()
        if home is not None:
            settings = settings.with_(home=Path(home).expanduser().resolve())
        self.settings = settings
        self.home = SandboxHome(settings.home)
        self.app = app or os.environ.get(APP_ENV) or DEFAULT_APP

    def __repr__(self) -> str:
        return f"Sandbox({str(self.home.path)!r})"

    def __enter__(self) -> SandboxInfo:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- finding --

    def status(self) -> SandboxInfo | None:
        """The running server of this home, or None (no server, dead pid, or no answer)."""
        data = self.home.read_server()
        if not data:
            return None
        pid, url = int(data.get("pid") or 0), str(data.get("url") or "")
        if not pid or not url or not _pid_alive(pid):
            return None
        creds = self.home.credentials()
        info = SandboxInfo(url, creds.org_id, creds.key_id, creds.key_secret, self.home.path, pid)
        return info if _answers(info) else None

    # -- starting --

    def start(self, timeout: float = 60) -> SandboxInfo:
        """Attach to this home's server, or start one and wait until it answers."""
        if (info := self.status()) is not None:
            return info
        self.home.ensure()
        self.home.credentials()  # made here once, so the server only reads them
        log_from = _rotate_log(self.home.log_file)
        # The server runs the same pgcloud_nb as we do, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ,
            **self.settings.to_env(),
            APP_ENV: self.app,
            "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.home.log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgcloud_nb.sandbox"],
                env=env,
                cwd=self.home.path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: outlives this process and its Ctrl-C
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (info := self.status()) is not None:
                if info.pid != proc.pid:
                    # A concurrent start won. Ours is still waiting for the lock; it must
                    # not take over once that server stops.
                    _terminate(proc.pid, 5.0)
                return info
            code = proc.poll()
            if code == EXIT_LOCKED:
                # Another process is starting a server for this home: wait for that one.
                return self._wait_for_other(deadline, log_from)
            if code is not None:
                raise SandboxError(
                    f"the sandbox server exited with code {code}"
                    + _log_tail(self.home.log_file, log_from)
                )
            time.sleep(0.05)
        _terminate(proc.pid, 5.0)
        raise SandboxError(
            f"the sandbox server did not answer within {timeout:g} s"
            + _log_tail(self.home.log_file, log_from)
        )

    def _wait_for_other(self, deadline: float, log_from: int) -> SandboxInfo:
        while time.monotonic() < deadline:
            if (info := self.status()) is not None:
                return info
            time.sleep(0.1)
        raise SandboxError(
            f"another sandbox server holds {self._lock_file} but does not answer"
            + _log_tail(self.home.log_file, log_from)
        )

    # -- stopping --

    def stop(self, timeout: float = 30) -> bool:
        """Stop the server, then every PostgreSQL server of the home. True if anything ran.

        SIGTERM lets the server's lifespan stop its clusters. Past ``timeout`` the
        server gets SIGKILL. The engine then stops whatever clusters are left, which
        covers a server that was killed with ``kill -9`` earlier.
        """
        stopped = False
        if (pid := self._server_pid()) is not None:
            stopped = _terminate(pid, timeout)
        stopped = self._stop_clusters() > 0 or stopped
        self.home.clear_server()
        return stopped

    def _server_pid(self) -> int | None:
        """The pid of the process holding this home's lock, if any."""
        if (text := lock_holder(self._lock_file)) is None:
            return None
        data = self.home.read_server() or {}
        pid = int(text) if text.isdigit() else int(data.get("pid") or 0)
        return pid if pid and _pid_alive(pid) else None

    def _stop_clusters(self) -> int:
        if not self.home.clusters_dir.exists():
            return 0
        # the PostgreSQL side; heavy, so imported late
        from pgcloud_nb.sandbox.postgres.cluster import stop_all

        return stop_all(self.home.clusters_dir)

    @property
    def _lock_file(self) -> Path:
        return lock_path(self.home)


def ensure_running(home: Path | str | None = None, settings: Settings | None = None) -> SandboxInfo:
    """Attach to the sandbox of ``home`` (default: ``$PGCLOUD_SANDBOX_HOME``), or start it."""
    return Sandbox(home, settings).start()


# -- the lock, shared with __main__ ----------------------------------------------------------


def lock_path(home: SandboxHome) -> Path:
    return home.path / "server.lock"


def acquire_lock(home: SandboxHome, wait: float = LOCK_WAIT) -> IO[str] | None:
    """Hold the home's lock (keep the returned file open), writing our pid into it."""
    f = open(lock_path(home), "a+")  # noqa: SIM115 -- the open file *is* the lock
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.05)
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


# -- processes ---------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our own exited child, or a zombie would look alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return osuser.proc_alive(pid)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. True if the process was alive."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return sig != signal.SIGTERM
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.05)
    return True


def _answers(info: SandboxInfo) -> bool:
    try:
        r = httpx.get(
            f"{info.url}/v1/organizations",
            auth=(info.key_id, info.key_secret),
            headers={PROBE_HEADER: "1"},
            timeout=3.0,
            trust_env=False,  # never send a probe of 127.0.0.1 through an HTTP proxy
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


# -- the log -------------------------------------------------------------------------------


def _rotate_log(log: Path) -> int:
    """Rotate an oversized log; the offset where this start's lines begin."""
    try:
        size = log.stat().st_size
    except FileNotFoundError:
        return 0
    if size <= LOG_KEEP:
        return size
    log.replace(log.with_name(log.name + ".1"))
    return 0


def _log_tail(log: Path, offset: int, lines: int = 30) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    tail = text.splitlines()[-lines:]
    if not tail:
        return f" (nothing in {log})"
    return f"; last lines of {log}:\n" + "\n".join(tail)
