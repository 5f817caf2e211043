"""Config writes are crash-consistent: a ``kill -9`` anywhere in a write never leaves
``GET /config``, the settings files and the running servers disagreeing.

The kill loop stops the sandbox at every named step of a write
(``PGCLOUD_SANDBOX_CRASH_AT``, :data:`pgcloud_nb.sandbox.services.configs.STEPS`)
on a service with an HA standby, then at a few random moments; after each kill
the sandbox starts again and the test compares, on every node, what the API
reports, what the user settings file says and what the server runs (``SHOW``,
or ``pending_restart`` for a setting that needs one). It also checks each
write's fate: cut short before its commit it never happened, after it it is
finished (pgConfig and pgBouncerConfig together), and a write in flight whose
value the server refuses after all is undone. Each start checks the previous
kill and arms the next crash point, so the loop costs one sandbox start per kill.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from test_api import CREATE, org_client, result, wait_state

from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings
from pgcloud_nb.sandbox.crashpoints import ENV
from pgcloud_nb.sandbox.services.configs import STEPS
from pgcloud_nb.sandbox.store import Store

pytestmark = pytest.mark.slow

# Every setting the loop writes; none is a sandbox-managed (base) setting.
TOUCHED = ("lock_timeout", "statement_timeout", "work_mem", "autovacuum_max_workers")
Config = tuple[dict[str, str], dict[str, str]]  # (pgConfig, pgBouncerConfig)

# (step, method, body). POST replaces both sections, PATCH merges into them. Values are
# written the way SHOW prints them, so the file, the API and the server compare as text.
WRITES: list[tuple[str, str, Config]] = [
    ("config:validated", "POST", ({"lock_timeout": "3s", "work_mem": "8MB"}, {})),
    ("config:committed", "PATCH", ({"lock_timeout": "4s"}, {"default_pool_size": "21"})),
    ("config:file-staged", "POST", ({"lock_timeout": "5s", "statement_timeout": "50s"}, {})),
    # autovacuum_max_workers needs a restart: it stays pending, as after an uncut write.
    ("config:file-replaced", "POST", ({"lock_timeout": "6s", "autovacuum_max_workers": "4"}, {})),
    ("config:reloaded", "PATCH", ({"statement_timeout": "51s"}, {"default_pool_size": "22"})),
    ("config:standby-file-staged", "POST", ({"lock_timeout": "7s", "work_mem": "9MB"}, {})),
    ("config:standby-file-replaced", "PATCH", ({"work_mem": "10MB"}, {})),
    ("config:standby-reloaded", "POST", ({"lock_timeout": "8s"}, {"default_pool_size": "23"})),
    ("config:settled", "PATCH", ({"lock_timeout": "9s"}, {"default_pool_size": "24"})),
    # The primary's file cannot be written (its temporary name is taken by a folder):
    # the kill lands before the undo is committed. The commit decided: once the folder
    # is gone, the start finishes the write. (A primary that is down takes the write
    # for its next start: docs/api-behaviour.md, "Config writes while the server is down".)
    ("config:refused", "POST", ({"lock_timeout": "10s", "work_mem": "11MB"}, {})),
]
RANDOM_KILLS = 3


def test_every_step_is_a_crash_point() -> None:
    assert {step for step, _, _ in WRITES} == set(STEPS)


class Loop:
    """One sandbox home killed and started again, with the checks between."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.home = home
        self.sb = Sandbox(home, Settings(home=home, rate_limit=0, sample_interval=60))
        self.monkeypatch = monkeypatch
        self.info: SandboxInfo | None = None
        self.svc: dict[str, Any] = {}
        self.standby = ("", 0)  # (folder, port) of the HA standby
        self.disagreements: list[str] = []

    # -- the sandbox

    def start(self, crash_at: str | None = None) -> SandboxInfo:
        if crash_at:  # the server process inherits our environment when it starts
            self.monkeypatch.setenv(ENV, crash_at)
        try:
            self.info = self.sb.start(timeout=120)
        finally:
            self.monkeypatch.delenv(ENV, raising=False)
        return self.info

    def start_and_check(self, fates: list[Config], crash_at: str | None = None) -> Config:
        """Start (arming ``crash_at``), check every side agrees, and that the configuration
        is one of ``fates``; returns it."""
        self.start(crash_at)
        found = self.check()
        assert found in fates, (found, fates)
        return found

    def running(self) -> SandboxInfo:
        assert self.info is not None
        return self.info

    def api(self) -> httpx.Client:
        return org_client(self.running())

    def kill(self) -> None:
        os.kill(self.running().pid, signal.SIGKILL)
        self.wait_dead()

    def wait_dead(self) -> None:
        deadline = time.monotonic() + 30
        while self.sb.status() is not None:  # reaps our child, so the pid really goes
            assert time.monotonic() < deadline, "the sandbox outlived its crash point"
            time.sleep(0.05)

    # -- what each side says

    def nodes(self) -> list[tuple[Path, int]]:
        """(data folder, port) of the primary and its standby."""
        clusters = (self.home / "clusters").resolve()
        sid = self.svc["id"]
        return [
            (clusters / sid / "pgdata", self.svc["port"]),
            (clusters / self.standby[0] / "pgdata", self.standby[1]),
        ]

    def dsn(self, port: int) -> str:
        dsn = str(self.svc["connectionString"])
        return dsn.replace(f":{self.svc['port']}/", f":{port}/")

    def config(self) -> Config:
        with self.api() as api:
            got = result(api.get(f"/postgres/{self.svc['id']}/config"))
        return dict(got["pgConfig"]), dict(got["pgBouncerConfig"])

    def server(self, port: int) -> dict[str, tuple[str, bool, bool]]:
        """name -> (SHOW, pending_restart, at its built-in default) for TOUCHED, plus
        every name the server knows among them (to tell unsupported keys apart)."""
        deadline = time.monotonic() + 90
        while True:
            try:
                with psycopg.connect(self.dsn(port), autocommit=True, connect_timeout=5) as conn:
                    rows = conn.execute(
                        "SELECT name, current_setting(name), pending_restart,"
                        " setting = boot_val FROM pg_settings WHERE name = ANY(%s)",
                        [list(TOUCHED)],
                    ).fetchall()
                return {r[0]: (r[1], r[2], r[3]) for r in rows}
            except psycopg.OperationalError:  # a node still starting after the restart
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def check(self) -> Config:
        """Compare the API, each node's file and each node's server; record disagreements."""
        with self.api() as api:
            wait_state(api, self.svc["id"], "running", timeout=120)
        pg, bouncer = self.config()
        for pgdata, port in self.nodes():
            running = self.server(port)
            file = read_user_conf(pgdata / "pgcloud.conf")
            wanted = {k: v for k, v in pg.items() if k in running}
            if file != wanted:
                self.disagreements.append(f"{pgdata.parent.name}: file {file} != API {wanted}")
            for name, (shown, pending, default) in running.items():
                if pending:
                    continue  # it takes the file's value at the next restart, as after any write
                if name in pg and shown != pg[name]:
                    self.disagreements.append(
                        f"{pgdata.parent.name}: SHOW {name}={shown}, API {pg[name]}"
                    )
                if name not in pg and not default:
                    self.disagreements.append(
                        f"{pgdata.parent.name}: {name}={shown} is no longer set"
                    )
        return pg, bouncer


