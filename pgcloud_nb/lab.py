"""``pgcloud-nb lab``: JupyterLab on the sandbox (or on a cloud key), as a child process.

JupyterLab runs as a child, not in place of this process, so that whatever happens to
it, the sandbox this command started is stopped afterwards and the user is told; a
sandbox that was already running is left running, and the user is told that too.

The kernels get no API secret in their environment: only ``PGCLOUD_SANDBOX_HOME``.
``connect()`` in a notebook then finds no key, attaches to the sandbox of that home
and reads its key from the home's ``credentials.json`` (0600), reporting its source
as ``sandbox``. A secret in a process environment is readable by every process of
the user through ``/proc/<pid>/environ`` and is inherited by everything a notebook
runs; ``pgcloud-nb sandbox env`` remains for a person who asks for the export.

What lab says is what the kernels do, although they run in ``notebooks/`` and lab
may have been started elsewhere: on the sandbox they also get ``PGCLOUD_USE_SANDBOX=1``
(a ``.env`` beside the notebooks cannot take over), and on a ``.env`` found in lab's
working folder they get ``PGCLOUD_ENV_FILE`` with its absolute path, the path and
never the secret (:mod:`pgcloud_nb.credentials` honours both).

As root, Jupyter refuses to start without ``--allow-root``. JupyterLab then runs as
root, said on stderr, because everything it needs is root's: the repository checkout,
the sandbox home (``/var/lib/pgcloud-nb/sandbox``, 0700) and the installed packages.
The PostgreSQL servers still run as the unprivileged ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

from pgcloud_nb.credentials import (
    ENV_FILE_VAR,
    USE_SANDBOX_VAR,
    ResolvedCredentials,
    resolve,
    sandbox_forced,
)
from pgcloud_nb.errors import ConfigurationError

__all__ = [
    "LAB_EPILOG",
    "SandboxLike",
    "cloud_env",
    "jupyter_argv",
    "kernel_env",
    "run_jupyter",
    "run_lab",
]

HOME_VAR = "PGCLOUD_SANDBOX_HOME"
# Never handed to JupyterLab on the sandbox's behalf: the sandbox's key is read from its
# home. Inherited ones are kept only in the cloud case (the user set them on purpose).
_KEY_VARS = ("CLICKHOUSE_CLOUD_API_KEY", "CLICKHOUSE_CLOUD_API_SECRET")

LAB_EPILOG = """\
Any other argument goes to JupyterLab unchanged (jupyter lab --help-all lists them), e.g.
  pgcloud-nb lab --no-browser --port 8890
