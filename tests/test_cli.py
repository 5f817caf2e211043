"""The ``pgcloud-nb`` command: flag checking, settings precedence, the sandbox cycle, lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcloud_nb import cli
from pgcloud_nb.sandbox.launcher import Sandbox

HERE = Path(__file__).parent
PGCLOUD = [sys.executable, "-m", "pgcloud_nb.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGCLOUD, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def parse(*argv: str) -> Any:
    args, _ = cli.build_parser().parse_known_args(argv)
    return cli._settings(args)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sandbox", "start", "--rate-limit", "ten"], "--rate-limit"),
        (["sandbox", "start", "--rate-limit", "10/0"], "positive"),
        (["sandbox", "start", "--fault", "404=0.1"], "--fault"),
        (["sandbox", "start", "--fault", "500=0.7", "--fault", "503=0.7"], "more than 1"),
        (["sandbox", "start", "--latency", "-1"], "--latency"),
        (["sandbox", "start", "--port", "70000"], "65535"),
        (["sandbox", "start", "--seed", "x"], "--seed"),
        (["sandbox", "start", "--sample-interval", "0"], "--sample-interval"),
        (["sandbox", "start", "--rate"], "unrecognized"),  # no abbreviations
        (["sandbox", "nope"], "invalid choice"),
        (["sandbox", "stop", "--bogus"], "unrecognized"),
        ([], "required"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err


def test_bad_variable_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PGCLOUD_SANDBOX_FAULTS", "500=lots")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sandbox", "status", "--home", str(tmp_path)])
    assert exit_.value.code == 2
    assert "PGCLOUD_SANDBOX_" in capsys.readouterr().err


def test_flags_override_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGCLOUD_SANDBOX_HOME", str(tmp_path / "from-env"))
    monkeypatch.setenv("PGCLOUD_SANDBOX_LATENCY", "0.5")
    monkeypatch.setenv("PGCLOUD_SANDBOX_RATE_LIMIT", "5/1")
    monkeypatch.setenv("PGCLOUD_SANDBOX_FAULTS", "503=0.5")
    monkeypatch.setenv("PGCLOUD_SANDBOX_SEED", "1")

    s = parse("sandbox", "start")
    assert (s.home, s.latency, s.rate_limit, s.rate_window) == (tmp_path / "from-env", 0.5, 5, 1)
    assert s.faults == {"503": 0.5} and s.seed == 1

    s = parse(
        "sandbox", "start", "--home", str(tmp_path / "flag"), "--latency", "0",
        "--rate-limit", "off", "--fault", "500=0.1,drop=0.05", "--fault", "429=0.2",
        "--port", "0", "--seed", "9", "--provisioning-delay", "1.5", "--sample-interval", "2",
    )  # fmt: skip
    assert s.home == tmp_path / "flag" and s.latency == 0 and s.rate_limit == 0
    assert s.faults == {"500": 0.1, "drop": 0.05, "429": 0.2}  # replaces the variable's
    assert (s.seed, s.provisioning_delay, s.sample_interval) == (9, 1.5, 2.0)


def test_defaults_are_the_real_apis() -> None:
    s = parse("sandbox", "start")
    assert (s.rate_limit, s.rate_window, s.faults, s.latency) == (10, 10.0, {}, 0.0)


def test_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "none")
    assert cli.main(["sandbox", "status", "--home", home]) == 3
    assert cli.main(["sandbox", "env", "--home", home]) == 3
    out = capsys.readouterr()
    assert out.out == "" and "sandbox start" in out.err  # eval gets nothing
    assert cli.main(["sandbox", "stop", "--home", home]) == 0
    assert "no sandbox was running" in capsys.readouterr().out


def test_start_failure_is_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCLOUD_SANDBOX_APP", "no_such_module:create_app")
    r = run_cli("sandbox", "start", "--home", str(tmp_path / "h"), "--timeout", "20")
    assert r.returncode == 1
    assert r.stderr.startswith("pgcloud-nb: error: the sandbox server exited")
    assert "no_such_module" in r.stderr


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "cli-home"
    yield home
    Sandbox(home).stop(timeout=10)


@pytest.mark.slow
def test_start_status_env_curl_stop_on_the_real_app(home: Path) -> None:
    """The seed's curl, with only the host swapped, after ``eval "$(pgcloud-nb sandbox env)"``."""
    h = str(home)
    r = run_cli("sandbox", "start", "--home", h, "--rate-limit", "off", "--latency", "0.01")
    assert r.returncode == 0, r.stderr
    assert "the sandbox is running" in r.stdout and 'eval "$(pgcloud-nb sandbox env' in r.stdout

    again = run_cli("sandbox", "start", "--home", h)
    assert again.returncode == 0 and "already running" in again.stdout

    st = run_cli("sandbox", "status", "--home", h, "--json")
    assert st.returncode == 0
    shown = json.loads(st.stdout)
    assert set(shown) == {"url", "org_id", "key_id", "home", "pid"}

    env = run_cli("sandbox", "env", "--home", h)
    assert env.returncode == 0
    names = [line.split("=")[0] for line in env.stdout.splitlines()]
    assert names == [f"export {n}" for n in (
        "CLICKHOUSE_API_URL", "CLICKHOUSE_CLOUD_API_KEY", "CLICKHOUSE_CLOUD_API_SECRET",
        "CLICKHOUSE_ORG_ID", "KEY_ID", "KEY_SECRET", "ORG_ID")]  # fmt: skip

    script = (
        f'eval "$({" ".join(PGCLOUD)} sandbox env --home {h})"\n'
        'curl -sS --fail-with-body --user "$KEY_ID:$KEY_SECRET" '
        '"$CLICKHOUSE_API_URL/v1/organizations/$ORG_ID/postgres"\n'
    )
    curl = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert curl.returncode == 0, curl.stderr
    body = json.loads(curl.stdout)
    assert body["status"] == 200 and body["result"] == []

    stop = run_cli("sandbox", "stop", "--home", h)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert run_cli("sandbox", "status", "--home", h).returncode == 3


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCLOUD_SANDBOX_APP", "standin_app:create_app")
    path = os.pathsep.join([str(HERE / "sandbox"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)


def test_lab_exports_the_sandbox_and_runs_jupyter(
    standin: None, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str], dict[str, str], Path]] = []

    def fake_exec(path: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        calls.append((path, argv, env, cwd))
        return 0

    monkeypatch.setattr(cli, "exec_jupyter", fake_exec)
    argv = ["lab", "--home", str(home), "--no-browser", "--ServerApp.token=t", "--port=9999"]
    assert cli.main(argv) == 0
    [(_, jargv, env, cwd)] = calls
    assert jargv == ["jupyter", "lab", "--no-browser", "--ServerApp.token=t", "--port=9999"]
    info = Sandbox(home).status()
    assert info is not None
    assert {k: env[k] for k in info.env()} == info.env()
    assert env["PGCLOUD_SANDBOX_HOME"] == str(home)
    assert cwd == (cli.NOTEBOOKS if cli.NOTEBOOKS.is_dir() else Path.cwd())

    # A second lab attaches to the same sandbox.
    assert cli.main(["lab", "--home", str(home)]) == 0
    assert calls[1][2]["CLICKHOUSE_API_URL"] == info.url


def test_lab_without_jupyter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.main(["lab", "--home", str(tmp_path)]) == 127


def test_lab_keeps_a_real_cloud_key(
    standin: None, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cloud key in the environment wins, as in connect(); --sandbox overrides."""
    calls: list[dict[str, str]] = []
    monkeypatch.setattr(cli, "exec_jupyter", lambda path, argv, env, cwd: calls.append(env) or 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "REALKEYID")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "real-secret")
    assert cli.main(["lab", "--home", str(home)]) == 0
    assert calls[0]["CLICKHOUSE_CLOUD_API_KEY"] == "REALKEYID"
    assert Sandbox(home).status() is None  # no sandbox was started for it

    assert cli.main(["lab", "--home", str(home), "--sandbox"]) == 0
    info = Sandbox(home).status()
    assert info is not None
    assert calls[1]["CLICKHOUSE_CLOUD_API_KEY"] == info.key_id