def recorded_standby(home: Path, sid: str, timeout: float = 180) -> tuple[str, int]:
    """(folder, port) of the service's HA standby once the store records it (a standby still
    being built when the sandbox is killed is a stray, made again at the next start)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True) as db:
            found = db.execute("SELECT standbys FROM services WHERE id = ?", (sid,)).fetchone()
        standbys = json.loads(found[0]) if found else []
        if standbys:
            return str(standbys[0]["dir"]), int(standbys[0]["port"])
        assert time.monotonic() < deadline, "the HA standby was never built"
        time.sleep(0.2)


def read_user_conf(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z_][\w.]*) = '(.*)'", line)
        if m:
            found[m.group(1)] = m.group(2).replace("''", "'")
    return found


def after(old: Config, method: str, body: Config) -> Config:
    if method == "POST":
        return dict(body[0]), dict(body[1]) or {"default_pool_size": "20"}
    return {**old[0], **body[0]}, {**old[1], **body[1]}


def send(info: SandboxInfo, sid: str, method: str, body: Config) -> httpx.Response | None:
    """The write; None when the server died before answering."""
    try:
        with org_client(info) as api:
            return api.request(
                method,
                f"/postgres/{sid}/config",
                json={"pgConfig": body[0], "pgBouncerConfig": body[1]},
            )
    except httpx.HTTPError:
        return None


@pytest.fixture
def loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    tmp_path.chmod(0o755)
    looped = Loop(tmp_path / "home", monkeypatch)
    yield looped
    looped.sb.stop()
    shutil.rmtree((tmp_path / "home" / "clusters").resolve(), ignore_errors=True)


def test_kill_loop_over_config_writes(loop: Loop, figures: dict[str, str]) -> None:
    loop.start()
    created = ({"lock_timeout": "2s", "work_mem": "7MB"}, {"default_pool_size": "20"})
    with loop.api() as api:
        body = {**CREATE, "haType": "async", "pgConfig": created[0]}
        loop.svc = result(api.post("/postgres", json=body))
        wait_state(api, loop.svc["id"], "running", timeout=120)
    sid = loop.svc["id"]
    loop.standby = recorded_standby(loop.home, sid)
    # Settings given at create hold at once, on the standby too.
    assert loop.check() == created
    loop.kill()  # idle

    # A write cut short whose value the server refuses after all is undone from its
    # undo record (what a crash leaves when the server's own check refused the file).
    undo = {"pg_config": {"lock_timeout": "15s"}, "pg_bouncer_config": {"default_pool_size": "25"}}
    store = Store(loop.home / "state.db")
    store.update(sid, pg_config={"lock_timeout": "-5s"}, config_undo=undo)
    store.close()
    fates: list[Config] = [({"lock_timeout": "15s"}, {"default_pool_size": "25"})]

    # Each start checks the previous write's fate and arms the next crash point, so
    # every kill is followed by exactly one start. The servers outlive every kill.
    iterations = 0
    for step, method, body in WRITES:
        old = loop.start_and_check(fates, crash_at=step)
        blocker = loop.nodes()[0][0] / "pgcloud.conf.tmp"
        if step == "config:refused":
            blocker.mkdir()
        answer = send(loop.running(), sid, method, body)
        assert answer is None, f"{step} was never reached: {answer.status_code} {answer.text}"
        loop.wait_dead()
        if blocker.is_dir():
            blocker.rmdir()
        iterations += 1
        # Before the commit the write never happened; from the commit on it is finished.
        fates = [old] if step == "config:validated" else [after(old, method, body)]

    rng = random.Random(11)
    for i in range(RANDOM_KILLS):
        old = loop.start_and_check(fates)
        body = ({"lock_timeout": f"{12 + i}s", "work_mem": f"{12 + i}MB"}, {})
        writer = threading.Thread(target=send, args=(loop.running(), sid, "POST", body))
        writer.start()
        time.sleep(rng.uniform(0.0, 0.4))
        loop.kill()
        writer.join()
        iterations += 1
        fates = [old, after(old, "POST", body)]  # whichever side of the commit it fell
    loop.start_and_check(fates)

    figures["kill-loop iterations over config writes"] = (
        f"{iterations}, API/server disagreements: {len(loop.disagreements)}"
    )
    assert not loop.disagreements, loop.disagreements
