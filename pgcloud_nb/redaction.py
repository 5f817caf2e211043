"""The one place secrets are masked: the known-secret set and :func:`redact`.

Passwords, connection strings and API secrets must never reach a repr, a log, an
error, a frame or a file in plaintext. Two nets catch them:

- **patterns**: ``"password": "…"``, ``connectionString=…``, ``key_secret=…``,
  URI userinfo (``postgres://user:pw@host``) and HTTP Basic credentials, in
  JSON, form or log text;
- **the known-secret set**: every secret this process has seen (API secrets,
  service passwords) is registered with :func:`remember_secret` and masked
  wherever it appears, even in text no pattern recognises (a password echoed
  inside a server's error message).

The error tree (:mod:`pgcloud_nb.errors`) redacts its text when shown; the
client, the models and the credentials code register secrets as they see them.
"""

from __future__ import annotations

import re
import threading

__all__ = ["MASK", "SNIPPET_LIMIT", "redact", "remember_secret", "safe_url", "snippet"]

MASK = "**********"
SNIPPET_LIMIT = 300

# "password": "…" / "connectionString": "…" / key_secret=… in JSON, form or log text.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?(?:password|connection_?string|secret|key_secret|api_secret|token)["']?\s*[:=]\s*)
    (?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}"']+)
    """
)
# postgres://user:pw@host → postgres://user:***@host (any scheme)
_URI_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"']+):[^@\s\"']*@")
_ANY_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"']*@")
_BASIC_AUTH = re.compile(r"(?i)(authorization\s*[:=]\s*\"?basic\s+)[A-Za-z0-9+/=]+")

# Secrets this process has seen (API secrets, service passwords): masked wherever they appear,
# even in text no pattern above would recognise (a password echoed inside an error message).
_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Have :func:`redact` mask ``value`` wherever it appears from now on."""
    if value and len(value) >= 4:  # too short a string would mask ordinary words
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` with passwords, connection strings, URI userinfo and known secrets masked."""
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    text = _URI_USERINFO.sub(lambda m: m.group(1) + f":{MASK}@", text)
    text = _BASIC_AUTH.sub(lambda m: m.group(1) + MASK, text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def snippet(text: str, limit: int = SNIPPET_LIMIT) -> str:
    """A redacted, single-line, truncated quote of a body for an error message."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def safe_url(url: object) -> str:
    """The URL without userinfo (and so without credentials)."""
    return redact(_ANY_USERINFO.sub(r"\1", str(url)))
