"""The operating-system side of the engine: the PostgreSQL user, its folders, files and processes.

Why it looks like this:

- **Root.** PostgreSQL refuses to run as root, so as root every PostgreSQL
  program runs as an unprivileged user (``postgres``, or
  ``$PGCLOUD_SANDBOX_PG_USER``) who owns the service folder. Every parent of a
  data folder must be traversable by that user: :func:`usable_clusters_dir`
  moves an unreachable folder under /tmp (0710: root's, crossable by that
  user's group only) and leaves a symlink behind. :func:`run_pg` runs a program
  as that user, :func:`chown_tree` and :func:`write_owned` hand it the folders
  and files it must read, following no symlink (a link planted where root
  writes or chowns would otherwise hand root's power to whoever planted it).
- **Environment.** Servers and every other program the sandbox runs get an
  allow-listed environment (:func:`pg_env`): PATH, locale, time zone and the
  library path. The sandbox's own environment may hold its API secret
  (``eval "$(pgcloud-nb sandbox env)"``) or a real cloud key, and a server's
  environment is readable from SQL through ``/proc/<pid>/environ``.
- **Liveness.** Servers outlive the sandbox process, so whether one runs is read
  from its ``postmaster.pid``: :func:`postmaster_pid` checks that the pid is
  alive (:func:`proc_alive`: a zombie is not) and really is that folder's postmaster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgcloud_nb.sandbox.errors import EngineError, UnsafePathError

__all__ = [
    "ENV_ALLOWED",
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
    "write_if_changed",
    "write_owned",
]

ENV_PG_USER = "PGCLOUD_SANDBOX_PG_USER"
POLL = 0.01  # seconds between looks while waiting on a server
# What a server (and every program the sandbox runs) may see of our environment: what
# PostgreSQL and the C library need, never a secret. LC_* is allowed by prefix.
ENV_ALLOWED = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TZDIR", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"}
)


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


def _make_crossable(folder: Path, user: pwd.struct_passwd) -> None:
    """``folder``, ours, crossable by ``user`` and nobody else: 0700 when we are that
    user, else 0710 with ``user``'s group. Refuses a link or someone else's folder
    (/tmp is shared: anyone could have made it first)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise UnsafePathError(folder, "is a symlink or not a folder") from e
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafePathError(folder, f"is owned by uid {st.st_uid}, not {os.geteuid()}")
        if user.pw_uid == os.geteuid():
            os.fchmod(fd, 0o700)
        else:
            os.fchown(fd, -1, user.pw_gid)
            os.fchmod(fd, 0o710)  # the server's user crosses it through its group
    finally:
        os.close(fd)


def usable_clusters_dir(wanted: Path) -> Path:
    """``wanted`` if the PostgreSQL user can reach it, else a symlink to a reachable /tmp folder.

    The sandbox keeps "one folder" (its home) even as root, whose home is 0700:
    the clusters then really live in /tmp/pgcloud-nb-<uid>-<hash> (0710, see
    :func:`_make_crossable`), and ``wanted`` points there. A folder made by an
    older version inside a home that has since become private is moved there
    once its servers are stopped. Returns ``wanted`` either way.
    """
    wanted = Path(wanted).absolute()
    user = pg_user()
    digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:10]
    real = Path(f"/tmp/pgcloud-nb-{os.geteuid()}-{digest}")
    if wanted.is_symlink() and Path(os.readlink(wanted)) == real:
        with contextlib.suppress(FileExistsError):  # /tmp may have been emptied meanwhile
            real.mkdir(mode=0o700)
        _make_crossable(real, user)
        return wanted
    if wanted.is_symlink() or not wanted.exists():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        target = wanted.resolve()
        # A dangling or fresh path: try it where it is first.
        if not wanted.is_symlink() and _traversable(wanted.parent.resolve(), user):
            with contextlib.suppress(FileExistsError):
                wanted.mkdir(mode=0o700)
            _make_crossable(wanted, user)
            return wanted
        if wanted.is_symlink() and target.is_dir() and _traversable(target, user):
            return wanted
    elif _traversable(wanted.resolve(), user):
        return wanted
    with contextlib.suppress(FileExistsError):
        real.mkdir(mode=0o700)
    _make_crossable(real, user)
    if wanted.is_symlink():
        wanted.unlink()
    elif wanted.is_dir():
        _move_into(wanted, real, user)
    wanted.symlink_to(real, target_is_directory=True)
    return wanted


