"""binder/: the environment repo2docker builds, and a ``start`` that brings the sandbox up.

``binder/start`` runs here as Binder runs it, with a trivial command in place of the
notebook server: the command must run, in an environment where ``connect()`` finds
the sandbox that ``start`` brought up (and says "sandbox", even beside a ``.env``),
and its exit code must be the script's (``exec "$@"``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbrun
import pytest

from pgcloud_nb.cli import build_parser
from pgcloud_nb.sandbox import Sandbox

BINDER = nbrun.ROOT / "binder"
START = BINDER / "start"

PROBE = """
import pgcloud_nb
pg = pgcloud_nb.connect()
print("probe", pg.source, len(pg.list_services()), pg.base_url)
"""


@pytest.fixture
def home() -> Iterator[Path]:
    root = nbrun.reachable_dir("pgcloud-nb-binder-")
    yield root / "sandbox"
    Sandbox(root / "sandbox").stop()
    shutil.rmtree(root, ignore_errors=True)


def _start(home: Path, *command: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = nbrun.clean_env(PGCLOUD_SANDBOX_HOME=str(home), **env_extra)
    env.pop("PGCLOUD_USE_SANDBOX", None)  # what start exports, not what this run inherits
    return subprocess.run(
        [str(START), *command],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_environment_files() -> None:
    apt = (BINDER / "apt.txt").read_text().split()
    assert {"postgresql", "postgresql-contrib"} <= set(apt)
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert os.access(path, os.X_OK), f"binder/{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)
    assert START.read_text().rstrip().endswith('exec "$@"')


def _notebook_requirements() -> set[str]:
    """pyproject's dependencies and its notebook extra, with the extras it pulls in itself."""
    project = tomllib.loads((nbrun.ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = {r.replace(" ", "") for r in project["dependencies"]}
    todo, seen = ["notebook"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for req in extras[extra]:
            own = re.fullmatch(r"pgcloud-nb\[([\w,-]+)\]", req.replace(" ", ""))
            if own:
                todo += [e for e in own.group(1).split(",") if e not in seen]
            else:
                declared.add(req.replace(" ", ""))
    return declared


def test_requirements_match_the_package() -> None:
    """binder/requirements.txt repeats pyproject's requirements: the same set, both ways."""
    declared = _notebook_requirements()
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    wanted = {line.split("#")[0].replace(" ", "") for line in lines} - {""}
    assert wanted <= declared, f"not in pyproject.toml as written: {sorted(wanted - declared)}"
    assert declared <= wanted, f"missing from binder/requirements.txt: {sorted(declared - wanted)}"
    postbuild = (BINDER / "postBuild").read_text()
    assert '-e ".[notebook]"' in postbuild


def _python_lines(script: str) -> list[list[str]]:
    """The ``python -c "..."`` commands of a shell script, as argument lists."""
    return [
        shlex.split(line.strip())
        for line in script.splitlines()
        if line.strip().startswith("python -c ")
    ]


def test_postbuild_python_checks_run() -> None:
    """Each ``python -c`` check of postBuild runs against this checkout (imports included).

    The build runs them after installing the package; a module they name that moved
    away would fail the Binder build, so it fails here first.
    """
    commands = _python_lines((BINDER / "postBuild").read_text())
    assert commands, "postBuild has no python -c check of the PostgreSQL binaries"
    for argv in commands:
        assert argv[:2] == ["python", "-c"] and len(argv) == 3, argv
        run = subprocess.run(
            [sys.executable, "-c", argv[2]],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=nbrun.ROOT,
            env=nbrun.clean_env(),
        )
        assert run.returncode == 0, f"{argv[2]}\n{run.stderr[-2000:]}"


def test_postbuild_cli_commands_exist() -> None:
    """The ``pgcloud_nb.cli`` subcommands postBuild runs are ones the CLI knows."""
    parser = build_parser()
    lines = [line.strip() for line in (BINDER / "postBuild").read_text().splitlines()]
    used = [
        line.split("pgcloud_nb.cli", 1)[1].split() for line in lines if "pgcloud_nb.cli " in line
    ]
    assert used, "postBuild installs no PostgreSQL major for the sandbox"
    for words in used:
        args = [w.strip('"').replace("$major", "17") for w in words if w not in ("||",)]
        parser.parse_args(args)  # exits 2 on an unknown command or flag


# A .env where the kernels run (notebooks/ on Binder): uploaded there, or committed by a
# fork. Its made-up key points at a closed port, so a probe that took it fails at once.
DOTENV = """\
CLICKHOUSE_CLOUD_API_KEY=made-up-key
CLICKHOUSE_CLOUD_API_SECRET=made-up-secret
CLICKHOUSE_API_URL=http://127.0.0.1:9
"""


@pytest.mark.slow
def test_start_brings_up_the_sandbox_then_runs_the_command(home: Path) -> None:
    (home.parent / ".env").write_text(DOTENV)  # the command's working folder
    run = _start(home, sys.executable, "-c", PROBE)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = [line for line in run.stdout.splitlines() if line.startswith("probe ")]
    assert probe, f"the command did not run:\n{run.stdout}\n{run.stderr[-2000:]}"
    _, source, count, url = probe[0].split()
    assert source == "sandbox" and count.isdigit()

    info = Sandbox(home).status()
    assert info is not None, "no sandbox is running after binder/start"
    assert info.url == url
    answer = httpx.get(f"{info.url}/v1/organizations", auth=(info.key_id, info.key_secret))
    assert answer.status_code == 200

    # Again, as on a relaunch: it attaches to the running sandbox, and exec passes the
    # command's exit code through.
    echo = 'echo "second ${PGCLOUD_USE_SANDBOX:-unset}"; exit 7'
    again = _start(home, "sh", "-c", echo)
    assert again.returncode == 7 and again.stdout.strip() == "second 1", again.stderr[-2000:]
    assert Sandbox(home).status() == info

    # A key in Binder's own environment is the way to the real API: not forced away.
    keyed = _start(
        home,
        "sh",
        "-c",
        echo,
        CLICKHOUSE_CLOUD_API_KEY="made-up-key",
        CLICKHOUSE_CLOUD_API_SECRET="made-up-secret",
    )
    assert keyed.returncode == 7 and keyed.stdout.strip() == "second unset", keyed.stderr[-2000:]
