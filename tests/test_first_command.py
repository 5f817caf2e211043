"""The README's first command, ``.ci/setup && pgcloud-nb lab``, as root and as an ordinary user.

The package is installed already (``.ci/setup`` is not run again): each case runs the
installed ``pgcloud-nb`` console script on a copy of this checkout that any user can
read, with its own HOME and a free port, ``--no-browser``; waits until JupyterLab lists
the notebooks; checks that JupyterLab's environment holds no API secret; then sends
``lab`` a SIGTERM and checks that JupyterLab and the sandbox ``lab`` started are gone.

As root, the ordinary user is made here (``useradd``) and removed afterwards. The
interpreter may live where other users cannot reach it (pyenv under ``/root``, 0700):
then the user's command runs in a private mount namespace in which only the
interpreter's prefix is visible of that folder (nothing on the machine changes).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sysconfig.get_path("scripts"))
PGCLOUD_NB = SCRIPTS / "pgcloud-nb"
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
COPIED = ("pgcloud_nb", "notebooks", ".ci", "pyproject.toml", "README.md")
ANSWER_WITHIN = 180.0  # seconds; a loaded 2-core machine takes ~10-30 s
IS_ROOT = os.geteuid() == 0


@dataclass
class Who:
    """Whom the command runs as: HOME, ids, the sandbox home and how to wrap the command."""

    name: str
    home: Path
    uid: int
    gid: int
    sandbox_home: Path
    env: dict[str, str] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A folder every user may cross, holding a copy of the checkout (not /tmp scratch)."""
    where = Path(tempfile.mkdtemp(prefix="pgcloud-nb-first-", dir="/var/tmp"))
    where.chmod(0o755)
    repo = where / "repo"
    repo.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=skip)
        else:
            shutil.copy2(src, repo / name)
    subprocess.run(["chmod", "-R", "a+rX", str(repo)], check=True)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held together while chosen, so never the same one)."""
    held = [socket.socket() for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def _env(home: Path, repo: Path, **extra: str) -> dict[str, str]:
    """A login-like environment: no API key, no sandbox home unless given; this checkout."""
    return {
        "HOME": str(home),
        "PATH": f"{SCRIPTS}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # The installed package may point at another checkout: run this copy's code.
        "PYTHONPATH": str(repo),
        **extra,
    }


def _hidden_ancestor(path: Path) -> Path | None:
    """The top-most folder above ``path`` that other users cannot cross, if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def _namespace_wrapper(stage: Path) -> list[str]:
    """Run the command where the interpreter's prefix is reachable, if it is not already."""
    prefixes = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()})
    hidden = {h for p in prefixes if (h := _hidden_ancestor(p)) is not None}
    if not hidden:
        return []
    if len(hidden) > 1 or shutil.which("unshare") is None:
        pytest.skip(f"the interpreter's prefix {prefixes} is not reachable by other users")
    [top] = hidden
    lines = ["set -e"]
    for i, prefix in enumerate(prefixes):
        lines += [f"mkdir -p {stage}/{i}", f"mount --bind {prefix} {stage}/{i}"]
    lines.append(f"mount -t tmpfs -o mode=0755,size=1m pgcloud-nb-first {top}")
    for i, prefix in enumerate(prefixes):
        lines += [f"mkdir -p {prefix}", f"mount --bind {stage}/{i} {prefix}"]
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "sh"]


@pytest.fixture
def as_root(base: Path) -> Who:
    if not IS_ROOT:
        pytest.skip("the root case needs root")
    home = base / "root-home"
    home.mkdir(mode=0o700)
    # Root's default sandbox home is /var/lib/pgcloud-nb/sandbox: never this test's to touch.
    sandbox_home = home / "sandbox"
    env = _env(home, base / "repo", PGCLOUD_SANDBOX_HOME=str(sandbox_home))
    return Who("root", home, 0, 0, sandbox_home, env)


@pytest.fixture
def as_user(base: Path) -> Iterator[Who]:
    """An unprivileged user with its own HOME: made here when root, else the current user."""
    if not IS_ROOT:
        home = base / "user-home"
        home.mkdir(mode=0o700)
        sandbox_home = home / ".local/share/pgcloud-nb/sandbox"
        yield Who("user", home, os.getuid(), os.getgid(), sandbox_home, _env(home, base / "repo"))
        return
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd and setpriv are needed to run as an ordinary user")
    name = f"pgnb{secrets.token_hex(4)}"
    home = base / name
    subprocess.run(
        ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh",
         "--user-group", name],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        user = pwd.getpwnam(name)
        home.chmod(0o700)
        wrapper = [
            *_namespace_wrapper(base / "stage"),
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
        ]  # fmt: skip
        # The user's own default sandbox home: nothing is set for it.
        sandbox_home = home / ".local/share/pgcloud-nb/sandbox"
        env = _env(home, base / "repo", USER=name, LOGNAME=name)
        yield Who(name, home, user.pw_uid, user.pw_gid, sandbox_home, env, wrapper)
    finally:
        _kill_processes_of(pwd.getpwnam(name).pw_uid)
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                continue
    return pids


