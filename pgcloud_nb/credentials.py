"""Where the API key comes from, in the order connect() tries.

1. keyword arguments (``source="arguments"``);
2. ``CLICKHOUSE_CLOUD_API_KEY`` / ``CLICKHOUSE_CLOUD_API_SECRET`` in the
   environment (``"environment"``; the names clickhousectl uses);
3. the same keys in ``.env`` in the working directory (``".env"``), read with
   ``dotenv_values``: only ``CLICKHOUSE_*`` keys are looked at and ``os.environ``
   is left alone. ``$PGCLOUD_ENV_FILE``, when set, names that file instead (a path,
   never the secret; an ``env_file=`` other than the default ``".env"`` still wins);
4. none of these: the local sandbox (``"sandbox"``) of ``$PGCLOUD_SANDBOX_HOME`` (else
   the user's default home), attached or started
   (:class:`~pgcloud_nb.errors.SandboxUnavailableError` if it cannot be). Its key is
   read from the home's ``credentials.json`` (0600). ``pgcloud-nb lab`` and
   ``binder/start`` pass JupyterLab only that home, never the key, so a notebook's
   ``connect()`` lands here and says ``sandbox``.

``PGCLOUD_USE_SANDBOX=1`` skips steps 2 and 3 when ``sandbox=`` is not given: only
a key passed as arguments is used, else the sandbox. ``pgcloud-nb lab`` decides once
where the notebooks go and hands the kernels these two variables so that their
``connect()`` does the same, wherever a kernel's working folder is: ``PGCLOUD_ENV_FILE``
with the absolute path of the ``.env`` it found (the kernels run in ``notebooks/``,
where a relative ``.env`` would be another file, or none), or ``PGCLOUD_USE_SANDBOX=1``
when it runs them on the sandbox (so a ``.env`` in ``notebooks/`` cannot take over).

``CLICKHOUSE_ORG_ID`` and ``CLICKHOUSE_API_URL`` are read from the same place
as the key (arguments win). The secret is kept in a :class:`pydantic.SecretStr`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from .errors import ConfigurationError, SandboxUnavailableError
from .redaction import remember_secret

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_FILE_VAR",
    "USE_SANDBOX_VAR",
    "ResolvedCredentials",
    "env_file_for",
    "resolve",
    "sandbox_forced",
]

DEFAULT_BASE_URL = "https://api.clickhouse.cloud"
KEY_VAR = "CLICKHOUSE_CLOUD_API_KEY"
SECRET_VAR = "CLICKHOUSE_CLOUD_API_SECRET"
ORG_VAR = "CLICKHOUSE_ORG_ID"
URL_VAR = "CLICKHOUSE_API_URL"
ENV_FILE_VAR = "PGCLOUD_ENV_FILE"
USE_SANDBOX_VAR = "PGCLOUD_USE_SANDBOX"
DEFAULT_ENV_FILE = ".env"


@dataclass(frozen=True)
class ResolvedCredentials:
    key_id: str
    key_secret: SecretStr
    base_url: str
    source: str  # "arguments", "environment", ".env" or "sandbox"
    org_id: str | None = None  # None: ask GET /v1/organizations


def _read_env_file(env_file: str | os.PathLike[str] | None) -> dict[str, str]:
    if env_file is None:
        return {}
    path = Path(env_file)
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # only needed when a .env exists

    values = dotenv_values(path)
    return {k: v for k, v in values.items() if k.startswith("CLICKHOUSE_") and v}


def sandbox_forced(environ: Mapping[str, str]) -> bool:
    """Whether ``PGCLOUD_USE_SANDBOX`` says to skip the environment's and ``.env``'s key."""
    return environ.get(USE_SANDBOX_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def env_file_for(
    env_file: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> str | os.PathLike[str] | None:
    """The ``.env`` to read: ``$PGCLOUD_ENV_FILE`` in place of the default ``".env"``."""
    if isinstance(env_file, str) and env_file == DEFAULT_ENV_FILE:
        return environ.get(ENV_FILE_VAR) or env_file
    return env_file


def _pair(values: Mapping[str, str | None], where: str) -> tuple[str, str] | None:
    key, secret = values.get(KEY_VAR), values.get(SECRET_VAR)
    if key and secret:
        return key, secret
    if key or secret:
        missing = SECRET_VAR if key else KEY_VAR
        raise ConfigurationError(f"{where} sets only half of the API key: {missing} is missing")
    return None


def resolve(
    api_key: str | None = None,
    api_secret: str | SecretStr | None = None,
    *,
    org_id: str | None = None,
    base_url: str | None = None,
    env_file: str | os.PathLike[str] | None = DEFAULT_ENV_FILE,
    sandbox: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedCredentials:
    """Find the key. ``sandbox=True`` forces the sandbox, ``False`` forbids it."""
    env = os.environ if environ is None else environ
    env_file = env_file_for(env_file, env)
    only_arguments = sandbox is None and sandbox_forced(env)
    if isinstance(api_secret, SecretStr):
        api_secret = api_secret.get_secret_value()
    if sandbox is not True:
        found: tuple[str, str, str, Mapping[str, str | None]] | None = None
        if api_key or api_secret:
            if not (api_key and api_secret):
                raise ConfigurationError("pass both api_key and api_secret, or neither")
            found = (api_key, api_secret, "arguments", env)
        elif only_arguments:
            pass  # PGCLOUD_USE_SANDBOX: neither the environment's key nor a .env's
        elif pair := _pair(env, "the environment"):
            found = (*pair, "environment", env)
        elif pair := _pair(dotenv := _read_env_file(env_file), str(env_file)):
            found = (*pair, ".env", dotenv)
        if found:
            key, secret, source, origin = found
            remember_secret(secret)
            return ResolvedCredentials(
                key_id=key,
                key_secret=SecretStr(secret),
                base_url=(base_url or origin.get(URL_VAR) or env.get(URL_VAR) or DEFAULT_BASE_URL),
                source=source,
                org_id=org_id or origin.get(ORG_VAR) or env.get(ORG_VAR) or None,
            )
        if sandbox is False:
            raise ConfigurationError(
                f"no API key: pass api_key/api_secret, set {KEY_VAR} and {SECRET_VAR}, "
                f"or put them in {env_file or '.env'}"
            )
    return _sandbox(org_id, base_url)


def _sandbox(org_id: str | None, base_url: str | None) -> ResolvedCredentials:
    # Imported here: the sandbox pulls in starlette, uvicorn and PostgreSQL tooling.
    from .sandbox import SandboxError, ensure_running

    try:
        info = ensure_running()
    except SandboxError as exc:
        # connect() fails within one tree; the sandbox's own error (and its text) is the cause.
        raise SandboxUnavailableError(str(exc)) from exc
    remember_secret(info.key_secret)
    return ResolvedCredentials(
        key_id=info.key_id,
        key_secret=SecretStr(info.key_secret),
        base_url=base_url or info.url,
        source="sandbox",
        org_id=org_id or info.org_id,
    )
