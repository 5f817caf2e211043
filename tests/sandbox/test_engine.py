"""The engine against real PostgreSQL servers: no mocks, every cluster removed afterwards.

The folders come from pytest's tmp_path (0700 under /tmp/pytest-of-root when
root), so they also exercise usable_clusters_dir's move to a reachable folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from pgcloud_nb.sandbox.errors import ConfigValueError, EngineError, PgBinariesNotFound
from pgcloud_nb.sandbox.postgres import binaries, certs
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port, stop_all
from pgcloud_nb.sandbox.postgres.conffiles import USER_CONF
from pgcloud_nb.sandbox.postgres.osuser import _traversable, pg_user, usable_clusters_dir

Make = Callable[..., Cluster]
HOST = "svc-1234abcd.pgtest.c0.us-east-1.aws.pg.clickhouse.cloud"

try:
    binaries.find_bindir()
except PgBinariesNotFound as e:  # pragma: no cover - machines without PostgreSQL
    pytest.skip(f"no PostgreSQL: {e}", allow_module_level=True)


def new_password() -> str:
    return "Pw1" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def clusters_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    wanted = tmp_path_factory.mktemp("engine") / "clusters"
    made = usable_clusters_dir(wanted)
    real = made.resolve()
    yield made
    stop_all(made, mode="immediate")
    shutil.rmtree(real, ignore_errors=True)
    template = (wanted.parent / "templates").resolve()
    shutil.rmtree(template, ignore_errors=True)


@pytest.fixture
def make(clusters_dir: Path) -> Iterator[Make]:
    """Make started clusters; each one is removed when the test ends."""
    made: list[Cluster] = []

    def _make(password: str = "", *, start: bool = True) -> Cluster:
        c = Cluster(clusters_dir / f"c{len(made)}-{secrets.token_hex(4)}", free_port())
        made.append(c)
        c.init(
            password or new_password(),
            hostnames=[HOST],
            template_dir=clusters_dir.parent / "templates",
        )
        if start:
            c.start()
        return c

    yield _make
    for c in made:
        c.remove()


def url(c: Cluster, password: str, **params: str) -> str:
    """The connection string the API hands out, plus extra libpq parameters."""
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    return (
        f"postgres://postgres:{password}@{HOST}:{c.port}/postgres"
        f"?hostaddr=127.0.0.1&channel_binding=require{extra}"
    )


def tls_version(conninfo: str) -> str:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_connect_over_tls_with_password(make: Make, tmp_path: Path) -> None:
    pw = new_password()
    c = make(pw)
    ca = tmp_path / "ca.pem"
    ca.write_text(c.ca_pem())
    assert tls_version(url(c, pw)) == "TLSv1.3"
    assert tls_version(url(c, pw, sslmode="verify-ca", sslrootcert=str(ca))) == "TLSv1.3"
    assert tls_version(url(c, pw, sslmode="verify-full", sslrootcert=str(ca))) == "TLSv1.3"
    psql = subprocess.run(
        ["psql", url(c, pw), "-Atc", "SELECT current_user"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert psql.stdout.strip() == "postgres", psql.stderr
    # Refused: a wrong password, a connection without TLS, TLS below 1.3, a name not in the SAN.
    refused = [
        url(c, "Wrong-password-123"),
        f"host=127.0.0.1 port={c.port} user=postgres password={pw} sslmode=disable",
        url(c, pw, ssl_max_protocol_version="TLSv1.2"),
        f"host=not-the-host.example hostaddr=127.0.0.1 port={c.port} user=postgres "
        f"password={pw} sslmode=verify-full sslrootcert={ca}",
    ]
    for conninfo in refused:
        with pytest.raises(psycopg.OperationalError):
            tls_version(conninfo)


def test_server_certificate_names_the_host(make: Make) -> None:
    c = make()
    cert = x509.load_pem_x509_certificate((c.pgdata / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {HOST, "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    ca = x509.load_pem_x509_certificate(c.ca_pem().encode())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


def test_config_that_needs_a_restart(make: Make) -> None:
    c = make()
    assert c.apply_config({"max_connections": "42", "work_mem": "8MB"}) == ["max_connections"]
    assert c.pending_restart() == ["max_connections"]
    with c.connect() as conn:  # a reloadable setting applies at once
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)
    c.restart()
    with c.connect() as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("42",)
    assert c.pending_restart() == []


@pytest.mark.parametrize(
    ("settings", "param", "words"),
    [
        ({"work_mem": "lots"}, "work_mem", 'invalid value for parameter "work_mem"'),
        ({"max_connections": "many"}, "max_connections", "invalid value"),
        ({"no_such_setting": "1"}, "no_such_setting", "unrecognized configuration parameter"),
        ({"bad name; x": "1"}, "bad name; x", "invalid configuration parameter name"),
    ],
)
def test_refused_config_keeps_the_previous_settings(
    make: Make, settings: dict[str, str], param: str, words: str
) -> None:
    c = make()
    c.apply_config({"work_mem": "8MB"})
    before = (c.pgdata / USER_CONF).read_text()
    with pytest.raises(ConfigValueError) as caught:
        c.apply_config({"work_mem": "16MB", **settings})
    assert caught.value.param == param
    assert words in caught.value.pg_message
    assert (c.pgdata / USER_CONF).read_text() == before
    with c.connect() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)
    c.restart()  # the server still starts: the refused file never stayed
    with c.connect() as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)


def test_config_values_are_quoted(make: Make) -> None:
    c = make()
    tricky = "it's a \\ backslash # not a comment"
    assert c.apply_config({"application_name": tricky, "search_path": '"$user", public'}) == []
    with c.connect() as conn:
        assert conn.execute("SHOW application_name").fetchone() == (tricky,)
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
    assert c.apply_config({}) == []  # a full replacement: {} clears them
    with c.connect() as conn:
        assert conn.execute("SHOW application_name").fetchone() != (tricky,)


def test_set_password_keeps_the_secret_out_of_stats_and_logs(make: Make) -> None:
    old, new = new_password(), new_password()
    c = make(old)
    c.set_password(new)
    with pytest.raises(psycopg.OperationalError):
        tls_version(url(c, old))
    assert tls_version(url(c, new)) == "TLSv1.3"
    with psycopg.connect(url(c, new), autocommit=True) as conn:  # utility statements are tracked
        conn.execute("ALTER ROLE postgres SET work_mem = '5MB'")
    with c.connect() as conn:
        rows = conn.execute("SELECT query FROM pg_stat_statements").fetchall()
    queries = "\n".join(r[0] for r in rows)
    assert "ALTER ROLE postgres SET work_mem" in queries
    for secret in (old, new):
        assert secret not in queries
        for f in c.log_dir.iterdir():
            assert secret not in f.read_text(errors="replace"), f


def test_restart_changes_start_time(make: Make) -> None:
    c = make()
    before, pid = c.start_time(), c.postmaster_pid()
    c.restart()
    assert c.start_time() > before
    assert c.postmaster_pid() not in (None, pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_runs_as_the_unprivileged_user(make: Make) -> None:
    c = make()
    uid = pg_user().pw_uid
    assert uid != 0
    pid = c.postmaster_pid()
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(map(int, uids)) == {uid}
    assert c.pgdata.stat().st_uid == uid


def test_usable_clusters_dir_is_reachable(tmp_path: Path) -> None:
    wanted = tmp_path / "deep" / "clusters"
    got = usable_clusters_dir(wanted)
    try:
        assert got == wanted and wanted.is_dir()
        assert _traversable(wanted.resolve(), pg_user())
        assert usable_clusters_dir(wanted) == wanted  # idempotent
    finally:
        if wanted.is_symlink():
            shutil.rmtree(wanted.resolve())


def test_a_new_object_adopts_the_running_server(make: Make) -> None:
    c = make()
    again = Cluster(c.root, c.port)
    assert again.is_running()
    assert again.postmaster_pid() == c.postmaster_pid()
    again.stop()
    assert not c.is_running() and c.postmaster_pid() is None
    c.stop()  # no error when already stopped


def test_start_after_kill_9(make: Make) -> None:
    pw = new_password()
    c = make(pw)
    pid = c.postmaster_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while c.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not c.is_running()
    # Orphaned backends may hold shared memory a little longer; start() must cope.
    deadline = time.monotonic() + 20
    while True:
        try:
            c.start()
            break
        except EngineError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert tls_version(url(c, pw)) == "TLSv1.3"


def test_failed_start_shows_the_server_log(make: Make) -> None:
    c = make(start=False)
    (c.pgdata / USER_CONF).write_text("shared_buffers = 'plenty'\n")
    with pytest.raises(EngineError, match=r'invalid value for parameter "shared_buffers"'):
        c.start(timeout=10)
    assert not c.is_running()


def test_remove_deletes_every_file(make: Make) -> None:
    c = make()
    c.remove()
    assert not c.root.exists()
    assert not c.is_running()


def test_stop_all(make: Make, clusters_dir: Path) -> None:
    a, b = make(), make()
    stopped = stop_all(clusters_dir)
    assert stopped >= 2
    assert not a.is_running() and not b.is_running()
    assert stop_all(clusters_dir) == 0


def test_find_bindir_names_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = binaries.find_bindir()
    assert binaries.server_major(bindir) >= 13
    monkeypatch.setenv(binaries.ENV_BINDIR, str(bindir))
    assert binaries.find_bindir() == bindir.resolve()
    monkeypatch.setenv(binaries.ENV_BINDIR, "/nonexistent/bin")
    with pytest.raises(PgBinariesNotFound, match="PGCLOUD_SANDBOX_PG_BINDIR"):
        binaries.find_bindir()


def test_free_port_is_never_5432() -> None:
    assert all(free_port() != 5432 for _ in range(20))


def test_certs_cover_extra_names() -> None:
    ca, key = certs.make_ca("test CA")
    cert_pem, _ = certs.make_server_cert(ca, key, ["a.example", "b.example"], ["10.0.0.1"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example", "localhost"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.1",
        "127.0.0.1",
        "::1",
    ]