def _kill_processes_of(uid: int) -> None:
    """Left-overs of a failed run, by pid: only processes of the user made for this test."""
    for pid in _pids_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs}


def _wait_for_lab(proc: subprocess.Popen[str], url: str, token: str) -> dict[str, object]:
    """JupyterLab's listing of its root folder, as soon as it answers."""
    deadline = time.monotonic() + ANSWER_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"pgcloud-nb lab exited with {proc.returncode}:\n{err[-3000:]}")
        try:
            answer = httpx.get(
                f"{url}/api/contents", headers={"Authorization": f"token {token}"}, timeout=5
            )
        except httpx.TransportError:
            time.sleep(0.25)
            continue
        if answer.status_code == 200:
            listing: dict[str, object] = answer.json()
            return listing
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer within {ANSWER_WITHIN:g} s")


def _run_first_command(who: Who, base: Path, figures: dict[str, str], label: str) -> None:
    # The sandbox picks a free port too: give it one, or it may take JupyterLab's.
    (port, api_port), token = _free_ports(2), secrets.token_hex(16)
    argv = [
        *who.wrapper, str(PGCLOUD_NB), "lab", "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env={**who.env, "PGCLOUD_SANDBOX_PORT": str(api_port)},
        cwd=base / "repo",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        listing = _wait_for_lab(proc, f"http://127.0.0.1:{port}", token)
        figures[f"README's first command: seconds until JupyterLab answers, {label}"] = (
            f"{time.monotonic() - started:.1f} s"
        )
        names = sorted(str(item["name"]) for item in listing["content"])  # type: ignore[attr-defined]
        assert set(NOTEBOOKS) <= set(names), names

        # JupyterLab knows where the sandbox is, not its key. (Read as the user: the
        # sandbox refuses a home that is not its caller's.)
        status = _pgcloud_nb(who, "sandbox", "status", "--json")
        assert status.returncode == 0, f"no sandbox runs in the user's home: {status.stderr}"
        info = json.loads(status.stdout)
        key_secret = json.loads((who.sandbox_home / "credentials.json").read_text())["key_secret"]
        # lab's children: JupyterLab, and the sandbox server it started (its own session).
        [jupyter] = [pid for pid in _children(proc.pid) if b"jupyter" in _cmdline(pid)]
        env = _environ(jupyter)
        assert env.get("PGCLOUD_SANDBOX_HOME") == str(who.sandbox_home)
        assert "CLICKHOUSE_CLOUD_API_SECRET" not in env
        assert not any(key_secret in value for value in env.values())
        assert Path(f"/proc/{jupyter}").stat().st_uid == who.uid

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        assert "stopped the sandbox it started" in err, err[-3000:]
        if who.uid == 0:
            assert "--allow-root" in err
        assert _pgcloud_nb(who, "sandbox", "status").returncode == 3  # none running
        assert not Path(f"/proc/{jupyter}").exists() or _zombie(jupyter)
        assert not Path(f"/proc/{info['pid']}").exists() or _zombie(info["pid"])
        for url in (f"http://127.0.0.1:{port}/api", info["url"]):
            with pytest.raises(httpx.TransportError):
                httpx.get(url, timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        _pgcloud_nb(who, "sandbox", "stop")


def _pgcloud_nb(who: Who, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``pgcloud-nb``, run as ``who`` in ``who``'s environment."""
    return subprocess.run(
        [*who.wrapper, str(PGCLOUD_NB), *args],
        env=who.env,
        cwd=who.home,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_first_command_as_root(as_root: Who, base: Path, figures: dict[str, str]) -> None:
    _run_first_command(as_root, base, figures, "as root")


def test_first_command_as_an_ordinary_user(
    as_user: Who, base: Path, figures: dict[str, str]
) -> None:
    _run_first_command(as_user, base, figures, "as an ordinary user")
    if IS_ROOT:
        assert _pids_of(as_user.uid) == [], "processes of the user are left running"
        # The sandbox lived in the user's own home, made there with the user's ownership.
        assert who_owns(as_user.sandbox_home) == as_user.uid


def who_owns(path: Path) -> int:
    return path.stat().st_uid
