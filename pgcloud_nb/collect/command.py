"""``pgcloud-nb collect`` and its Python twins :func:`start`, :func:`status`, :func:`stop`.

Usage::

    pgcloud-nb collect run    [--home DIR] [--dsn DSN] [--interval S] [--reserve N]
    pgcloud-nb collect start  [--home DIR] [--dsn DSN] [--interval S] [--reserve N]
    pgcloud-nb collect status [--home DIR] [--json]
    pgcloud-nb collect stop   [--home DIR]

``run`` collects in the foreground until Ctrl-C; ``start`` runs the same as a
background process (:mod:`pgcloud_nb.collect.process`) and returns once its
first round is stored. The key is found as ``connect()`` finds it (environment,
``.env``, else the sandbox); the store is ``--dsn``, else ``$PGCLOUD_HISTORY_DSN``,
``CLICKHOUSE_HOST``…, else embedded (:mod:`pgcloud_nb.collect.store`). The home
(lock, state, log) is ``--home``, else ``$PGCLOUD_COLLECT_HOME``, else
``collector/`` beside the embedded store. ``--interval`` defaults to
``$PGCLOUD_COLLECT_INTERVAL``, else 60 s (the API's refresh, docs/api-behaviour.md
§9.2); against the sandbox, its sample interval is the useful value.

Exit codes: 0 success (``status``: running), 1 failure, 2 bad usage,
3 ``status``: no collector runs for this home.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..client import Client
from ..credentials import resolve
from ..errors import ConfigurationError, PgCloudError
from ..ratelimit import budget_for
from . import process
from .collector import DEFAULT_INTERVAL, DEFAULT_RESERVE
from .dsn import secret_in

__all__ = ["build_parser", "main", "start", "status", "stop"]

INTERVAL_ENV = "PGCLOUD_COLLECT_INTERVAL"
EXIT_FAILED, EXIT_NOT_RUNNING = 1, 3


def _interval(interval: float | str | None) -> float:
    """The interval asked for (``--interval``/``interval=``, else the variable), checked."""
    source, value = "--interval", interval
    if value is None:
        source, value = INTERVAL_ENV, os.environ.get(INTERVAL_ENV)
    if value is None:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(f"{source}={value!r}: the interval must be seconds above 0")
    return seconds


def start(
    client: Any,
    *,
    dsn: str | None = None,
    interval: float | None = None,
    reserve: int = DEFAULT_RESERVE,
    home: str | os.PathLike[str] | None = None,
    api_secret: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Start a background collector for ``client``'s key and org (or find it running).

    The secret goes to the process through a pipe, never its argv or environment:
    ``api_secret``, else the one ``connect()`` found for the client's key (its
    environment, ``.env`` or the sandbox). Returns :func:`status` once the first
    round is stored (or an outage has begun).
    """
    secret = api_secret or _secret_of(client)
    config = {
        "base_url": client.base_url,
        "key_id": client.key_id,
        "key_secret": secret,
        "org_id": client.org_id,
        "dsn": dsn,
        "interval": _interval(interval),
        "reserve": reserve,
    }
    return process.spawn(_home(home), config, timeout=timeout)


