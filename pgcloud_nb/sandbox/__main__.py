"""``python -m pgcloud_nb.sandbox``: serve one sandbox home in the foreground.

:class:`pgcloud_nb.sandbox.Sandbox` starts this detached. Settings come from
the ``PGCLOUD_SANDBOX_*`` variables and the app factory from
``$PGCLOUD_SANDBOX_APP``. Steps:

1. take the home's lock, or exit with :data:`~pgcloud_nb.sandbox.launcher.EXIT_LOCKED`;
2. bind the socket (port 0 picks a free one) and write ``server.json`` with
   the real url;
3. serve with uvicorn. SIGTERM or SIGINT shuts down gracefully, and the app's
   lifespan stops the PostgreSQL servers;
4. remove ``server.json`` and release the lock.

Exit codes: 0 after a clean stop, 1 when the app or the socket cannot be set
up, 2 for bad settings, 3 when the app's startup fails (uvicorn's code),
75 when another server serves this home.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from pgcloud_nb.sandbox.home import SandboxHome
from pgcloud_nb.sandbox.launcher import APP_ENV, DEFAULT_APP, EXIT_LOCKED, acquire_lock
from pgcloud_nb.sandbox.settings import Settings

log = logging.getLogger("pgcloud_nb.sandbox")


def load_factory(path: str) -> Callable[[Settings], Any]:
    """``"package.module:function"`` → the function."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{APP_ENV} must look like 'module:factory', got {path!r}")
    factory: Callable[[Settings], Any] = getattr(importlib.import_module(module), name)
    return factory


def _exit_on_signal(sig: int, frame: FrameType | None) -> None:
    # Before uvicorn takes the signals (while the app is built), and after it
    # re-raises the one it shut down for: leave through `finally`, cleanly.
    raise SystemExit(0)


def serve(settings: Settings) -> int:
    import uvicorn  # only the server process needs it

    home = SandboxHome(settings.home)
    home.ensure()
    lock = acquire_lock(home)
    if lock is None:
        log.error("another sandbox server holds the lock of %s; not starting", home.path)
        return EXIT_LOCKED
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    try:
        try:
            # IPPROTO_TCP named explicitly: asyncio only sets TCP_NODELAY on sockets whose
            # proto says TCP, and without it every kept-alive answer waits ~40 ms (Nagle).
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.host, settings.port))
            app = load_factory(os.environ.get(APP_ENV) or DEFAULT_APP)(settings)
        except (OSError, ImportError, AttributeError, ValueError) as e:
            log.error("cannot start the sandbox server: %s", e)
            return 1
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        home.write_server(
            {"url": url, "pid": os.getpid(), "started_at": datetime.now(UTC).isoformat()}
        )
        log.info("sandbox for %s serving on %s", home.path, url)
        # uvicorn's own log format, with a timestamp: server.log outlives many runs.
        log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
        for formatter in log_config["formatters"].values():
            formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="info",
            log_config=log_config,
            # Keep-alive connections must not hold up a stop for long.
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        return 0 if server.started else 1
    finally:
        if (home.read_server() or {}).get("pid") == os.getpid():
            home.clear_server()
        lock.close()  # releases the flock


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ValueError as e:
        log.error("bad sandbox settings: %s", e)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
