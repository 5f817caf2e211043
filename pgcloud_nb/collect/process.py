"""The collector as a background process: start, status and stop, as the sandbox does.

The process (``python -m pgcloud_nb.collect.process HOME``) runs in its own
session and keeps its files in ``HOME`` (0700):

    collector.lock   held (``fcntl.flock``) for the process's whole life: one
                     collector per home, and a dead pid is told from a live one
                     even after ``kill -9``
    collector.json   pid, settings, rounds, the last round, an outage in course
                     and the gaps still owed (rewritten atomically; no secret)
    collector.log    its log (never a secret: errors go through ``redact``)

**Credentials never travel in argv or the environment.** The parent writes them
(key id and secret, org, API URL, the store's DSN) as one JSON document into the
child's stdin pipe and closes it; the child reads it once and keeps the secret in
memory only. The child's environment is the parent's without
``CLICKHOUSE_CLOUD_API_SECRET``.

The embedded store (chDB) is one process's at a time: the collector opens it for
a round and closes it after, so a notebook can read the history between rounds
(``Store.open(wait=…)``). A server or ClickHouse Cloud stays connected.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from clickhouse_connect.driver.exceptions import ClickHouseError

from ..client import Client
from ..credentials import SECRET_VAR
from ..pidlock import lock_holder
from ..redaction import redact, remember_secret
from .backfill import Debt
from .collector import (
    DEFAULT_INTERVAL,
    DEFAULT_RESERVE,
    Collector,
    RoundReport,
    RoundSkipped,
    collector_budget,
    collector_retry,
)
from .store import Store, default_path

__all__ = [
    "EXIT_LOCKED",
    "CollectorStatus",
    "default_home",
    "read_status",
    "serve",
    "spawn",
    "stop",
]

EXIT_LOCKED = 75  # another collector holds the home (EX_TEMPFAIL), as the sandbox's server
HOME_ENV = "PGCLOUD_COLLECT_HOME"
LOCK, STATE, LOG = "collector.lock", "collector.json", "collector.log"

CollectorStatus = dict[str, Any]


def default_home() -> Path:
    """``$PGCLOUD_COLLECT_HOME``, else ``collector/`` beside the embedded store's folder."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser().resolve()
    return default_path().parent / "collector"


# -- the parent's side --------------------------------------------------------------------


def spawn(home: Path, config: dict[str, Any], *, timeout: float = 60.0) -> CollectorStatus:
    """Start a collector for ``home`` (or find the running one) and wait for its first round.

    ``config``: ``base_url, key_id, key_secret, org_id, dsn, interval, reserve``.
    """
    if (running := read_status(home)) is not None:
        return running
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    log = home / LOG
    log.touch(mode=0o600)
    env = {k: v for k, v in os.environ.items() if k != SECRET_VAR}
    root = str(Path(__file__).resolve().parents[2])  # the same pgcloud_nb as ours
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgcloud_nb.collect.process", str(home)],
            env=env,
            cwd=home,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this process and its Ctrl-C
        )
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(json.dumps(config).encode())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_status(home)
        ours = state is not None and state.get("started_by") == proc.pid
        if state is not None and ours and (state.get("rounds") or state.get("outage_since")):
            return state
        if (code := proc.poll()) is not None:
            if code == EXIT_LOCKED and (state := read_status(home)) is not None:
                return state  # a concurrent start won
            raise RuntimeError(f"the collector exited with code {code}" + _tail(log))
        time.sleep(0.1)
    raise RuntimeError(f"the collector made no round within {timeout:g} s" + _tail(log))