To choose JupyterLab's token, set it in the environment (JUPYTER_TOKEN=...) or in
jupyter_server_config.py (c.IdentityProvider.token), never as a flag: a command line
is readable by every local user. To reach JupyterLab from another machine, prefer an
SSH tunnel to its localhost port over --ip 0.0.0.0.
As root, --allow-root is added (JupyterLab refuses root without it). When JupyterLab
exits, the sandbox is stopped if lab started it.
"""

_ROOT_FLAGS = ("--allow-root", "--ServerApp.allow_root=True", "--NotebookApp.allow_root=True")
_IP_FLAGS = ("--ip", "--ServerApp.ip", "--NotebookApp.ip")


class _Info(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def home(self) -> Path: ...


class SandboxLike(Protocol):
    """What ``lab`` needs of :class:`pgcloud_nb.sandbox.Sandbox`."""

    def status(self) -> _Info | None: ...
    def start(self, timeout: float = ...) -> _Info: ...
    def stop(self, timeout: float = ...) -> bool: ...


Say = Callable[[str], None]


def _say(line: str) -> None:
    print(f"pgcloud-nb lab: {line}", file=sys.stderr, flush=True)


def jupyter_argv(
    flags: Sequence[str], extra: Sequence[str], *, euid: int | None = None, say: Say = _say
) -> list[str]:
    """``jupyter lab`` with ``lab``'s own flags, then the user's; ``--allow-root`` as root."""
    argv = ["jupyter", "lab", *flags, *extra]
    root = (os.geteuid() if euid is None else euid) == 0
    if root and not any(a in _ROOT_FLAGS for a in argv):
        argv.append("--allow-root")
        say(
            "running as root, so JupyterLab runs as root too (--allow-root); the sandbox's "
            "PostgreSQL servers run as the 'postgres' user. Run as an ordinary user to avoid this."
        )
    ip = listen_address(argv)
    if root and ip is not None and not _loopback(ip):
        say(
            f"JupyterLab listens on {ip or 'every address'} and runs as root: whoever reaches "
            "that address and gets its token runs code as root. Prefer --ip 127.0.0.1 with an "
            "SSH tunnel, an ordinary user, and a token from JUPYTER_TOKEN or a config file."
        )
    return argv


def listen_address(argv: Sequence[str]) -> str | None:
    """The address JupyterLab is told to listen on (the last one given wins), if any."""
    found = None
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in _IP_FLAGS:
            found = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return found


def _loopback(ip: str) -> bool:
    if ip.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name (or "", "*": every address) may be reachable from outside


def cloud_env(
    environ: Mapping[str, str], where: Path
) -> tuple[ResolvedCredentials, dict[str, str]] | None:
    """A cloud key (environment, or a .env) and JupyterLab's environment for it, if any.

    A .env is looked for in lab's working folder, then in ``where`` (unless
    ``$PGCLOUD_ENV_FILE`` names one); the one found reaches the kernels as
    ``PGCLOUD_ENV_FILE``, its absolute path, because they run in ``where``.
    """
    if sandbox_forced(environ):
        return None
    named = environ.get(ENV_FILE_VAR)
    candidates = [Path(named)] if named else [Path.cwd() / ".env", where / ".env"]
    for env_file in dict.fromkeys(p.expanduser().absolute() for p in candidates):
        try:
            creds = resolve(env_file=env_file, sandbox=False, environ=environ)
        except ConfigurationError:
            continue
        env = dict(environ)
        if creds.source == ".env":
            env[ENV_FILE_VAR] = str(env_file)
        return creds, env
    return None


def kernel_env(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """JupyterLab's environment: ours, without API keys, forced onto the sandbox's home."""
    env = {k: v for k, v in environ.items() if k not in _KEY_VARS and k != ENV_FILE_VAR}
    env[HOME_VAR] = str(home)
    env[USE_SANDBOX_VAR] = "1"
    return env


def run_jupyter(path: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run jupyter until it exits; its exit code (128+N when killed by signal N).

    Ctrl-C reaches jupyter from the terminal (it asks to confirm), so it is ignored
    here; SIGTERM and SIGHUP sent to this process are passed on to jupyter.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    # Python-level handlers (not SIG_IGN) are reset to the default in the child at exec.
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward if s != signal.SIGINT else _ignore) for s in caught}
    try:
        proc = subprocess.Popen(argv, executable=path, env=env, cwd=cwd)
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: the terminal sends it to jupyter as well, which decides."""


def run_lab(
    sb: SandboxLike,
    jupyter: str,
    argv: list[str],
    where: Path,
    *,
    run: Callable[[str, list[str], dict[str, str], Path], int] = run_jupyter,
    say: Say = _say,
) -> int:
    """Start (or find) the sandbox, run JupyterLab on it, stop the sandbox if we started it."""
    started = sb.status() is None
    info = sb.start()
    say(f"sandbox at {info.url} (home {info.home}); starting JupyterLab in {where}")
    code = 1
    try:
        code = run(jupyter, argv, kernel_env(os.environ, info.home), where)
    finally:
        stop = f"pgcloud-nb sandbox stop --home {shlex.quote(str(info.home))}"
        _after(sb, started=started, code=code, stop=stop, say=say)
    return code


def _after(sb: SandboxLike, *, started: bool, code: int, stop: str, say: Say) -> None:
    why = "JupyterLab exited" if code == 0 else f"JupyterLab failed (exit code {code})"
    if not started:
        say(f"{why}; the sandbox was running before lab and stays running ({stop} stops it)")
        return
    try:
        sb.stop()
    except (RuntimeError, OSError) as e:
        say(f"{why}; the sandbox it started could not be stopped ({e}): run {stop}")
        return
    say(f"{why}; stopped the sandbox it started (its services keep their data and come back "
        "at the next pgcloud-nb lab or pgcloud-nb sandbox start)")  # fmt: skip
