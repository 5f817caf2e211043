"""The operating-system side of the engine: the PostgreSQL user, its folders, files and processes.

Why it looks like this:

- **Root.** PostgreSQL refuses to run as root, so as root every PostgreSQL
  program runs as an unprivileged user (``postgres``, or
  ``$PGCLOUD_SANDBOX_PG_USER``) who owns the service folder. Every parent of a
  data folder must be traversable by that user: :func:`usable_clusters_dir`
  moves an unreachable folder under /tmp and leaves a symlink behind.
  :func:`run_pg` runs a program as that user, :func:`chown_tree` and
  :func:`write_owned` hand it the folders and files it must read.
- **Liveness.** Servers outlive the sandbox process, so whether one runs is read
  from its ``postmaster.pid``: :func:`postmaster_pid` checks that the pid is
  alive (:func:`proc_alive`: a zombie is not) and really is that folder's postmaster.

Split out of :mod:`postgres.cluster` (which re-exports :func:`pg_user` and
:func:`usable_clusters_dir`) so that module holds the cluster itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

from pgcloud_nb.sandbox.errors import EngineError

__all__ = [
    "ENV_PG_USER",
    "POLL",
    "as_pg_user",
    "chown_tree",
    "pg_env",
    "pg_user",
    "postmaster_pid",
    "proc_alive",
    "read_pidfile",
    "run_pg",
    "usable_clusters_dir",
    "write_owned",
]

ENV_PG_USER = "PGCLOUD_SANDBOX_PG_USER"
POLL = 0.01  # seconds between looks while waiting on a server


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


# ---------------------------------------------------------------------------- running as the user


def pg_env() -> dict[str, str]:
    # libpq/server variables of the caller (PGDATA, PGOPTIONS, ...) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def as_pg_user() -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a program as the PostgreSQL user."""
    if os.geteuid() != 0:
        return {}
    u = pg_user()
    return {"user": u.pw_uid, "group": u.pw_gid, "extra_groups": []}


def run_pg(args: list[Any], *, what: str, input: str | None = None) -> str:
    """Run a PostgreSQL program as the PostgreSQL user; EngineError with its output on failure."""
    try:
        done = subprocess.run(
            [str(a) for a in args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
            env=pg_env(),
            **as_pg_user(),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineError(f"{what} failed: {e}") from e
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise EngineError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    u = pg_user()
    os.chown(path, u.pw_uid, u.pw_gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), u.pw_uid, u.pw_gid, follow_symlinks=False)


def write_owned(path: Path, data: str | bytes, mode: int = 0o600) -> None:
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


# ---------------------------------------------------------------------------- liveness


def proc_alive(pid: int) -> bool:
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


def read_pidfile(pgdata: Path) -> list[str] | None:
    """The lines of ``pgdata``'s postmaster.pid, or None when there is none."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of ``pgdata``'s live postmaster, or None."""
    lines = read_pidfile(pgdata)
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None
    pid = abs(int(lines[0]))
    if not proc_alive(pid):
        return None
    try:  # a reused pid must not pass for our server
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid
    return pid if str(pgdata).encode() in cmdline else None
