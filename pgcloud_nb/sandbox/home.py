"""The sandbox's one folder: its SQLite state, its API key, its clusters and its logs.

It is private: 0700 and ours, and nothing below it is open to the group or to
others (:meth:`SandboxHome.ensure` makes it so at every start, also for a home
an older version left looser). A home owned by another user is refused.

Layout of ``$PGCLOUD_SANDBOX_HOME``::

    credentials.json   org id, key id and key secret (mode 0600), made at first start;
                       also the key that seals pending passwords (secretbox.py)
    state.db           SQLite: services, config, metric samples
    server.json        url and pid of the running API server (gone when stopped)
    server.log         the API server's log (never holds a secret)
    clusters/          one folder per service: pgdata/, socket/, certs; as root a
                       link to a folder the server's user can reach (postgres.osuser)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgcloud_nb.sandbox.errors import UnsafePathError
from pgcloud_nb.sandbox.postgres.private import tighten_tree

__all__ = ["Credentials", "SandboxHome"]

_NEW_PRIVATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # a new 0600 file, no link


@dataclass(frozen=True)
class Credentials:
    org_id: str
    key_id: str
    key_secret: str

    def __repr__(self) -> str:  # the secret never reaches a repr
        return f"Credentials(org_id={self.org_id!r}, key_id={self.key_id!r}, key_secret='***')"


class SandboxHome:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().resolve()

    def __repr__(self) -> str:
        return f"SandboxHome({str(self.path)!r})"

    @property
    def db_path(self) -> Path:
        return self.path / "state.db"

    @property
    def server_file(self) -> Path:
        return self.path / "server.json"

    @property
    def log_file(self) -> Path:
        return self.path / "server.log"

    @property
    def clusters_dir(self) -> Path:
        return self.path / "clusters"

    def ensure(self) -> None:
        """Make the home, or check an existing one is ours, and make it private again."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(self.path)
        if st.st_uid != os.geteuid():
            raise UnsafePathError(self.path, f"is owned by uid {st.st_uid}, not {os.geteuid()}")
        tighten_tree(self.path)  # follows no link: clusters/ may point elsewhere
        for name in ("server.log", "server.lock"):  # opened later by others, 0600 from now
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path / name, _NEW_PRIVATE, 0o600))

    def credentials(self) -> Credentials:
        """The sandbox's org and API key, generated once and stored with mode 0600."""
        self.ensure()
        f = self.path / "credentials.json"
        if not f.exists():
            data = {
                "org_id": str(uuid.uuid4()),
                # Shaped like real keys: a 20-character ID and a 40-character secret.
                "key_id": secrets.token_hex(10).upper(),
                "key_secret": "4b1d" + secrets.token_urlsafe(30)[:36],
            }
            # Write a private temp file, then link it into place: a racing start
            # either wins or finds the winner's complete file, never a half-written one.
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".credentials-")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(data, out)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, f)
            finally:
                os.unlink(tmp)
        data = json.loads(f.read_text())
        return Credentials(data["org_id"], data["key_id"], data["key_secret"])

    def read_server(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.server_file.read_text())
            return found
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_server(self, info: dict[str, Any]) -> None:
        tmp = self.server_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, _NEW_PRIVATE, 0o600), "w") as f:
            json.dump(info, f)
        tmp.replace(self.server_file)

    def clear_server(self) -> None:
        self.server_file.unlink(missing_ok=True)