def _move_into(folder: Path, real: Path, user: pwd.struct_passwd) -> None:
    """Move the contents of ``folder`` (unreachable by ``user``) into ``real``, then drop it.

    Only with every server below stopped: a running postmaster keeps its old path.
    ``cp -a`` keeps owners and modes (/tmp is often another file system).
    """
    running = [p.parent.parent for p in folder.glob("*/pgdata") if postmaster_pid(p)]
    if running:
        raise EngineError(
            f"{folder} is not reachable by user {user.pw_name!r} (its home is private now) "
            f"and servers run from it ({', '.join(p.name for p in running)}); stop them "
            f"(`pgcloud-nb sandbox stop`) and start again: the folder then moves to {real}"
        )
    for entry in sorted(folder.iterdir()):
        if (real / entry.name).exists():
            raise EngineError(f"cannot move {entry} into {real}: {entry.name} is there already")
        cp = ["cp", "-a", str(entry), str(real)]
        done = subprocess.run(cp, capture_output=True, env=pg_env())
        if done.returncode:
            raise EngineError(f"moving {entry} into {real} failed: {done.stderr.decode()}")
        shutil.rmtree(entry)
    folder.rmdir()


# ---------------------------------------------------------------------------- running as the user


def pg_env() -> dict[str, str]:
    """The environment of every program the sandbox runs: :data:`ENV_ALLOWED` and LC_*.

    Everything else stays out: the sandbox's API secret, cloud keys, and libpq's
    own variables (PGDATA, PGOPTIONS, ...) that would change what a program does.
    """
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
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
            umask=0o077,
            **as_pg_user(),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineError(f"{what} failed: {e}") from e
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise EngineError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def chown_tree(path: Path) -> None:
    """Give ``path`` and everything below it to the PostgreSQL user (as root), following
    no symlink: a link is re-owned itself, never what it points to."""
    if os.geteuid() != 0:
        return
    u = pg_user()
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafePathError(path, "is a symlink or not a folder")
    for _, _, files, dirfd in os.fwalk(path, follow_symlinks=False):
        os.fchown(dirfd, u.pw_uid, u.pw_gid)  # each folder, as the walk reaches it
        for name in files:
            os.chown(name, u.pw_uid, u.pw_gid, dir_fd=dirfd, follow_symlinks=False)


def write_owned(
    path: Path,
    data: str | bytes,
    mode: int = 0o600,
    *,
    before_replace: Callable[[], object] | None = None,
) -> None:
    """Write atomically and durably, owned by the PostgreSQL user (it must read conf and
    key files): a temporary file, fsync, rename, fsync of the folder.

    The temporary file is made with O_EXCL|O_NOFOLLOW and re-owned through its
    descriptor, so a link planted under either name never redirects the write.
    ``before_replace`` runs once the new content is on disk under the temporary
    name (the crash-consistency tests stop the process there).
    """
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if os.geteuid() == 0:
            u = pg_user()
            os.fchown(f.fileno(), u.pw_uid, u.pw_gid)
        os.fchmod(f.fileno(), mode)  # whatever the umask took
        f.flush()
        os.fsync(f.fileno())  # the content first, so the rename never exposes an empty file
    if before_replace is not None:
        before_replace()
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_if_changed(path: Path, data: str) -> bool:
    """:func:`write_owned` unless ``path`` already holds ``data``; True when written."""
    try:
        if path.read_text() == data:
            return False
    except OSError:
        pass
    write_owned(path, data)
    return True


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
