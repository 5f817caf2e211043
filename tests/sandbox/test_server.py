"""The sandbox server process: start, attach, status, stop, the lock, crashes.

Most tests run the real process machinery on a stand-in app
(``standin_app.py``, selected by ``$PGCLOUD_SANDBOX_APP``), so they need no
PostgreSQL. The tests at the end run the real app.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pgcloud_nb.sandbox.errors import SandboxError
from pgcloud_nb.sandbox.launcher import (
    EXIT_LOCKED,
    LOCK_WAIT,
    Sandbox,
    SandboxInfo,
    _pid_alive,
)
from pgcloud_nb.sandbox.settings import Settings

HERE = Path(__file__).parent
StartFn = Callable[..., tuple[Sandbox, SandboxInfo]]


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCLOUD_SANDBOX_APP", "standin_app:create_app")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def started(standin: None, tmp_path: Path) -> Iterator[StartFn]:
    """Start stand-in sandboxes in fresh homes; stop them all afterwards."""
    sandboxes: list[Sandbox] = []

    def start(name: str = "home", **knobs: object) -> tuple[Sandbox, SandboxInfo]:
        settings = Settings(home=tmp_path / name, rate_limit=0).with_(**knobs)
        sb = Sandbox(settings=settings)
        sandboxes.append(sb)
        return sb, sb.start(timeout=30)

    yield start
    for sb in sandboxes:
        sb.stop(timeout=5)


def alive(pid: int) -> bool:
    return _pid_alive(pid)


def get_orgs(info: SandboxInfo) -> httpx.Response:
    return httpx.get(f"{info.url}/v1/organizations", auth=(info.key_id, info.key_secret), timeout=5)


def test_start_status_stop(started: StartFn) -> None:
    sb, info = started()
    assert info.url.startswith("http://127.0.0.1:")
    assert info.home == sb.home.path and alive(info.pid)
    r = get_orgs(info)
    assert r.status_code == 200 and r.json()["result"][0]["id"] == info.org_id

    data = json.loads(sb.home.server_file.read_text())
    assert data["url"] == info.url and data["pid"] == info.pid and data["started_at"]
    creds = sb.home.path / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert os.getpgid(info.pid) == info.pid  # its own session: detached from ours

    assert sb.start() == info  # idempotent: attaches, no second process
    assert Sandbox(sb.home.path).status() == info

    assert sb.stop() is True
    assert not alive(info.pid)
    assert not sb.home.server_file.exists()
    # SIGTERM was graceful: the app's lifespan ran its shutdown.
    assert (sb.home.path / "standin-shutdown").read_text() == str(info.pid)
    assert sb.status() is None
    assert sb.stop() is False


def test_info_masks_secret_and_exports_env(started: StartFn) -> None:
    _, info = started()
    assert info.key_secret not in repr(info) and "***" in repr(info)
    assert info.env() == {
        "CLICKHOUSE_API_URL": info.url,
        "CLICKHOUSE_CLOUD_API_KEY": info.key_id,
        "CLICKHOUSE_CLOUD_API_SECRET": info.key_secret,
        "CLICKHOUSE_ORG_ID": info.org_id,
    }


def test_two_homes_at_once_and_a_fixed_port(started: StartFn) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, a = started("a")
    _, b = started("b", port=port)
    assert b.url == f"http://127.0.0.1:{port}"
    assert a.url != b.url and a.pid != b.pid and a.key_id != b.key_id
    assert get_orgs(a).status_code == 200 and get_orgs(b).status_code == 200
    # One home's key does not open the other.
    assert httpx.get(f"{a.url}/v1/organizations", auth=(b.key_id, b.key_secret)).status_code == 401


def test_lock_keeps_one_server_per_home(started: StartFn) -> None:
    sb, info = started()
    env = {**os.environ, **sb.settings.to_env()}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pgcloud_nb.sandbox"], env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == EXIT_LOCKED
    assert b"holds the lock" in proc.stderr
    assert time.monotonic() - t0 < 15
    assert sb.status() == info  # untouched


def test_kill_9_then_start_again(started: StartFn) -> None:
    sb, info = started()
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.status() is None  # server.json is stale, the pid is dead
    again = sb.start(timeout=30)
    assert again.pid != info.pid and again.key_secret == info.key_secret


def test_stop_after_kill_9_still_stops_clusters(
    started: StartFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, info = started()
    calls: list[Path] = []

    def stop_all(clusters_dir: Path) -> int:
        calls.append(clusters_dir)
        return 2

    fake = types.ModuleType("pgcloud_nb.sandbox.postgres.cluster")
    fake.stop_all = stop_all  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pgcloud_nb.sandbox.postgres.cluster", fake)
    import pgcloud_nb.sandbox as pkg

    monkeypatch.setattr(pkg, "engine", fake, raising=False)
    sb.home.clusters_dir.mkdir()
    os.kill(info.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert sb.stop() is True  # no server left, but two clusters were
    assert calls == [sb.home.clusters_dir]
    assert not sb.home.server_file.exists()


def test_stale_pid_is_never_signalled(standin: None, tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "h", Settings(home=tmp_path / "h"))
    sb.home.ensure()
    # A live process that is not a sandbox server (no lock held): stop must leave it alone.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sb.home.write_server({"url": "http://127.0.0.1:9", "pid": bystander.pid})
        assert sb.status() is None
        assert sb.stop() is False
        assert bystander.poll() is None
        assert not sb.home.server_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_slow_shutdown_gets_sigkill(started: StartFn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_SLOW_STOP", "60")
    sb, info = started()
    t0 = time.monotonic()
    assert sb.stop(timeout=1) is True
    assert time.monotonic() - t0 < 10
    assert not alive(info.pid)


def test_failed_startup_raises_with_log_tail(
    standin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "1")
    sb = Sandbox(tmp_path / "h", Settings(home=tmp_path / "h"))
    with pytest.raises(SandboxError, match="exited with code 3") as err:
        sb.start(timeout=30)
    assert "standin startup failed on purpose" in str(err.value)
    assert sb.status() is None
    assert not sb.home.server_file.exists()


def test_bad_app_path_raises(standin: None, tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "h", Settings(home=tmp_path / "h"), app="no_such_module:create_app")
    with pytest.raises(SandboxError, match="exited with code 1") as err:
        sb.start(timeout=30)
    assert "no_such_module" in str(err.value)


def test_busy_port_raises(started: StartFn, tmp_path: Path) -> None:
    _, a = started("a")
    port = int(a.url.rpartition(":")[2])
    sb = Sandbox(settings=Settings(home=tmp_path / "b", port=port))
    with pytest.raises(SandboxError, match="Address already in use"):
        sb.start(timeout=30)


def test_probes_use_no_budget_and_skip_faults(started: StartFn) -> None:
    sb, info = started(rate_limit=2, rate_window=60.0)
    for _ in range(5):
        assert sb.status() == info
    assert [get_orgs(info).status_code for _ in range(3)] == [200, 200, 429]
    r = get_orgs(info)
    assert r.json()["status"] == 429 and int(r.headers["retry-after"]) > 0

    sb2, info2 = started("faulty", faults={"503": 1.0})
    assert sb2.status() == info2  # an injected 503 never hides a live server
    assert get_orgs(info2).status_code == 503


def test_drop_on_the_server_process(started: StartFn) -> None:
    sb, info = started(faults={"drop": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        get_orgs(info)
    assert sb.status() == info  # probes are never dropped


def test_concurrent_starts_share_one_server(standin: None, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", rate_limit=0)
    results: list[SandboxInfo] = []
    threads = [
        threading.Thread(target=lambda: results.append(Sandbox(settings=settings).start(30)))
        for _ in range(3)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 3 and len({r.pid for r in results}) == 1
    finally:
        Sandbox(settings=settings).stop(timeout=5)
    # The losers' servers, still waiting for the lock, were stopped: none takes over.
    time.sleep(LOCK_WAIT + 0.5)
    assert _servers_in(settings.home) == []


def _servers_in(home: Path) -> list[int]:
    """Sandbox server processes running in ``home`` (their working directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == home:
                found.append(int(proc.name))
    return found


def test_settings_reach_the_server(started: StartFn) -> None:
    _, info = started(latency=0.3)
    t0 = time.monotonic()
    assert get_orgs(info).status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_import_is_lazy() -> None:
    code = (
        "import sys, pgcloud_nb.sandbox as s; s.Sandbox; s.Settings; s.ensure_running;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the real app ----------------------------------------------------------------------

needs_engine = pytest.mark.skipif(
    importlib.util.find_spec("pgcloud_nb.sandbox.postgres.cluster") is None,
    reason="the engine (pgcloud_nb/sandbox/engine.py) has not landed yet",
)


def _accepts(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


@needs_engine
@pytest.mark.slow
def test_real_app_kill_9_then_stop_stops_postgres(tmp_path: Path) -> None:
    home = tmp_path / "real"
    sb = Sandbox(home, Settings(home=home, rate_limit=0))
    info = sb.start()
    try:
        base = f"{info.url}/v1/organizations/{info.org_id}/postgres"
        auth = (info.key_id, info.key_secret)
        body = {"name": "k9", "provider": "aws", "region": "us-east-1", "size": "m6gd.large",
                "postgresVersion": "17"}  # fmt: skip
        r = httpx.post(base, json=body, auth=auth, timeout=60)
        assert r.status_code == 200, r.text
        pg_id, dsn = r.json()["result"]["id"], r.json()["result"]["connectionString"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/{pg_id}", auth=auth).json()["result"]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(info.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert _accepts(dsn), "PostgreSQL outlives a kill -9 of the API server"
    finally:
        assert sb.stop() is True
    assert not _accepts(dsn)  # stop() found and stopped the orphaned cluster
