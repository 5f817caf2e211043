"""The ``pgcloud-nb`` command: flag checking, settings precedence, the sandbox cycle, lab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcloud_nb import cli
from pgcloud_nb.credentials import resolve
from pgcloud_nb.lab import jupyter_argv, run_jupyter
from pgcloud_nb.sandbox.launcher import Sandbox, SandboxInfo

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


def _secret_free(env: dict[str, str], secret: str) -> bool:
    return not any(secret in f"{k}={v}" for k, v in env.items())


def test_lab_passes_the_sandbox_home_not_its_key(
    standin: None, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """JupyterLab gets the home only; connect() reads the key from it (source "sandbox")."""
    calls: list[tuple[str, list[str], dict[str, str], Path]] = []
    seen: list[SandboxInfo | None] = []

    def fake_run(path: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        calls.append((path, argv, env, cwd))
        seen.append(Sandbox(home).status())
        return 0

    monkeypatch.setattr(cli, "run_jupyter", fake_run)
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "HALFKEY")  # half a key: not a cloud key
    argv = ["lab", "--home", str(home), "--no-browser", "--ServerApp.token=t", "--port=9999"]
    assert cli.main(argv) == 0
    [(_, jargv, env, cwd)] = calls
    root = ["--allow-root"] if os.geteuid() == 0 else []
    assert jargv == ["jupyter", "lab", "--port=9999", "--no-browser", "--ServerApp.token=t", *root]
    info = seen[0]
    assert info is not None
    assert env["PGCLOUD_SANDBOX_HOME"] == str(home)
    assert env["PGCLOUD_USE_SANDBOX"] == "1"  # a .env beside the notebooks cannot take over
    assert not {"CLICKHOUSE_CLOUD_API_KEY", "CLICKHOUSE_CLOUD_API_SECRET"} & set(env)
    assert _secret_free(env, info.key_secret)
    assert cwd == (cli.NOTEBOOKS if cli.NOTEBOOKS.is_dir() else Path.cwd())
    err = capsys.readouterr().err
    assert "stopped the sandbox it started" in err
    assert Sandbox(home).status() is None  # lab started it, so lab stopped it

    # What a kernel does with that environment: connect() finds the sandbox by its home.
    monkeypatch.delenv("CLICKHOUSE_CLOUD_API_KEY")
    for name, value in env.items():
        if name.startswith(("PGCLOUD_", "CLICKHOUSE_")):
            monkeypatch.setenv(name, value)
    running = Sandbox(home).start()
    assert resolve(env_file=None).source == "sandbox"
    assert resolve(env_file=None).key_id == running.key_id

    # A lab on a sandbox that was already running leaves it running, and says so.
    assert cli.main(["lab", "--home", str(home)]) == 0
    assert calls[1][2]["PGCLOUD_SANDBOX_HOME"] == str(home)
    assert "stays running" in capsys.readouterr().err
    assert Sandbox(home).status() == running


def test_lab_stops_the_sandbox_it_started_when_jupyter_fails(
    standin: None, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "run_jupyter", lambda path, argv, env, cwd: 1)
    assert cli.main(["lab", "--home", str(home)]) == 1
    assert "JupyterLab failed (exit code 1); stopped the sandbox" in capsys.readouterr().err
    assert Sandbox(home).status() is None


@pytest.mark.parametrize(("euid", "extra", "added"), [
    (0, [], True), (0, ["--allow-root"], False), (1000, [], False),
])  # fmt: skip
def test_jupyter_runs_as_root_only_with_allow_root(
    euid: int, extra: list[str], added: bool
) -> None:
    said: list[str] = []
    argv = jupyter_argv(["--no-browser"], extra, euid=euid, say=said.append)
    assert argv.count("--allow-root") == (1 if added or extra else 0)
    assert bool(said) == added and (not said or "root" in said[0])


def test_labs_port_and_ip_are_jupyters_not_the_sandboxs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCLOUD_SANDBOX_PORT", raising=False)
    assert parse("lab", "--port", "9999", "--ip", "0.0.0.0").port == 0  # the sandbox picks its own


def test_lab_help_names_jupyters_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["lab", "--help"])
    out = capsys.readouterr().out
    for flag in ("--port", "--ip", "--no-browser", "--sandbox", "--home"):
        assert flag in out
    assert "Other arguments go to JupyterLab" in out


def test_run_jupyter_passes_the_exit_code_and_forwards_sigterm(tmp_path: Path) -> None:
    """A real child: its exit code comes back; a SIGTERM sent to us reaches it."""
    assert run_jupyter("/bin/sh", ["sh", "-c", "exit 7"], {}, tmp_path) == 7
    script = (
        "import os, signal, time\n"
        "for _ in range(150):\n"
        "    os.kill(os.getppid(), signal.SIGTERM)\n"
        "    time.sleep(0.2)\n"
    )
    code = run_jupyter(sys.executable, ["python", "-c", script], dict(os.environ), tmp_path)
    assert code == 128 + signal.SIGTERM


def test_lab_without_jupyter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.main(["lab", "--home", str(tmp_path)]) == 127


def test_lab_keeps_a_real_cloud_key(
    standin: None, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cloud key in the environment wins, as in connect(); --sandbox overrides."""
    calls: list[dict[str, str]] = []
    monkeypatch.setattr(cli, "run_jupyter", lambda path, argv, env, cwd: calls.append(env) or 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "REALKEYID")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "real-secret")
    assert cli.main(["lab", "--home", str(home)]) == 0
    assert calls[0]["CLICKHOUSE_CLOUD_API_KEY"] == "REALKEYID"
    assert Sandbox(home).status() is None  # no sandbox was started for it

    # --sandbox: the real key is not passed on either, and the kernels are told to use the home.
    assert cli.main(["lab", "--home", str(home), "--sandbox"]) == 0
    assert "CLICKHOUSE_CLOUD_API_KEY" not in calls[1] and _secret_free(calls[1], "real-secret")
    assert calls[1]["PGCLOUD_SANDBOX_HOME"] == str(home)
    assert calls[1]["PGCLOUD_USE_SANDBOX"] == "1"


