"""The collector's home and command line, without starting a collector: who holds the
lock, what a bad setting or a bare ``python -m ...process`` answers."""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

import pytest

from pgcloud_nb.collect import command, process
from pgcloud_nb.collect.home import LOCK, holder, lock, read_state, write_state
from pgcloud_nb.errors import ConfigurationError


@pytest.mark.parametrize("text", ["", "-1", "0", "1", " ", "12x"])
def test_a_lock_without_a_believable_pid_names_no_one(tmp_path: Path, text: str) -> None:
    # stop() would signal that pid: kill(-1) is every process
    with open(tmp_path / LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(text)
        f.flush()
        assert holder(tmp_path, patience=0.1) is None
        assert process.stop(tmp_path, timeout=0.1) is False


def test_the_holder_is_the_process_the_kernel_names(tmp_path: Path) -> None:
    held = lock(tmp_path)
    assert held is not None and holder(tmp_path) == os.getpid()
    assert lock(tmp_path) is None  # one collector per home
    held.close()
    assert holder(tmp_path) is None
    with open(tmp_path / LOCK, "w") as f:  # held, but the pid written is someone else's
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(str(os.getppid()))
        f.flush()
        assert holder(tmp_path, patience=0.1) is None
    write_state(tmp_path, {"rounds": 3})
    assert read_state(tmp_path) == {"rounds": 3}


def test_a_running_collector_with_other_settings_is_refused() -> None:
    running = {"home": "/h", "pid": 7, "base_url": "u", "org_id": "o", "key_id": "k"}
    running |= {"interval": 60.0, "dsn_sha": process._dsn_sha("chdb:///h")}
    asked = {"base_url": "u", "org_id": "o", "key_id": "k", "interval": 60, "dsn": "chdb:///h"}
    assert process._same(running, asked) is running
    with pytest.raises(ConfigurationError, match=r"interval: 60\.0 running, 5\.0 asked"):
        process._same(running, {**asked, "interval": 5})
    with pytest.raises(ConfigurationError, match="another store"):
        process._same(running, {**asked, "dsn": "chdb:///elsewhere"})


@pytest.mark.parametrize(
    ("flag", "env", "named"),
    [
        ("nan", None, "--interval"),
        ("inf", None, "--interval"),
        ("-5", None, "--interval"),
        (None, "abc", "PGCLOUD_COLLECT_INTERVAL"),
        (None, "-5", "PGCLOUD_COLLECT_INTERVAL"),
    ],
)
def test_a_bad_interval_is_bad_usage(
    flag: str | None,
    env: str | None,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    if env is not None:
        monkeypatch.setenv(command.INTERVAL_ENV, env)
    argv = ["start", "--home", str(tmp_path)] + (["--interval", flag] if flag else [])
    assert command.main(argv) == 2
    assert named in capsys.readouterr().err


def test_the_process_without_its_settings_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for stdin in ("", "{}", "not json"):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert process.main([str(tmp_path)]) == 2
        assert "collect start" in capsys.readouterr().err
