"""Find the PostgreSQL server binaries the sandbox runs a service with.

Each sandbox service is a real PostgreSQL server, so the sandbox needs a
folder holding ``initdb``, ``pg_ctl`` and ``postgres`` of one installation,
ideally of the major the service asked for (``postgresVersion``). The places
looked at, in this order:

1. the sandbox's own installs, ``<home>/postgres/<major>/bin`` (unpacked by
   ``pgcloud-nb sandbox install-postgres``, see :mod:`postgres.install`), in
   the sandbox's home and then in the user's default home, so one install
   serves every sandbox of the user, throwaway test homes included;
2. the machine's own installs of every major, ``/usr/lib/postgresql/<major>/bin``
   (Debian and Ubuntu may hold several);
3. ``PATH``, when all three programs resolve to the same real folder (Debian
   links only some of them into /usr/bin);
4. ``pg_config --bindir``;
5. the binaries bundled in the PyPI ``pgserver`` package, for machines without
   a system PostgreSQL (located, not imported).

``$PGCLOUD_SANDBOX_PG_BINDIR`` overrides all of them: an explicit choice
always wins, whatever major was asked for, and is never silently ignored (a
wrong one is an error).

**Which major runs** (:func:`choose`): the requested major when any place has
it; otherwise the nearest newer one (a newer server accepts the settings and
SQL written for an older one, so a service asking for 17 behaves most like 17
on 18), and only then the nearest older one. Within one major the order above
decides. Asked for no major (a tool that needs *some* PostgreSQL), the
machine's default comes first, as before installs existed: ``PATH``,
``pg_config``, the newest ``/usr/lib/postgresql`` major, ``pgserver``, then the
newest install. The :class:`Choice` says what was asked, what runs, and why.

The error lists every place tried and why it was rejected.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pgcloud_nb.sandbox.errors import PgBinariesNotFound
from pgcloud_nb.sandbox.settings import user_home

__all__ = [
    "ENV_BINDIR",
    "INSTALLS",
    "Choice",
    "Found",
    "available",
    "choose",
    "datadir_major",
    "find_bindir",
    "for_node",
    "install_roots",
    "missing",
    "server_major",
    "server_version",
]

ENV_BINDIR = "PGCLOUD_SANDBOX_PG_BINDIR"
INSTALLS = "postgres"  # <home>/postgres/<major>/bin: the sandbox's own installs
REQUIRED = ("initdb", "pg_ctl", "postgres")
DEBIAN = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Found:
    """One PostgreSQL installation: its real bin folder, its major, where it was found."""

    bindir: Path
    major: int
    origin: str


@dataclass(frozen=True)
class Choice:
    """The installation chosen for a requested major (``None``: any major)."""

    found: Found
    requested: int | None
    made_by: int | None = None  # set when an existing data folder decided (see for_node)

    @property
    def bindir(self) -> Path:
        return self.found.bindir

    @property
    def major(self) -> int:
        return self.found.major

    @property
    def exact(self) -> bool:
        return self.requested is None or self.requested == self.major

    def _why(self) -> str:
        if self.found.origin == f"${ENV_BINDIR}":
            return f"${ENV_BINDIR} is set"
        if self.made_by is not None:
            return (
                f"its data folder was made by PostgreSQL {self.made_by}, "
                "and a data folder runs only on the major that made it"
            )
        return (
            f"{self.requested} is not installed; "
            f"`pgcloud-nb sandbox install-postgres {self.requested}` adds it"
        )

    def describe(self) -> str:
        """One line for the sandbox's own output, e.g.
        "PostgreSQL 18.6 (sandbox install: …/18/bin)"."""
        what = f"PostgreSQL {server_version(self.bindir)} ({self.found.origin}: {self.bindir})"
        if self.exact:
            return what
        return f"{what}, not the requested {self.requested}: {self._why()}"

    def summary(self) -> str:
        """One line for a service's own log: no paths of this machine, e.g. "postgresVersion
        17 runs on PostgreSQL 18.6, not 17: 17 is not installed; …"."""
        version = server_version(self.bindir)
        if self.requested is None:
            return f"this server runs PostgreSQL {version}"
        if self.exact:
            return f"postgresVersion {self.requested} runs on PostgreSQL {version}"
        return (
            f"postgresVersion {self.requested} runs on PostgreSQL {version}, "
            f"not {self.requested}: {self._why()}"
        )