def test_lab_hands_the_kernels_the_dotenv_it_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .env in lab's folder reaches kernels that run in notebooks/ as a path, not a secret."""
    calls: list[tuple[dict[str, str], Path]] = []
    monkeypatch.setattr(cli, "run_jupyter", lambda p, a, env, cwd: calls.append((env, cwd)) or 0)
    for var in ("CLICKHOUSE_CLOUD_API_KEY", "CLICKHOUSE_CLOUD_API_SECRET", "PGCLOUD_ENV_FILE",
                "PGCLOUD_USE_SANDBOX", "CLICKHOUSE_API_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "CLICKHOUSE_CLOUD_API_KEY=DOTENVKEY\nCLICKHOUSE_CLOUD_API_SECRET=dotenv-secret\n"
        "CLICKHOUSE_API_URL=https://api.example.invalid\n"
    )
    assert cli.main(["lab", "--home", str(tmp_path / "home")]) == 0
    [(env, cwd)] = calls
    assert env["PGCLOUD_ENV_FILE"] == str(tmp_path / ".env")
    assert _secret_free(env, "dotenv-secret") and "PGCLOUD_USE_SANDBOX" not in env
    assert f"from {tmp_path / '.env'}: the notebooks talk to https://api.example.invalid" in (
        capsys.readouterr().err
    )
    # What a kernel does with it, in its own folder (notebooks/, or wherever jupyter runs).
    elsewhere = tmp_path / "kernel"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    creds = resolve(sandbox=False, environ=env)
    assert (creds.key_id, creds.base_url) == ("DOTENVKEY", "https://api.example.invalid")
    assert cwd == (cli.NOTEBOOKS if cli.NOTEBOOKS.is_dir() else tmp_path)


@pytest.mark.parametrize(("euid", "extra", "warned"), [
    (0, ["--ip=0.0.0.0"], True), (0, ["--ServerApp.ip", "192.0.2.1"], True),
    (0, ["--ip=127.0.0.1"], False), (0, ["--ip=localhost"], False), (0, ["--ip=::1"], False),
    (0, [], False), (1000, ["--ip=0.0.0.0"], False),
])  # fmt: skip
def test_root_listening_beyond_loopback_is_warned(
    euid: int, extra: list[str], warned: bool
) -> None:
    said: list[str] = []
    jupyter_argv(["--allow-root"], extra, euid=euid, say=said.append)
    assert any("runs as root" in line and "JUPYTER_TOKEN" in line for line in said) == warned


def test_lab_help_suggests_no_token_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["lab", "--help"])
    out = capsys.readouterr().out
    assert "JUPYTER_TOKEN" in out and "token=" not in out and "--ip 0.0.0.0 --" not in out
