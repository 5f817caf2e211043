"""Private folders: made 0700 for their owner, checked without following links, never reused.

Another OS user on the machine must get nothing from the sandbox: not a socket,
not a file, not a way to make root write where they choose. So a folder the
sandbox relies on is either made here, 0700 and owned by the right user, or it
already exists as exactly that; anything else (a symlink, someone else's
folder, a 0755 one, a file) is refused with :class:`UnsafePathError`, never
used. Checks go through a descriptor opened with ``O_NOFOLLOW``, so a link
planted in the path's last component is never followed, and ownership is given
with ``fchown`` on that descriptor.

Unix sockets are where this matters most. A socket path must fit in 107
bytes, and deep homes overflow it, so :func:`socket_dir` keeps a server's
socket in its own 0700 folder when that fits and otherwise in a short folder
below ``/tmp/pgcloud-nb-run-<uid>`` (0700, owned by the server's user, checked
every time). Its name is predictable; that lets another user block it (the
sandbox then says so) but never get in.

:func:`tighten_tree` removes every group and other permission below a folder
(the sandbox home, the clusters), again without following links: homes made by
older versions had 0755 folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from pgcloud_nb.sandbox.errors import UnsafePathError
from pgcloud_nb.sandbox.postgres.osuser import pg_user

__all__ = ["RUN_PREFIX", "SOCKET_PATH_MAX", "private_dir", "socket_dir", "tighten_tree"]

SOCKET_PATH_MAX = 100  # sockaddr_un holds 107 bytes; leave room for ".s.PGSQL.<port>"
RUN_PREFIX = "/tmp/pgcloud-nb-run-"  # + the server user's uid


def _owner() -> tuple[int, int]:
    user = pg_user()
    return user.pw_uid, user.pw_gid


def private_dir(path: Path, *, owner: tuple[int, int] | None = None, make: bool = True) -> Path:
    """``path`` as a 0700 folder owned by ``owner`` (default: the server's user).

    Made when missing (``make``); an existing one must already be exactly that.
    Raises :class:`UnsafePathError` for a symlink, a non-folder, another owner or
    any group/other permission.
    """
    uid, gid = owner or _owner()
    made = False
    if make:
        try:
            os.mkdir(path, 0o700)
            made = True
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
        raise UnsafePathError(path, "is a symlink or not a folder") from e
    try:
        if made:
            if os.geteuid() == 0:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o700)  # the umask may have taken bits we need
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != uid:
        raise UnsafePathError(path, f"is owned by uid {st.st_uid}, not {uid}")
    if st.st_mode & 0o077:
        raise UnsafePathError(path, f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700")
    return path


def socket_dir(root: Path) -> Path:
    """Where the server living in ``root`` puts its unix socket (see the module docstring).

    A pure function of ``root`` and the server's user: a later sandbox finds a
    running server's socket where it left it.
    """
    own = root / "socket"
    if len(str(own)) + len("/.s.PGSQL.65535") <= SOCKET_PATH_MAX:
        return own
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return Path(f"{RUN_PREFIX}{pg_user().pw_uid}") / digest


def ensure_socket_dir(root: Path) -> Path:
    """Make (or check) ``root``'s socket folder and every private folder above it."""
    found = socket_dir(root)
    private_dir(found.parent, make=found.parent != root)
    return private_dir(found)


def tighten_tree(top: Path) -> int:
    """Drop group and other permissions from every folder and file below ``top``
    (``top`` included), following no link; returns how many were changed.

    Sockets, pipes and links are left alone (a link's own mode means nothing).
    """
    changed = 0
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(top, "is a symlink or not a folder")
    for _, dirs, files, dirfd in os.fwalk(top, follow_symlinks=False):
        changed += _tighten_fd(dirfd)
        for name in [*files, *dirs]:
            changed += _tighten_entry(dirfd, name)
    return changed


def _tighten_fd(fd: int) -> int:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        os.fchmod(fd, mode & ~0o077)
        return 1
    return 0


def _tighten_entry(dirfd: int, name: str) -> int:
    """A regular file below ``dirfd``; folders are done as fwalk reaches them."""
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile (a server at work)
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o077:
            return 0
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
        except PermissionError:  # unreadable to us, so ours (root reads all): no one else's link
            os.chmod(name, stat.S_IMODE(st.st_mode) & ~0o077, dir_fd=dirfd)
            return 1
        try:
            return _tighten_fd(fd)
        finally:
            os.close(fd)
    return 0
