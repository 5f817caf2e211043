"""The store's settings are checked before anything is sent or created (no engine started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgcloud_nb.collect.dsn import check_database, private_folder, resolve
from pgcloud_nb.errors import ConfigurationError
from pgcloud_nb.redaction import redact


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGCLOUD_HISTORY_DSN", "CLICKHOUSE_HOST", "CLICKHOUSE_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_the_scheme_decides_tls(tmp_path: Path) -> None:
    kwargs, db, shown = resolve("https://u:pw%2Fx@host.invalid:9000/fleet", tmp_path)
    assert kwargs["secure"] is True and kwargs["interface"] == "https" and db == "fleet"
    assert "pw" not in shown and "pw/x" not in redact("refused pw/x")  # decoded form too
    kwargs, _, _ = resolve("http://u@host.invalid:8443/fleet", tmp_path)
    assert kwargs["secure"] is False and kwargs["interface"] == "http"
    for bad in ("clickhouse://u:s3cr3t@h:9440/db", "ftp://h/db", "h:8123"):
        with pytest.raises(ConfigurationError, match="scheme") as e:
            resolve(bad, tmp_path)
        assert "s3cr3t" not in str(e.value)


def test_bad_names_and_ports_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("x`; DROP TABLE t; --", "1abc", "a" * 65, ""):
        with pytest.raises(ConfigurationError, match="database name"):
            check_database(name, "test")
    with pytest.raises(ConfigurationError, match="database name"):
        resolve("https://h.invalid/a%60b", tmp_path)
    monkeypatch.setenv("CLICKHOUSE_HOST", "h.invalid")
    monkeypatch.setenv("CLICKHOUSE_PORT", "84x3")
    with pytest.raises(ConfigurationError, match="CLICKHOUSE_PORT"):
        resolve(None, tmp_path)


def test_embedded_folders_are_absolute_and_private(tmp_path: Path) -> None:
    for bad in ("chdb:", "chdb:relative", "chdb://tmp/hist"):
        with pytest.raises(ConfigurationError, match="absolute"):
            resolve(bad, tmp_path)
    kwargs, _, _ = resolve(f"chdb://{tmp_path}/my%20history", tmp_path)
    made = Path(kwargs["path"])
    assert made == tmp_path / "my history" and made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(ConfigurationError, match="shared"):
        resolve(f"chdb://{shared}", tmp_path)
    assert shared.stat().st_mode & 0o7777 == 0o1777  # left as it was
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    private_folder(mine, "test")
    assert mine.stat().st_mode & 0o777 == 0o755 and os.access(mine, os.W_OK)
