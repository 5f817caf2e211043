"""Where the fleet history lives: a DSN or ``CLICKHOUSE_*`` settings turned into
clickhouse-connect's arguments, checked before anything is sent or created.

Accepted DSNs (docs/architecture.md):

* ``chdb:///absolute/folder`` -- embedded; percent-escapes decoded; no host part;
* ``https://user:pass@host:8443/db`` -- a server or ClickHouse Cloud, over TLS;
* ``http://user@host:8123/db`` -- a server without TLS (the password travels in clear).

The scheme decides TLS, whatever the port: clickhouse-connect itself ignores the
scheme and turns TLS on only for ports 443 and 8443. ``clickhouse://`` is refused
rather than guessed at: the client speaks HTTP(S) only, never the native protocol
of ports 9000/9440, and a guess of plain HTTP would send a password in clear.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from ..errors import ConfigurationError
from ..redaction import redact, remember_secret

__all__ = ["check_database", "effective", "private_folder", "resolve", "secret_in"]

# What goes between backticks in every statement: no escaping needed, none attempted.
_DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_database(name: str, source: str) -> str:
    """``name`` if it is a plain identifier; else a ConfigurationError naming it and ``source``."""
    if not _DATABASE.fullmatch(name):
        raise ConfigurationError(
            f"the history's database name {name!r} (from {source}) must match "
            "[A-Za-z_][A-Za-z0-9_]* (at most 64 characters)"
        )
    return name


def private_folder(path: Path, what: str) -> Path:
    """Create ``path`` as 0700, or check an existing one is ours and writable by us alone.

    An existing folder is never chmod-ed: it may be a shared one (``/tmp``), and
    the history must not land where other users can write (threat model: shared
    machines, docs/architecture.md).
    """
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigurationError(f"{what} {path} is not a folder") from None
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise ConfigurationError(
                f"{what} {path} is shared (owned by uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):o}): use a folder of your own, e.g. a new one inside it"
            ) from None
        return path
    path.chmod(0o700)  # mkdir's mode is filtered by the umask
    return path


def secret_in(dsn: str | None) -> bool:
    """Whether ``dsn`` carries a password."""
    return bool(dsn) and urlparse(dsn or "").password is not None


def _port(text: str, source: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigurationError(f"{source}={text!r} is not a port number (1-65535)")
    return int(text)


def resolve(dsn: str | None, default: Path) -> tuple[dict[str, Any], str | None, str]:
    """(get_client keyword arguments, database named by the settings, redacted DSN)."""
    dsn = dsn or os.environ.get("PGCLOUD_HISTORY_DSN") or None
    if dsn is None and (host := os.environ.get("CLICKHOUSE_HOST")):
        secure = os.environ.get("CLICKHOUSE_SECURE", "true").lower() not in ("0", "false", "no")
        password = os.environ.get("CLICKHOUSE_PASSWORD", "")
        remember_secret(password)
        kwargs: dict[str, Any] = {
            "host": host,
            "username": os.environ.get("CLICKHOUSE_USER", "default"),
            "password": password,
            "secure": secure,
            "interface": "https" if secure else "http",
        }
        if port := os.environ.get("CLICKHOUSE_PORT"):
            kwargs["port"] = _port(port, "CLICKHOUSE_PORT")
        return kwargs, None, f"{'https' if secure else 'http'}://{host}"
    if dsn is None:
        dsn = "chdb://" + quote(str(default))
    url = urlparse(dsn)
    if url.password is not None:
        remember_secret(url.password)
        remember_secret(unquote(url.password))
    shown = redact(dsn)
    if url.scheme == "chdb":
        path = unquote(url.path)
        if url.netloc or not path.startswith("/"):
            raise ConfigurationError(
                f"the DSN {shown!r} must name an absolute folder: chdb:///absolute/path"
            )
        folder = private_folder(Path(path), "the history's folder")
        return {"interface": "chdb", "path": str(folder)}, None, shown
    if url.scheme not in ("https", "http"):
        raise ConfigurationError(
            f"the DSN {shown!r}: the scheme must be chdb, https or http "
            "(the store speaks ClickHouse's HTTP interface: https://user@host:8443/db)"
        )
    try:
        if url.port is not None:
            _port(str(url.port), "the DSN's port")
    except ValueError:
        raise ConfigurationError(f"the DSN {shown!r} has no valid port") from None
    database = unquote(url.path.strip("/").split("/")[0]) or None
    if database is not None:
        check_database(database, "the DSN's path")
    kwargs = {"dsn": dsn, "interface": url.scheme, "secure": url.scheme == "https"}
    return kwargs, database, shown


def effective(dsn: str | None, default: Path) -> str:
    """The DSN the settings name: ``dsn``, ``$PGCLOUD_HISTORY_DSN``, one built from
    ``CLICKHOUSE_*``, else the embedded ``default``. A background collector gets this
    through its config pipe, so its environment need not carry a password."""
    if dsn or (dsn := os.environ.get("PGCLOUD_HISTORY_DSN")):
        return dsn
    if host := os.environ.get("CLICKHOUSE_HOST"):
        secure = os.environ.get("CLICKHOUSE_SECURE", "true").lower() not in ("0", "false", "no")
        user = quote(os.environ.get("CLICKHOUSE_USER", "default"), safe="")
        password = os.environ.get("CLICKHOUSE_PASSWORD", "")
        remember_secret(password)
        remember_secret(quote(password, safe=""))
        auth = f"{user}:{quote(password, safe='')}" if password else user
        port = os.environ.get("CLICKHOUSE_PORT")
        at = f"{host}:{_port(port, 'CLICKHOUSE_PORT')}" if port else host
        return f"{'https' if secure else 'http'}://{auth}@{at}"
    return "chdb://" + quote(str(default))