def read_status(home: Path) -> CollectorStatus | None:
    """The running collector's state, or None (no process holds the home's lock)."""
    pid = _holder(home)
    if pid is None:
        return None
    try:
        state: CollectorStatus = json.loads((home / STATE).read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    state["pid"] = pid
    state["home"] = str(home)
    return state


def stop(home: Path, timeout: float = 30.0) -> bool:
    """SIGTERM (it finishes its round), then SIGKILL past ``timeout``. True if one ran."""
    pid = _holder(home)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _holder(home) is None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
                return True
            time.sleep(0.05)
    return True


def _holder(home: Path) -> int | None:
    """The pid of the process holding the home's lock, if one does."""
    if (text := lock_holder(home / LOCK)) is None:
        return None
    return int(text) if text.isdigit() else -1


def _tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return ("; last lines of " + str(log) + ":\n" + "\n".join(text)) if text else ""


# -- the child's side ---------------------------------------------------------------------


def _lock(home: Path) -> IO[str] | None:
    f = open(home / LOCK, "a+")  # noqa: SIM115 -- the open file *is* the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


class _Stores:
    """The store for a round: opened and closed around it when embedded (one process's)."""

    def __init__(self, dsn: str | None, wait: float) -> None:
        self.dsn, self.wait = dsn, wait
        self.embedded = (dsn or os.environ.get("PGCLOUD_HISTORY_DSN") or "chdb:").startswith(
            "chdb:"
        ) and not (dsn is None and os.environ.get("CLICKHOUSE_HOST"))
        self._held: Store | None = None

    @contextlib.contextmanager
    def round(self) -> Iterator[Store]:
        store = self._held or Store.open(self.dsn, wait=self.wait)
        try:
            yield store
        finally:
            if self.embedded:
                store.close()
            else:
                self._held = store

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


class _RoundStore:
    """The collector's view of the store: the one of the round in course."""

    def __init__(self) -> None:
        self.current: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if self.current is None:
            raise RuntimeError("no store is open outside a round")
        return getattr(self.current, name)


def _write_state(home: Path, state: CollectorStatus) -> None:
    tmp = home / (STATE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, default=str)
    os.replace(tmp, home / STATE)  # never half-written, even under kill -9


def main(argv: list[str] | None = None) -> int:
    """The background process: config from stdin, then :func:`serve` until SIGTERM."""
    home = Path((argv or sys.argv[1:])[0]).resolve()
    config = json.loads(sys.stdin.read() or "{}")
    sys.stdin.close()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    return serve(home, config, stop_event)


def serve(home: Path, config: dict[str, Any], stop_event: threading.Event) -> int:
    """Hold the home's lock and collect until ``stop_event`` (also ``collect run``'s body)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock(home)
    if lock is None:
        return EXIT_LOCKED
    secret = str(config.pop("key_secret"))
    remember_secret(secret)
    interval = float(config.get("interval") or DEFAULT_INTERVAL)
    reserve = int(config.get("reserve") or DEFAULT_RESERVE)
    client = Client(
        key_id=config["key_id"],
        key_secret=secret,
        org_id=config["org_id"],
        base_url=config["base_url"],
        source="collector",
        budget=collector_budget(reserve),
        retry=collector_retry(interval),
    )
    stores = _Stores(config.get("dsn"), wait=max(5.0, interval / 2))
    try:  # a wrong DSN fails here, loudly, not as rounds skipped one by one
        with stores.round():
            pass
    except Exception as e:
        logging.getLogger("pgcloud_nb.collect").error("cannot open the store: %s", redact(str(e)))
        client.close()
        lock.close()
        return 1
    view = _RoundStore()
    state: CollectorStatus = {
        "pid": os.getpid(),
        "started_by": os.getpid(),
        "started_at": time.time(),
        "interval": interval,
        "base_url": config["base_url"],
        "org_id": config["org_id"],
        "key_id": config["key_id"],
        "store": "embedded" if stores.embedded else "server",
        "rounds": 0,
    }

    def saved(collector: Collector, report: RoundReport | None) -> None:
        state.update(
            rounds=collector.rounds,
            reserve=collector.reserve,
            outage_since=collector.outage_since,
            debts=[d.to_json() for d in collector.debts],
        )
        if report is not None:
            state["last_round"] = report.to_json()
        _write_state(home, state)

    collector = _RoundCollector(
        stores,
        view,
        client,
        interval=interval,
        reserve=reserve,
        debts=[Debt.from_json(d) for d in _read_state(home).get("debts", [])],
        on_round=saved,
        on_outage=lambda c: saved(c, None),
        rate_limited=lambda: client.requester.rate_limited,
    )
    saved(collector, None)
    logging.getLogger("pgcloud_nb.collect").info(
        "collecting every %gs for org %s (at most %d requests per 10 s)",
        interval,
        config["org_id"],
        reserve,
    )
    try:
        collector.run(stop_event)
    finally:
        saved(collector, None)
        client.close()
        stores.close()
        lock.close()
    return 0


class _RoundCollector(Collector):
    """A collector whose store is opened for each round (see :class:`_Stores`)."""

    def __init__(self, stores: _Stores, view: _RoundStore, client: Client, **kw: Any) -> None:
        super().__init__(client, view, **kw)  # calls reach the round's Store
        self._stores, self._view = stores, view

    def run_round(self, now: float | None = None) -> RoundReport:
        try:
            opened = self._stores.round()
            store = opened.__enter__()
        except ClickHouseError as e:
            # the embedded folder stayed busy (a notebook reading it): this slot is skipped
            raise RoundSkipped(f"the store is busy: {redact(str(e))[:200]}") from None
        self._view.current = store
        try:
            return super().run_round(now)
        finally:
            self._view.current = None
            opened.__exit__(None, None, None)


def _read_state(home: Path) -> CollectorStatus:
    try:
        data = json.loads((home / STATE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


if __name__ == "__main__":
    sys.exit(main())
