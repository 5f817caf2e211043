"""Drive ClickHouse's own CLI, ``clickhousectl``, against a sandbox, within its rate limit.

The CLI is a foreign client: it knows nothing of pgcloud_nb, and it does not
retry a 429 (docs/api-behaviour.md, "Rate limit"). So every command waits for
room in the key's budget before it runs. The budget is read from the sandbox's
own access log (``server.log``, one line per request, written by uvicorn when
the answer starts), which sees every request of the key, whoever sent it. A
logged time is never earlier than the moment the limiter counted the request,
so a slot judged free from the log is free.

:func:`forms` walks ``clickhousectl cloud postgres … -h`` to list every
subcommand and flag the installed CLI has; :class:`Ctl` books the forms its
commands used, so a test can check that none was left out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from pgcloud_nb.redaction import redact, remember_secret
from pgcloud_nb.sandbox import SandboxInfo

CLI = "clickhousectl"
VERSION = "0.5.0"

# `  -q, --query <QUERY>  …` or `      --json` in a help text's Options section.
_OPTION = re.compile(r"^\s{2,}(?:-\w, )?(--[a-z][a-z0-9-]*)")
# `  list  List Postgres services …` in a help text's Commands section.
_COMMAND = re.compile(r"^\s{2}([a-z][a-z0-9-]*)\s{2,}\S")
# uvicorn's access line, behind the timestamp the sandbox's log format puts first.
_ACCESS = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\"([A-Z]+) (/v1/\S*) HTTP/[\d.]+\" (\d{3})"
)


def cli_env(home: Path) -> dict[str, str]:
    """The CLI's environment: a throwaway ``HOME``, no telemetry, no update check.

    ``HOME`` keeps the CLI's files (``~/.clickhouse``) out of the user's own home.
    The update check would ask api.github.com once a day; a fresh check
    recorded in that home keeps the run off the network.
    """
    state = home / ".clickhouse"
    state.mkdir(parents=True, exist_ok=True)
    (state / "last_update_check").write_text(f"{int(time.time())}\n{VERSION}")
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DO_NOT_TRACK": "1",
        "LANG": "C.UTF-8",
    }


def _sections(text: str) -> dict[str, list[str]]:
    """A clap help text by its headed sections (``Commands``, ``Options``, …)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line[:-1] if line.endswith(":") else None
            if current:
                out.setdefault(current, [])
        elif current:
            out[current].append(line)
    return out


def forms(env: dict[str, str]) -> list[str]:
    """Every form of ``cloud postgres``: each leaf subcommand, and each flag where it is declared.

    A flag that a parent already offers (the global ``--json``, ``--org-id``,
    …) belongs to the parent only: ``"--json"``, not ``"get --json"``.
    """

    def walk(path: list[str], inherited: frozenset[str]) -> Iterator[str]:
        done = subprocess.run(
            [CLI, "cloud", *path, "-h"], env=env, capture_output=True, text=True, check=True
        )
        sections = _sections(done.stdout)
        flags = {
            m.group(1) for line in sections.get("Options", []) if (m := _OPTION.match(line))
        } - {"--help"}
        subs = [
            m.group(1)
            for line in sections.get("Commands", [])
            if (m := _COMMAND.match(line)) and m.group(1) != "help"
        ]
        name = " ".join(path[1:])
        if not subs:
            yield name
        yield from (f"{name} {flag}".strip() for flag in sorted(flags - inherited))
        for sub in subs:
            yield from walk([*path, sub], inherited | flags)

    return list(walk(["postgres"], frozenset()))


class Secret(str):
    """A password that pytest's tracebacks (which show call arguments) print as ``'***'``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Request:
    at: float  # epoch seconds, from the log line
    method: str
    path: str
    status: int


class AccessLog:
    """The API requests in a sandbox's ``server.log``, read on from where the last read ended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.requests: list[Request] = []

    def read(self) -> list[Request]:
        """The requests logged since the previous call (also appended to ``requests``)."""
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        new = []
        for raw in lines:
            if m := _ACCESS.match(raw.decode("utf-8", "replace")):
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                new.append(Request(at, m.group(2), m.group(3), int(m.group(4))))
        self.requests += new
        return new

    def counted_since(self, since: float) -> list[Request]:
        """Requests the limiter counted after ``since``: a 429 takes no slot."""
        self.read()
        return [r for r in self.requests if r.at > since and r.status != 429]


@dataclass
class Run:
    """One finished command: its words, exit code, output and the requests it made."""

    argv: list[str]
    rc: int
    out: str
    err: str
    requests: list[Request]

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # what a failed assertion shows, with passwords masked
        calls = ", ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests)
        return redact(
            f"$ {' '.join(self.argv)}\nexit {self.rc}; requests: {calls}\n"
            f"stdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"
        )


