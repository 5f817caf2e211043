"""The sandbox's own secret never reaches a server, nor any program the sandbox runs.

A sandbox is often started from a shell after ``eval "$(pgcloud-nb sandbox env)"``
or from a notebook kernel holding a real cloud key; a server's environment is
readable from SQL (``/proc/<pid>/environ`` for a superuser, and by whoever runs as
the server's user). So servers and every other child get an allow-list.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api import CREATE, org_client, result, wait_state

from pgcloud_nb.sandbox import Sandbox, Settings
from pgcloud_nb.sandbox.postgres.cluster import Cluster, free_port
from pgcloud_nb.sandbox.postgres.osuser import pg_env, usable_clusters_dir
from pgcloud_nb.sandbox.postgres.replication import base_backup

SECRETS = {
    "CLICKHOUSE_CLOUD_API_KEY": "KEY" + secrets.token_hex(10),
    "CLICKHOUSE_CLOUD_API_SECRET": "4b1d" + secrets.token_urlsafe(30),
    "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    "PGPASSWORD": secrets.token_urlsafe(12),
}
# What may reach a server: PATH, locale, time zone, the library path (osuser.ENV_ALLOWED),
# and what a shell exporting them adds.
ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "TZDIR", "LD_LIBRARY_PATH", "PWD"}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _leaks(env: dict[str, str]) -> list[str]:
    bad = [k for k in env if k not in ALLOWED and not k.startswith("LC_")]
    return bad + [k for k, v in SECRETS.items() if v in env.values()]


def test_pg_env_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_MESSAGES", "C")
    env = pg_env()
    assert _leaks(env) == []
    assert env["LC_ALL"] == "C" and env["PATH"] and env["LC_MESSAGES"] == "C"


def test_every_child_the_engine_runs_gets_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """initdb or the template copy, the server, pg_basebackup, settings checks: every
    program started while making, configuring, copying and stopping servers."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    spawned: list[tuple[str, dict[str, str] | None]] = []
    real_init = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
        # postgres --version and pg_config --bindir (finding the binaries, postgres.binaries)
        # run as ourselves and exit at once; no one else may read their environment.
        if not (isinstance(args, list) and str(args[-1]) in ("--version", "--bindir")):
            spawned.append((str(args[0] if isinstance(args, list) else args), kw.get("env")))
        real_init(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    clusters = usable_clusters_dir(tmp_path / "clusters")
    primary = Cluster(clusters / "p", free_port())
    copy = Cluster(clusters / "c", free_port())
    try:
        password = "Pw1" + secrets.token_urlsafe(12)
        primary.init(password, hostnames=["localhost"], template_dir=clusters / ".template")
        primary.start()
        primary.apply_config({"work_mem": "8MB"})
        copy.init_from(lambda pgdata: base_backup(primary, pgdata), {})
        copy.start()
        for pid in filter(None, (primary.postmaster_pid(), copy.postmaster_pid())):
            for process in [pid, *_children(pid)]:
                assert _leaks(_environ(process)) == [], process
    finally:
        copy.remove()
        primary.remove()
        shutil.rmtree(clusters.resolve(), ignore_errors=True)
    programs = {Path(program).name for program, _ in spawned}
    assert {"sh", "postgres", "pg_basebackup"} <= programs | {"sh"}, programs
    inherited = [program for program, env in spawned if env is None and program != "pgrep"]
    assert inherited == [], "these inherited the whole environment"
    assert [(p, _leaks(env)) for p, env in spawned if env and _leaks(env)] == []


@pytest.fixture(scope="module")
def sandbox_with_secrets(sandbox_root: Path) -> Iterator[Any]:
    """A sandbox started from an environment that holds the cloud key and secret."""
    saved = {name: os.environ.get(name) for name in SECRETS}
    os.environ.update(SECRETS)
    home = sandbox_root / "with-secrets"
    sb = Sandbox(home, Settings(home=home, rate_limit=0, sample_interval=2.0))
    try:
        yield sb.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sb.stop()


def test_no_server_sees_the_sandboxs_secret(sandbox_with_secrets: Any) -> None:
    info = sandbox_with_secrets
    assert SECRETS["CLICKHOUSE_CLOUD_API_SECRET"] in _environ(info.pid).values()  # it was there
    with org_client(info) as api:
        created = result(api.post("/postgres", json={**CREATE, "name": "env", "haType": "async"}))
        wait_state(api, created["id"], "running")
        clusters = (info.home / "clusters").resolve()
        deadline = time.monotonic() + 90  # the HA standby: its WAL receiver too
        while len(pidfiles := sorted(clusters.glob("*/pgdata/postmaster.pid"))) < 2:
            assert time.monotonic() < deadline, "the standby never started"
            time.sleep(0.2)
        try:
            assert pidfiles
            checked = 0
            for pidfile in pidfiles:
                pid = int(pidfile.read_text().split()[0])
                for process in [pid, *_children(pid)]:  # archiver, WAL sender/receiver...
                    assert _leaks(_environ(process)) == [], (pidfile, process)
                    checked += 1
            assert checked >= 12
        finally:
            api.delete(f"/postgres/{created['id']}")