def status(home: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The running collector's state (rounds, last round, gaps owed…), or None."""
    return process.read_status(_home(home))


def stop(home: str | os.PathLike[str] | None = None, timeout: float | None = None) -> bool:
    """Stop the collector of ``home`` after its request in course; True if one ran.

    ``timeout``: seconds before it is killed (default: that request's worst case)."""
    return process.stop(_home(home), timeout)


def _home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser().resolve() if home is not None else process.default_home()


def _secret_of(client: Any) -> str:
    source = client.source
    try:
        creds = resolve(sandbox=True) if source == "sandbox" else resolve(sandbox=False)
    except ConfigurationError:
        creds = None
    if creds is None or creds.key_id != client.key_id:
        raise ConfigurationError(
            "the collector needs the client's API secret: pass api_secret= "
            f"(the key {client.key_id[:8]}… came from {source})"
        )
    return creds.key_secret.get_secret_value()


# -- the command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """``pgcloud-nb collect`` and its actions (the CLI hands it everything after ``collect``)."""
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", type=Path, help="the collector's folder (lock, state, log)")
    knobs = argparse.ArgumentParser(add_help=False)
    knobs.add_argument("--dsn", help="the store (default: $PGCLOUD_HISTORY_DSN, else embedded)")
    knobs.add_argument("--interval", metavar="S", help="seconds between rounds")
    knobs.add_argument(
        "--reserve",
        type=int,
        default=DEFAULT_RESERVE,
        choices=range(1, 11),
        metavar="N",
        help=f"requests per 10 s it may take of the key's 10 (default {DEFAULT_RESERVE})",
    )
    parser = argparse.ArgumentParser(
        prog="pgcloud-nb collect",
        description="Collect the fleet's metric history into ClickHouse.",
        allow_abbrev=False,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("run", parents=[home, knobs], help="collect in the foreground")
    actions.add_parser("start", parents=[home, knobs], help="collect in the background")
    st = actions.add_parser("status", parents=[home], help="is it running? (exit 0 if so)")
    st.add_argument("--json", action="store_true", help="the state as JSON")
    actions.add_parser("stop", parents=[home], help="stop the background collector")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action in ("run", "start"):
        try:  # bad usage: exit 2, as argparse's own errors
            args.interval = _interval(args.interval)
        except ConfigurationError as e:
            print(f"pgcloud-nb collect: error: {e}", file=sys.stderr)
            return 2
        if secret_in(args.dsn):
            print(
                "pgcloud-nb collect: warning: --dsn carries a password, which other users "
                "can read in the process list; set it in CLICKHOUSE_PASSWORD (with "
                "CLICKHOUSE_HOST...) or PGCLOUD_HISTORY_DSN instead",
                file=sys.stderr,
            )
    try:
        return _dispatch(args)
    except (PgCloudError, RuntimeError, OSError) as e:
        print(f"pgcloud-nb: error: {e}", file=sys.stderr)
        return EXIT_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    home = _home(args.home)
    if args.action == "status":
        state = process.read_status(home)
        if state is None:
            print(f"no collector is running for {home}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        print(json.dumps(state, indent=1, default=str) if args.json else _describe(state))
        return 0
    if args.action == "stop":
        print("stopped" if process.stop(home) else f"no collector was running for {home}")
        return 0
    creds = resolve()
    config = {
        "base_url": creds.base_url,
        "key_id": creds.key_id,
        "key_secret": creds.key_secret.get_secret_value(),
        "org_id": creds.org_id or _only_org(creds),
        "dsn": args.dsn,
        "interval": args.interval,
        "reserve": args.reserve,
    }
    if args.action == "start":
        print(_describe(process.spawn(home, config)))
        return 0
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    code = process.serve(home, config, stop_event)
    if code == process.EXIT_LOCKED:
        print(f"a collector already runs for {home}", file=sys.stderr)
        return EXIT_FAILED
    return code


def _only_org(creds: Any) -> str:
    with Client(
        key_id=creds.key_id,
        key_secret=creds.key_secret,
        org_id="",
        base_url=creds.base_url,
        budget=budget_for(creds.base_url, creds.key_id),
    ) as client:
        orgs = client.list_organizations()
    if len(orgs) != 1:
        raise ConfigurationError(f"this key sees {len(orgs)} organizations; set CLICKHOUSE_ORG_ID")
    return str(orgs[0]["id"])


def _describe(state: dict[str, Any]) -> str:
    last = state.get("last_round") or {}
    lines = [
        f"pid:      {state.get('pid')}",
        f"home:     {state.get('home')}",
        f"org:      {state.get('org_id')}  ({state.get('base_url')})",
        f"every:    {state.get('interval')} s, rounds so far {state.get('rounds')}",
        f"last:     {last.get('at', '-')}: {last.get('samples', 0)} samples, "
        f"{last.get('requests', 0)} requests",
        f"gaps owed: {len(state.get('debts') or [])}",
    ]
    if state.get("skipped"):
        lines.append(
            f"skipped:  {state['skipped']} rounds, the store busy (a notebook holding it open?)"
        )
    if state.get("outage_since"):
        lines.append(f"outage since {state['outage_since']}: the API does not answer")
    return "\n".join(lines)