@dataclass
class Ctl:
    """``clickhousectl cloud postgres …`` on one sandbox, paced within its rate limit.

    Forms are booked three ways: ``attempted`` (a command carried them),
    ``pending`` (used by the test running now) and ``passed`` (used by a test
    that passed; see :meth:`settle`). A form a test needs but an xfailing step
    never reaches would still show up as not attempted: give such a step its
    own test, whose first command carries the new form.
    """

    info: SandboxInfo
    home: Path
    limit: int = 10
    window: float = 10.0
    log: AccessLog = field(init=False)
    env: dict[str, str] = field(init=False)
    known: list[str] = field(init=False)
    runs: list[Run] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)

    def __repr__(self) -> str:  # pytest shows fixtures in failures: keep it short
        return f"Ctl({self.info.url}, {len(self.runs)} runs)"

    def __post_init__(self) -> None:
        self.log = AccessLog(self.info.home / "server.log")
        self.env = cli_env(self.home)
        self.known = forms(self.env)
        remember_secret(self.info.key_secret)

    def base(self, org: bool = True) -> list[str]:
        """The words that point the CLI at the sandbox: the hidden ``--url`` flag, and the org."""
        words = [CLI, "cloud", "--url", self.info.url, "postgres"]
        return [*words, "--org-id", self.info.org_id] if org else words

    def key_env(self) -> dict[str, str]:
        return {
            **self.env,
            "CLICKHOUSE_CLOUD_API_KEY": self.info.key_id,
            "CLICKHOUSE_CLOUD_API_SECRET": self.info.key_secret,
        }

    def wait_for_room(self, need: int) -> None:
        """Sleep until ``need`` more requests fit in the key's window."""
        if need > self.limit:
            raise ValueError(f"a command of {need} requests never fits {self.limit} per window")
        while True:
            now = time.time()
            recent = sorted(r.at for r in self.log.counted_since(now - self.window))
            free = self.limit - len(recent)
            if free >= need:
                return
            # The (need - free)-th oldest request leaves the window first; a little slack
            # for the log's millisecond rounding.
            time.sleep(max(recent[need - free - 1] + self.window - now, 0) + 0.05)

    def __call__(
        self,
        command: str,
        cost: int,
        rc: int | None = 0,
        base: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Run:
        """Run ``clickhousectl cloud postgres <command>``, after waiting for ``cost`` free slots.

        ``command`` is split as a shell would (``shlex``), so it reads as typed.
        ``cost`` is what the command is known to send (measured); the run
        checks that it sent no more, so the pacing stays right. ``rc`` is the
        exit code expected (None: any); ``base`` and ``env`` replace the usual ones.
        """
        argv = [*(base if base is not None else self.base()), *shlex.split(command)]
        used = self.forms_of(argv)
        self.attempted.update(used)
        self.wait_for_room(cost)
        self.log.read()
        done = subprocess.run(
            argv, env=env or self.key_env(), capture_output=True, text=True, timeout=120
        )
        run = Run(argv, done.returncode, done.stdout, done.stderr, self.log.read())
        self.runs.append(run)
        assert rc is None or run.rc == rc, f"expected exit {rc}\n{run}"
        assert len(run.requests) <= cost, f"sent more than the {cost} requests paced for\n{run}"
        assert not [r for r in run.requests if r.status == 429], f"rate limited\n{run}"
        self.pending.update(used)
        return run

    def service(self, service_id: str) -> dict[str, Any]:
        """The sandbox's own GET of a service (paced too): its ``port``, which the CLI drops."""
        self.wait_for_room(1)
        answer = httpx.get(
            f"{self.info.url}/v1/organizations/{self.info.org_id}/postgres/{service_id}",
            auth=(self.info.key_id, self.info.key_secret),
            timeout=60,
        )
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()["result"]
        return found

    def settle(self, test_passed: bool) -> None:
        """At the end of a test: its forms pass if it passed."""
        if test_passed:
            self.passed |= self.pending
        self.pending = set()

    def forms_of(self, argv: list[str]) -> list[str]:
        """The leaf subcommand in ``argv`` and the forms of the flags it carries."""
        words = argv[argv.index("postgres") + 1 :]
        leaves = {f for f in self.known if "--" not in f}
        spans = [" ".join(words[i : i + n]) for n in (2, 1) for i in range(len(words))]
        leaf = next((s for s in spans if s in leaves), None)
        assert leaf, f"no known subcommand in {argv}"
        found = [leaf]
        for flag in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            if f"{leaf} {flag}" in self.known:
                found.append(f"{leaf} {flag}")
            elif flag in self.known:
                found.append(flag)
        return found
