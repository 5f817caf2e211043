"""Names, hostnames, passwords and connection strings of new services."""

from __future__ import annotations

import re
import secrets
import string

from pgcloud_nb.sandbox.store import ServiceRow

__all__ = ["connection_string", "generate_password", "make_hostname", "rename_hostname"]


def generate_password(length: int = 24) -> str:
    """A password that meets ``pgPassword``: lower, upper and digit, URL-safe."""
    alphabet = string.ascii_letters + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
        ):
            return pw


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "pg"


def make_hostname(name: str, service_id: str, region: str, provider: str) -> str:
    """The real hostname's shape (docs/api-behaviour.md §4.4) under ``.localhost``.

    ``*.localhost`` is reserved for loopback (RFC 6761) but not every resolver
    maps it, so connection strings also carry ``hostaddr=127.0.0.1``; the name
    still matters to TLS, whose certificate lists it.
    """
    cluster = "pg" + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(24)
    )
    region = re.sub(r"[^a-z0-9-]+", "-", region.lower()).strip("-") or "local"
    return f"{_slug(name)}-{service_id[:8]}.{cluster}.c0.{region}.{provider}.pg.sandbox.localhost"


def rename_hostname(hostname: str, name: str, service_id: str) -> str:
    """Renaming changes the hostname's first label (spec: PATCH name)."""
    _, _, rest = hostname.partition(".")
    return f"{_slug(name)}-{service_id[:8]}.{rest}"


def connection_string(row: ServiceRow, password: str) -> str:
    return (
        f"postgres://{row.username}:{password}@{row.hostname}:{row.port}/postgres"
        "?hostaddr=127.0.0.1&channel_binding=require"
    )
