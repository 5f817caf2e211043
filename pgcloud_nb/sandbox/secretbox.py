"""Secrets the sandbox has to keep on disk for a while, sealed: never a password in plaintext.

One secret needs this today: a new service's password, from the create's
answer until PostgreSQL has it (``ServiceRow.pending_password``), so that a
create cut short by a crash can finish with the password already promised. The
store keeps it sealed with AES-256-GCM (:class:`SecretBox`), bound to the
service's id (associated data: a sealed value copied to another row does not
open). Nothing else of a password is kept: PostgreSQL gets SCRAM verifiers
only (:mod:`postgres.passwords`), and a password reset is never stored.

The key lives beside the API key in the home's ``credentials.json`` (mode 0600
in the 0700 home) under :data:`KEY_FIELD`, never in ``state.db``: a copy of the
database alone, its WAL included, gives nothing. :func:`home_box` adds the key
to a credentials file made before it existed. Only the server adds it, under
the home's lock (``server.lock``), so two processes never race to make two keys.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_FIELD", "SEALED_PREFIX", "SecretBox", "UnreadableSecret", "home_box"]

KEY_FIELD = "store_key"
SEALED_PREFIX = "sealed:v1:"  # what a sealed value starts with; the version names the scheme
_NONCE = 12


class UnreadableSecret(ValueError):
    """A sealed value that does not open with this key (another home's, or damaged)."""


class SecretBox:
    """Seal and open short secrets with one 256-bit key (AES-GCM, a random nonce each)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a SecretBox key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # the key never reaches a repr
        return "SecretBox(key='***')"

    @staticmethod
    def new_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith(SEALED_PREFIX)

    def seal(self, secret: str, context: str) -> str:
        """``secret`` sealed for ``context`` (e.g. the service id), as printable text."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """The secret :meth:`seal` sealed for the same ``context``; UnreadableSecret if not."""
        if not self.is_sealed(sealed):
            raise UnreadableSecret("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise UnreadableSecret("a sealed value does not open with this home's key") from None


def home_box(home: Path) -> SecretBox:
    """The box whose key is kept in ``home``'s credentials.json, added there the first time.

    The credentials file must exist (``SandboxHome.credentials`` makes it): a
    store is never opened in a home without its API key.
    """
    path = Path(home) / "credentials.json"
    data = json.loads(path.read_text())
    if KEY_FIELD not in data:
        data[KEY_FIELD] = base64.urlsafe_b64encode(SecretBox.new_key()).decode()
        _replace_private(path, json.dumps(data))
    return SecretBox(base64.urlsafe_b64decode(data[KEY_FIELD]))


def _replace_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably, as a new 0600 file: a reader
    sees the old file or the new one, and a crash never leaves the key half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut too
    finally:
        os.close(folder)
