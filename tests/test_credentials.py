"""Where connect() finds the key, the org and the URL."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import pgcloud_nb
import pgcloud_nb.sandbox
from pgcloud_nb.credentials import DEFAULT_BASE_URL, resolve
from pgcloud_nb.errors import ConfigurationError, PgCloudError, SandboxUnavailableError
from pgcloud_nb.ratelimit import Budget

VARS = (
    "CLICKHOUSE_CLOUD_API_KEY",
    "CLICKHOUSE_CLOUD_API_SECRET",
    "CLICKHOUSE_ORG_ID",
    "CLICKHOUSE_API_URL",
    "PGCLOUD_ENV_FILE",
    "PGCLOUD_USE_SANDBOX",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_sandbox(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def ensure_running() -> Any:
        calls.append(1)
        return SimpleNamespace(
            url="http://127.0.0.1:9999",
            org_id="sb-org",
            key_id="sb-key",
            key_secret="sb-secret-value",
        )

    monkeypatch.setattr(pgcloud_nb.sandbox, "ensure_running", ensure_running, raising=False)
    return calls


def test_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "env-secret")
    monkeypatch.setenv("CLICKHOUSE_ORG_ID", "env-org")
    creds = resolve("arg-key", "arg-secret", org_id="arg-org")
    assert (creds.key_id, creds.source, creds.org_id) == ("arg-key", "arguments", "arg-org")
    assert creds.key_secret.get_secret_value() == "arg-secret"
    assert "arg-secret" not in repr(creds)
    assert resolve("arg-key", "arg-secret").org_id == "env-org"  # the org may come from env


def test_environment_then_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "CLICKHOUSE_CLOUD_API_KEY=file-key\nCLICKHOUSE_CLOUD_API_SECRET=file-secret\n"
        "CLICKHOUSE_ORG_ID=file-org\nCLICKHOUSE_API_URL=https://file.example\nOTHER=1\n"
    )
    creds = resolve()
    assert (creds.key_id, creds.source, creds.org_id, creds.base_url) == (
        "file-key",
        ".env",
        "file-org",
        "https://file.example",
    )
    assert "CLICKHOUSE_CLOUD_API_KEY" not in os.environ and "OTHER" not in os.environ
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "env-secret")
    creds = resolve()
    assert (creds.key_id, creds.source, creds.base_url, creds.org_id) == (
        "env-key",
        "environment",
        DEFAULT_BASE_URL,
        None,
    )


def test_api_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_API_URL", "https://staging.example")
    assert resolve("k", "s").base_url == "https://staging.example"
    assert resolve("k", "s", base_url="https://arg.example").base_url == "https://arg.example"


def test_half_a_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        resolve("only-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    with pytest.raises(ConfigurationError, match="CLICKHOUSE_CLOUD_API_SECRET is missing"):
        resolve()


def test_no_key_uses_the_sandbox(fake_sandbox: list[int]) -> None:
    creds = resolve()
    assert (creds.source, creds.key_id, creds.org_id, creds.base_url) == (
        "sandbox",
        "sb-key",
        "sb-org",
        "http://127.0.0.1:9999",
    )
    assert fake_sandbox == [1]
    with pytest.raises(ConfigurationError, match="no API key"):
        resolve(sandbox=False)


def test_a_sandbox_that_cannot_start_is_an_error_of_the_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = pgcloud_nb.sandbox.SandboxError("the sandbox server exited with code 3")

    def ensure_running() -> Any:
        raise failure

    monkeypatch.setattr(pgcloud_nb.sandbox, "ensure_running", ensure_running, raising=False)
    with pytest.raises(SandboxUnavailableError, match="exited with code 3") as info:
        pgcloud_nb.connect()
    assert isinstance(info.value, PgCloudError) and isinstance(info.value, RuntimeError)
    assert info.value.__cause__ is failure


def test_sandbox_true_ignores_keys(
    fake_sandbox: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "env-secret")
    assert resolve(sandbox=True).source == "sandbox"


def test_env_file_variable_names_the_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``pgcloud-nb lab`` hands a kernel that runs in another folder than its .env."""
    (tmp_path / ".env").write_text(
        "CLICKHOUSE_CLOUD_API_KEY=here-key\nCLICKHOUSE_CLOUD_API_SECRET=here-secret\n"
    )
    named = tmp_path / "elsewhere" / "lab.env"
    named.parent.mkdir()
    named.write_text("CLICKHOUSE_CLOUD_API_KEY=named-key\nCLICKHOUSE_CLOUD_API_SECRET=named-sec\n")
    monkeypatch.setenv("PGCLOUD_ENV_FILE", str(named))
    assert (resolve().key_id, resolve().source) == ("named-key", ".env")
    client = pgcloud_nb.connect(org_id="o")  # connect()'s default .env is replaced too
    assert (client.key_id, client.source) == ("named-key", ".env")
    client.close()
    assert resolve(env_file=tmp_path / ".env").key_id == "here-key"  # an explicit file wins
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "env-secret")
    assert resolve().key_id == "env-key"  # the environment still comes first


def test_use_sandbox_variable_skips_environment_and_dotenv(
    fake_sandbox: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pgcloud-nb lab --sandbox``: a .env beside the notebooks must not take over."""
    (tmp_path / ".env").write_text(
        "CLICKHOUSE_CLOUD_API_KEY=file-key\nCLICKHOUSE_CLOUD_API_SECRET=file-secret\n"
    )
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_KEY", "env-key")
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_SECRET", "env-secret")
    monkeypatch.setenv("PGCLOUD_USE_SANDBOX", "1")
    assert (resolve().source, resolve().key_id) == ("sandbox", "sb-key")
    assert resolve("arg-key", "arg-secret").source == "arguments"  # a key in the call is meant
    assert resolve(sandbox=False).source == "environment"  # as is sandbox=False
    monkeypatch.setenv("PGCLOUD_USE_SANDBOX", "0")
    assert resolve().source == "environment"


def _orgs_transport(orgs: list[dict[str, str]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/organizations"
        return httpx.Response(200, json={"status": 200, "requestId": "r", "result": orgs})

    return httpx.MockTransport(handler)


def test_connect_discovers_the_only_org() -> None:
    client = pgcloud_nb.connect(
        "k", "secret-xyz", transport=_orgs_transport([{"id": "only"}]), budget=Budget.unlimited()
    )
    assert client.org_id == "only" and client.source == "arguments"
    assert "secret-xyz" not in repr(client) and "arguments" in repr(client)


@pytest.mark.parametrize("orgs", [[], [{"id": "a"}, {"id": "b"}]])
def test_connect_refuses_ambiguous_orgs(orgs: list[dict[str, str]]) -> None:
    with pytest.raises(ConfigurationError, match=f"sees {len(orgs)} organizations"):
        pgcloud_nb.connect("k", "s", transport=_orgs_transport(orgs), budget=Budget.unlimited())


def test_clients_of_one_key_share_a_budget() -> None:
    a = pgcloud_nb.connect("shared-key", "s", org_id="o", base_url="https://x.example")
    b = pgcloud_nb.connect("shared-key", "s", org_id="o", base_url="https://x.example/")
    c = pgcloud_nb.connect("other-key", "s", org_id="o", base_url="https://x.example")
    assert a.budget is b.budget and a.budget is not c.budget


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pgcloud_nb; heavy = [m for m in ('ipywidgets', 'matplotlib', 'starlette',"
        " 'uvicorn', 'psycopg', 'pandas') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
