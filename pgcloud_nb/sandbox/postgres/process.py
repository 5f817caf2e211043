"""A postmaster's life: launched in a session of its own, awaited and stopped by its pid file.

Why it looks like this:

- **Speed.** A restart must take ≤ 1 s on a small box, so start and stop
  signal the postmaster and poll ``postmaster.pid`` every 10 ms instead of
  going through ``pg_ctl -w`` (which polls every 100 ms).
- **Independence.** Servers outlive the sandbox process: a shell backgrounds
  the postmaster and exits, so the server is nobody's child, sits in its own
  session (Ctrl-C on the sandbox does not reach it) and survives us.
- **Environment.** The postmaster gets :func:`~postgres.osuser.pg_env`, an
  allow-list, and passes it on to everything it runs (``archive_command``,
  ``restore_command``): the sandbox's secrets never reach a server.

Split out of :mod:`postgres.cluster`, whose ``Cluster`` decides when.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from pgcloud_nb.sandbox.errors import EngineError, ServerExited
from pgcloud_nb.sandbox.postgres.osuser import (
    POLL,
    as_pg_user,
    pg_env,
    postmaster_pid,
    proc_alive,
    read_pidfile,
)

__all__ = [
    "STOP_SIGNALS",
    "launch",
    "listening_in",
    "log_tail",
    "signal_reload",
    "signal_stop",
    "wait_ready",
    "wait_stopped",
]

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
STARTUP_LOG = "startup.log"  # the postmaster's stderr, before its log collector runs


def launch(bindir: Path, pgdata: Path, log_dir: Path) -> int:
    """Start the postmaster of ``pgdata`` in the background; returns where its stderr starts."""
    # A stale postmaster.pid (kill -9, reboot) whose pid now belongs to someone else
    # would make the postmaster refuse to start.
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    startup = log_dir / STARTUP_LOG
    log_offset = startup.stat().st_size if startup.exists() else 0
    script = 'exec "$0" -D "$1" </dev/null >>"$2" 2>&1 &'
    try:
        subprocess.run(
            ["/bin/sh", "-c", script, str(bindir / "postgres"), str(pgdata), str(startup)],
            check=True,
            cwd=str(pgdata),
            env=pg_env(),
            start_new_session=True,
            timeout=30,
            umask=0o077,  # startup.log, and whatever the server writes: no one else's
            **as_pg_user(),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineError(f"could not launch {bindir / 'postgres'}: {e}") from e
    return log_offset


def wait_ready(pgdata: Path, log_dir: Path, timeout: float, log_offset: int) -> None:
    """Poll postmaster.pid until its status line says "ready" (PostgreSQL ≥ 10)."""
    deadline = time.monotonic() + timeout
    seen_pid = False
    while time.monotonic() < deadline:
        lines = read_pidfile(pgdata)
        if lines and len(lines) >= 8:
            seen_pid = True
            if postmaster_pid(pgdata) is None:
                break
            if lines[7].strip() == "ready":
                return
        elif seen_pid or _startup_failed(log_dir, log_offset):
            break
        time.sleep(POLL)
    else:
        where = pgdata.parent
        raise EngineError(f"server in {where} not ready after {timeout:g}s\n{log_tail(log_dir)}")
    raise ServerExited(f"server in {pgdata.parent} failed to start\n{log_tail(log_dir)}")


def _startup_failed(log_dir: Path, log_offset: int) -> bool:
    # Before postmaster.pid exists, the only sign of an early exit is its stderr.
    try:
        with open(log_dir / STARTUP_LOG, "rb") as f:
            f.seek(log_offset)
            fresh = f.read()
    except FileNotFoundError:
        return False
    return b"FATAL:" in fresh or b"PANIC:" in fresh


def log_tail(log_dir: Path, lines: int = 20) -> str:
    """The last lines of the server's stderr and newest log file, for error messages."""
    out: list[str] = []
    startup = log_dir / STARTUP_LOG
    logs = sorted(log_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in [startup, *logs[-1:]]:
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        if path.suffix == ".json":
            text = [_json_line(t) for t in text]
        out += [f"--- {path.name}", *text]
    return "\n".join(out) or "(no server log)"


def _json_line(text: str) -> str:
    try:
        rec = json.loads(text)
    except ValueError:
        return text
    return f"{rec.get('error_severity', '?')}: {rec.get('message', '')}"


def listening_in(pgdata: Path) -> Path | None:
    """The socket folder the running postmaster of ``pgdata`` listens in (postmaster.pid)."""
    lines = read_pidfile(pgdata)
    if postmaster_pid(pgdata) is None or not lines or len(lines) < 5 or not lines[4].strip():
        return None
    return Path(lines[4].strip())


def signal_reload(pgdata: Path) -> bool:
    """Ask the postmaster of ``pgdata`` to reread its settings files (SIGHUP, what
    ``pg_ctl reload`` sends), which needs no connection; False when none runs."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    return True


def signal_stop(pgdata: Path, mode: str) -> int | None:
    """Ask the postmaster of ``pgdata`` to stop; its pid (None when none runs)."""
    if mode not in STOP_SIGNALS:
        raise ValueError(f"stop mode must be one of {sorted(STOP_SIGNALS)}, got {mode!r}")
    pid = postmaster_pid(pgdata)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNALS[mode])
    return pid


def wait_stopped(pid: int | None, timeout: float = 60) -> None:
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
