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

``.ci/setup``'s ordinary-user branches (Debian packages missing, Debian's python3
outside a virtual environment, in one, and ``pip --user``) run too, in seconds, with
pip and the CLI stubbed: what each installs where, and what each tells the user.
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
        # One per test (several tests run as this user in one module's base).
        home = Path(tempfile.mkdtemp(prefix="user-home-", dir=base))
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


# .ci/setup as an ordinary user, each of its branches, in seconds: pip, the CLI and
# dpkg-query are stubbed in a checkout holding only .ci/setup (the real install is the
# README's command itself, minutes long, and CI runs it as root). The pip stub's lines
# start as pip's do, or .ci/setup's filter of pip's output would drop them.
PIP_STUB = (
    'import sys\nprint("Obtaining pip-stub", *sys.argv[1:])\nprint("Successfully installed x-0")\n'
)
CLI_STUB = 'import sys\nprint("cli-stub", *sys.argv[1:])\n'
DEBIAN_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _stub_checkout(base: Path) -> Path:
    where = Path(tempfile.mkdtemp(prefix="setup-", dir=base))
    for name, text in {
        ".ci/setup": (ROOT / ".ci/setup").read_text(),
        "pip/__init__.py": "",
        "pip/__main__.py": PIP_STUB,
        "pgcloud_nb/__init__.py": "",
        "pgcloud_nb/cli.py": CLI_STUB,
        "installed/dpkg-query": "#!/bin/sh\nprintf 'install ok installed'\n",
        "missing/dpkg-query": "#!/bin/sh\nexit 1\n",
    }.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    subprocess.run(["chmod", "-R", "a+rX", str(where)], check=True)
    for script in (".ci/setup", "installed/dpkg-query", "missing/dpkg-query"):
        (where / script).chmod(0o755)
    return where


def _setup(who: Who, checkout: Path, dpkg: str, *args: str, **env: str) -> tuple[int, str, str]:
    path = env.pop("PATH", SYSTEM_PATH)
    run = subprocess.run(
        [*_setup_wrapper(who), str(checkout / ".ci/setup"), *args],
        env={"HOME": str(who.home), "LANG": "C.UTF-8", "PATH": f"{checkout / dpkg}:{path}", **env},
        cwd=who.home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.returncode, run.stdout, run.stderr


def test_setup_branches_as_an_ordinary_user(as_user: Who, base: Path) -> None:
    if not _externally_managed(DEBIAN_PYTHON):
        pytest.skip("needs Debian's own python3 (externally managed)")
    checkout = _stub_checkout(base)

    # The Debian packages are missing: named, with the line that installs them, nothing else.
    code, out, err = _setup(as_user, checkout, "missing", PYTHON=str(DEBIAN_PYTHON))
    assert code == 1 and "pip-stub" not in out, out + err
    assert "missing Debian packages: postgresql postgresql-contrib" in err
    assert "sudo apt-get install -y postgresql postgresql-contrib" in err

    # Debian's python3, no virtual environment: the line that makes one, flag included.
    code, out, err = _setup(as_user, checkout, "installed", "--test")
    assert code == 1 and "pip-stub" not in out, out + err
    venv = "-m venv ~/.venvs/pgcloud-nb && . ~/.venvs/pgcloud-nb/bin/activate && .ci/setup --test"
    assert venv in err

    # In a virtual environment (the README's way): installed there, python is its own.
    env_dir = as_user.home / f"venv-{secrets.token_hex(3)}"
    made = subprocess.run(
        [*_setup_wrapper(as_user), str(DEBIAN_PYTHON), "-m", "venv", "--without-pip", str(env_dir)],
        env={"HOME": str(as_user.home), "PATH": SYSTEM_PATH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode != 0:
        pytest.skip(f"python3 -m venv does not work here: {made.stderr[-500:]}")
    active = {"PATH": f"{env_dir}/bin:{SYSTEM_PATH}", "VIRTUAL_ENV": str(env_dir)}
    code, out, err = _setup(as_user, checkout, "installed", "--test", **active)
    assert code == 0, out + err
    [pip] = [line for line in out.splitlines() if "pip-stub" in line]
    assert "install" in pip and "-e .[test]" in pip and "--user" not in pip
    assert "cli-stub sandbox install-postgres 17" in out and "install-postgres 18" in out
    assert "==> ready: pgcloud-nb lab opens the notebooks" in out
    assert "the tests run with" not in out  # python -m pytest, as the README says

    # Debian's python3 told to take pip anyway: pip --user, and both PATH notes.
    code, out, err = _setup(as_user, checkout, "installed", "--test", PIP_BREAK_SYSTEM_PACKAGES="1")
    assert code == 0, out + err
    [pip] = [line for line in out.splitlines() if "pip-stub" in line]
    assert "--user" in pip and "--no-warn-script-location" in pip
    assert f"pgcloud-nb is in {as_user.home}/.local/bin, which is not on PATH" in out
    if shutil.which("python", path=SYSTEM_PATH) is None:
        assert f"the tests run with {DEBIAN_PYTHON} -m pytest (python on PATH is missing)" in out


def _externally_managed(python: Path) -> bool:
    probe = "import sysconfig; print(sysconfig.get_path('stdlib') + '/EXTERNALLY-MANAGED')"
    if not python.exists():
        return False
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    return run.returncode == 0 and Path(run.stdout.strip()).exists()


def _setup_wrapper(who: Who) -> list[str]:
    """Only the change of user: Debian's python3 needs no private mount namespace."""
    return who.wrapper[who.wrapper.index("setpriv") :] if who.wrapper else []