def missing(bindir: Path) -> list[str]:
    """Which of initdb, pg_ctl and postgres ``bindir`` lacks (as executables)."""
    return [p for p in REQUIRED if not os.access(bindir / p, os.X_OK)]


# ---------------------------------------------------------------------------- versions


@functools.lru_cache(maxsize=32)
def server_version(bindir: Path) -> str:
    """The version of ``bindir/postgres``, e.g. "15.8" for "postgres (PostgreSQL) 15.8"."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise PgBinariesNotFound(f"{bindir}/postgres --version failed: {e}") from e
    m = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*\S*)", out)
    if not m:
        raise PgBinariesNotFound(f"unexpected output from {bindir}/postgres --version: {out!r}")
    return m.group(1)


def server_major(bindir: Path) -> int:
    """The major version of ``bindir/postgres``, e.g. 15 for "postgres (PostgreSQL) 15.8"."""
    return int(re.match(r"\d+", server_version(bindir)).group())  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- the places

Probe = Callable[[], Iterable[tuple[str, Path | str]]]


def install_roots(home: Path | None = None) -> list[Path]:
    """Where the sandbox's installs live: in ``home``, ``$PGCLOUD_SANDBOX_HOME`` and the user's."""
    homes = [home, os.environ.get("PGCLOUD_SANDBOX_HOME"), user_home()]
    roots = [Path(h).expanduser().absolute() / INSTALLS for h in homes if h]
    return list(dict.fromkeys(roots))


def _majors_below(root: Path) -> list[int]:
    """The numeric subfolders of ``root``, newest first (unreadable or absent: none)."""
    try:
        names = [p.name for p in root.iterdir()]
    except OSError:
        return []
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


def _installs(home: Path | None) -> Probe:
    def probe() -> Iterator[tuple[str, Path | str]]:
        for root in install_roots(home):
            majors = _majors_below(root)
            if not majors:
                yield "sandbox install", f"nothing installed in {root}"
            for major in majors:
                yield "sandbox install", root / str(major) / "bin"

    return probe


def _debian() -> Iterator[tuple[str, Path | str]]:
    majors = _majors_below(DEBIAN)
    if not majors:
        yield str(DEBIAN), f"no {DEBIAN}/<major>/bin"
    for major in majors:
        yield str(DEBIAN), DEBIAN / str(major) / "bin"


def _from_path() -> Iterator[tuple[str, Path | str]]:
    found = {name: shutil.which(name) for name in REQUIRED}
    if not all(found.values()):
        yield "PATH", "not all of " + ", ".join(REQUIRED) + " are on PATH"
        return
    # Resolve symlinks: /usr/local/bin/pg_ctl may point into /usr/lib/postgresql/15/bin.
    dirs = {Path(p).resolve().parent for p in found.values() if p}
    if len(dirs) != 1:
        yield "PATH", f"they resolve to different folders: {sorted(map(str, dirs))}"
        return
    yield "PATH", dirs.pop()


@functools.lru_cache(maxsize=4)
def _pg_config_bindir(exe: str) -> Path | str:
    # Cached: every service start looks, and this is the one probe that costs a process.
    try:
        out = subprocess.run(
            [exe, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"pg_config --bindir failed: {e}"
    return Path(out)


def _from_pg_config() -> Iterator[tuple[str, Path | str]]:
    exe = shutil.which("pg_config")
    yield "pg_config", _pg_config_bindir(exe) if exe else "pg_config is not on PATH"


def _from_pgserver() -> Iterator[tuple[str, Path | str]]:
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        yield "pgserver (PyPI)", "the pgserver package is not installed"
        return
    yield "pgserver (PyPI)", Path(spec.origin).parent / "pginstall" / "bin"


def _scan(probes: Iterable[Probe], tried: list[str]) -> list[Found]:
    """Every usable installation the probes name, in their order, each real folder once."""
    found: dict[Path, Found] = {}
    for probe in probes:
        for origin, place in probe():
            if isinstance(place, Path):
                if lacks := missing(place):
                    place = f"{place} lacks {', '.join(lacks)}"
                else:
                    bindir = place.resolve()
                    try:
                        major = server_major(bindir)
                    except PgBinariesNotFound as e:
                        place = str(e)
                    else:
                        found.setdefault(bindir, Found(bindir, major, origin))
                        continue
            tried.append(f"{origin}: {place}")
    return list(found.values())


def available(home: Path | None = None) -> list[Found]:
    """Every PostgreSQL installation found, in search order (see the module docstring)."""
    return _scan((_installs(home), _debian, _from_path, _from_pg_config, _from_pgserver), [])


# ---------------------------------------------------------------------------- choosing


def _override() -> Found | None:
    env = os.environ.get(ENV_BINDIR)
    if not env:
        return None
    bindir = Path(env).expanduser()
    if lacks := missing(bindir):
        raise PgBinariesNotFound(f"${ENV_BINDIR}={env} lacks executable {', '.join(lacks)}")
    bindir = bindir.resolve()
    return Found(bindir, server_major(bindir), f"${ENV_BINDIR}")


def choose(major: int | None = None, home: Path | None = None, *, exact: bool = False) -> Choice:
    """The installation to run ``major`` with: that major, else the nearest newer, else older.

    ``exact`` refuses any other major (a data folder runs only on the major that made it).
    ``home`` is the sandbox's home, whose installs come first.
    """
    if (pinned := _override()) is not None:
        if exact and major is not None and pinned.major != major:
            raise PgBinariesNotFound(
                f"${ENV_BINDIR}={pinned.bindir} is PostgreSQL {pinned.major}, "
                f"not the {major} needed here"
            )
        return Choice(pinned, major)
    tried = [f"${ENV_BINDIR}: not set"]
    if major is None:  # the machine's default first, as before installs existed
        probes: tuple[Probe, ...] = (_from_path, _from_pg_config, _debian, _from_pgserver)
        found = _scan((*probes, _installs(home)), tried)
        ranked = found
    else:
        found = _scan(
            (_installs(home), _debian, _from_path, _from_pg_config, _from_pgserver), tried
        )
        order = {f.bindir: i for i, f in enumerate(found)}

        def rank(f: Found) -> tuple[int, int, int]:
            side = 0 if f.major == major else 1 if f.major > major else 2
            return side, abs(f.major - major), order[f.bindir]

        ranked = sorted(found, key=rank)
        if exact:
            ranked = [f for f in ranked if f.major == major]
    if ranked:
        return Choice(ranked[0], major)
    have = ", ".join(f"{f.major} ({f.bindir})" for f in found) or "none"
    want = f"PostgreSQL {major}" if major is not None else "PostgreSQL"
    raise PgBinariesNotFound(
        f"{want} server binaries (initdb, pg_ctl, postgres) not found; majors found: {have}. "
        "Tried:\n  " + "\n  ".join(tried) + "\nInstall one with "
        f"`pgcloud-nb sandbox install-postgres {major or 18}`, or apt-get install postgresql, "
        f"or set ${ENV_BINDIR}."
    )


def find_bindir(major: int | None = None, home: Path | None = None) -> Path:
    """The bin folder to run ``major`` with (see :func:`choose`); any major when ``None``."""
    return choose(major, home).bindir


def datadir_major(pgdata: Path) -> int | None:
    """The major that made the data folder ``pgdata`` (its PG_VERSION), or None."""
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def for_node(pgdata: Path, requested: int | None = None, home: Path | None = None) -> Choice:
    """The installation to run the server of ``pgdata`` with.

    The major that made the data folder, exactly: PostgreSQL runs a data folder on
    no other, so a service made on 18 while 17 was missing stays on 18 after 17 is
    installed, and a copy (restore, replica, standby) runs on its source's major.
    A folder not made yet gets :func:`choose` for ``requested``.
    """
    made = datadir_major(pgdata)
    if made is None:
        return choose(requested, home)
    found = choose(made, home, exact=True).found
    return Choice(found, requested, made_by=made if made != requested else None)
