"""The collector as a background process: start, status and stop, as the sandbox does.

The process (``python -m pgcloud_nb.collect.process HOME``) runs in its own
session and keeps its files in ``HOME`` (created 0700; an existing folder must be
ours and writable by us alone):

    collector.lock   held (``fcntl.flock``) for the process's whole life: one
                     collector per home, and a dead pid is told from a live one
                     even after ``kill -9``
    collector.json   pid, settings, rounds, rounds skipped (store busy), the last
                     round, an outage in course and the gaps still owed (rewritten
                     atomically, and at once when a gap is found; no secret)
    collector.log    its log (never a secret: errors go through ``redact``)

**Credentials never travel in argv or the environment.** The parent writes them
(key id and secret, org, API URL, the store's DSN) as one JSON document into the
child's stdin pipe and closes it; the child reads it once and keeps the secret in
memory only. The child's environment is the parent's without
``CLICKHOUSE_CLOUD_API_SECRET``, ``CLICKHOUSE_PASSWORD`` and ``PGCLOUD_HISTORY_DSN``
(the store's DSN, password included, goes through the pipe).

The embedded store (chDB) is one process's at a time: the collector opens it for
a round and closes it after, so a notebook can read the history between rounds
(``Store.open(wait=…)``). A server or ClickHouse Cloud stays connected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..client import Client
from ..credentials import SECRET_VAR
from ..errors import ConfigurationError
from ..redaction import redact, remember_secret
from .backfill import Debt
from .collector import (
    DEFAULT_INTERVAL,
    DEFAULT_RESERVE,
    WINDOW,
    Collector,
    RoundReport,
    collector_budget,
    collector_retry,
)
from .dsn import effective, private_folder
from .home import LOG, RoundCollector, RoundStore, Stores, holder, lock, read_state
from .home import write_state as _write_state
from .store import default_path

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
# Never in the child's environment: the DSN (and its password) comes through the pipe.
_SCRUBBED = (SECRET_VAR, "CLICKHOUSE_PASSWORD", "PGCLOUD_HISTORY_DSN")
# Settings a running collector must share with a start() that finds it.
_SAME = ("base_url", "org_id", "key_id", "interval", "dsn_sha")
_REQUIRED = ("base_url", "key_id", "key_secret", "org_id")

CollectorStatus = dict[str, Any]


def default_home() -> Path:
    """``$PGCLOUD_COLLECT_HOME``, else ``collector/`` beside the embedded store's folder."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser().resolve()
    return default_path().parent / "collector"


# -- the parent's side --------------------------------------------------------------------


def spawn(home: Path, config: dict[str, Any], *, timeout: float = 60.0) -> CollectorStatus:
    """Start a collector for ``home`` (or find the running one) and wait for its first round.

    ``config``: ``base_url, key_id, key_secret, org_id, dsn, interval, reserve``. A
    collector already running with other settings is a ConfigurationError.
    """
    config = {**config, "dsn": effective(config.get("dsn"), default_path())}
    if (running := _settled(home, read_status(home), timeout)) is not None:
        return _same(running, config)
    private_folder(home, "the collector's home")
    log = home / LOG
    log.touch(mode=0o600)
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
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
    try:
        with proc.stdin:
            proc.stdin.write(json.dumps(config).encode())
    except BrokenPipeError:  # it died before reading: its log says why
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        raise RuntimeError(
            f"the collector exited (code {proc.poll()}) before reading its settings" + _tail(log)
        ) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_status(home)
        ours = state is not None and state.get("started_by") == proc.pid
        if state is not None and ours and (state.get("rounds") or state.get("outage_since")):
            return state
        if (code := proc.poll()) is not None:
            if code == EXIT_LOCKED and (state := _settled(home, read_status(home), 30)):
                return _same(state, config)  # a concurrent start won
            raise RuntimeError(f"the collector exited with code {code}" + _tail(log))
        time.sleep(0.1)
    raise RuntimeError(f"the collector made no round within {timeout:g} s" + _tail(log))


def _settled(home: Path, state: CollectorStatus | None, timeout: float) -> CollectorStatus | None:
    """``state`` once the running collector wrote its own (a booting one shows the last's)."""
    deadline = time.monotonic() + timeout
    while state is not None and state.get("started_by") != state["pid"]:
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
        state = read_status(home)
    return state


def _dsn_sha(dsn: str) -> str:
    # Of the redacted DSN: a new password is the same store, and no hash of it is kept.
    return hashlib.sha256(redact(dsn).encode()).hexdigest()[:16]


def _same(running: CollectorStatus, config: dict[str, Any]) -> CollectorStatus:
    """``running`` if it collects what ``config`` asks for; else a ConfigurationError."""
    wanted = {k: config.get(k) for k in _SAME if k != "dsn_sha"}
    wanted["interval"] = float(config.get("interval") or DEFAULT_INTERVAL)
    wanted["dsn_sha"] = _dsn_sha(str(config["dsn"]))
    differ = [k for k, v in wanted.items() if running.get(k) != v]
    if differ:
        shown = ", ".join(
            f"{k}: {running.get(k)!r} running, {wanted[k]!r} asked"
            for k in differ
            if k != "dsn_sha"
        )
        raise ConfigurationError(
            f"a collector already runs for {running.get('home')} (pid {running.get('pid')}) "
            f"with other settings ({shown or 'another store'}): stop it first "
            "(pgcloud-nb collect stop) or use another home"
        )
    return running


def read_status(home: Path) -> CollectorStatus | None:
    """The running collector's state, or None (no process holds the home's lock)."""
    pid = holder(home)
    if pid is None:
        return None
    state: CollectorStatus = read_state(home)
    state["pid"] = pid
    state["home"] = str(home)
    return state


def stop(home: Path, timeout: float | None = None) -> bool:
    """SIGTERM (it ends its round after the request in course), then SIGKILL past
    ``timeout``: by default the worst case of that request (its store wait, retries and
    a rate-limit window). True if one ran."""
    pid = holder(home)
    if pid is None:
        return False
    if timeout is None:
        interval = float(read_state(home).get("interval") or DEFAULT_INTERVAL)
        timeout = max(5.0, interval / 2) + collector_retry(interval).deadline + WINDOW + 15.0
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if holder(home, patience=0.0) is None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
                return True
            time.sleep(0.05)
    return True


def _tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return ("; last lines of " + str(log) + ":\n" + "\n".join(text)) if text else ""


# -- the child's side ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The background process: config from stdin, then :func:`serve` until SIGTERM."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        config = json.loads("" if sys.stdin.isatty() else sys.stdin.read())
        sys.stdin.close()
        missing = [k for k in _REQUIRED if not isinstance(config, dict) or k not in config]
    except ValueError:
        missing = list(_REQUIRED)
    if len(args) != 1 or missing:
        print(
            "usage: python -m pgcloud_nb.collect.process HOME, with its settings as JSON on "
            f"stdin ({', '.join(_REQUIRED)}, ...): `pgcloud-nb collect start` does this",
            file=sys.stderr,
        )
        return 2
    home = Path(args[0]).resolve()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    return serve(home, config, stop_event)


def serve(home: Path, config: dict[str, Any], stop_event: threading.Event) -> int:
    """Hold the home's lock and collect until ``stop_event`` (also ``collect run``'s body)."""
    private_folder(home, "the collector's home")
    held = lock(home)
    if held is None:
        return EXIT_LOCKED
    config["dsn"] = effective(config.get("dsn"), default_path())
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
    stores = Stores(config["dsn"], wait=max(5.0, interval / 2))
    try:  # a wrong DSN fails here, loudly, not as rounds skipped one by one
        with stores.round():
            pass
    except Exception as e:
        logging.getLogger("pgcloud_nb.collect").error("cannot open the store: %s", redact(str(e)))
        client.close()
        held.close()
        return 1
    view = RoundStore()
    state: CollectorStatus = {
        "pid": os.getpid(),
        "started_by": os.getpid(),
        "started_at": time.time(),
        "interval": interval,
        "base_url": config["base_url"],
        "org_id": config["org_id"],
        "key_id": config["key_id"],
        "dsn_sha": _dsn_sha(config["dsn"]),
        "store": "embedded" if stores.embedded else "server",
        "rounds": 0,
        "skipped": 0,
    }

    def saved(collector: Collector, report: RoundReport | None) -> None:
        state.update(
            rounds=collector.rounds,
            skipped=collector.skipped,
            reserve=collector.reserve,
            outage_since=collector.outage_since,
            debts=[d.to_json() for d in collector.debts],
        )
        if report is not None:
            state["last_round"] = report.to_json()
        _write_state(home, state)

    collector = RoundCollector(
        stores,
        view,
        client,
        interval=interval,
        reserve=reserve,
        debts=[Debt.from_json(d) for d in read_state(home).get("debts", [])],
        on_round=saved,
        on_outage=lambda c: saved(c, None),
        on_debts=lambda c: saved(c, None),
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
        held.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
