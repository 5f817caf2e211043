"""The public surface is small and pinned: a change to it is a decision, made here on purpose.

As httpx does (``tests/test_exported_members.py`` there), the names each public
module exports are listed literally; adding or removing one fails this test
until the list is updated with it.
"""

from __future__ import annotations

import importlib

import pytest

import pgcloud_nb

PUBLIC = {
    "pgcloud_nb": [
        "APIError",
        "AuthenticationError",
        "BadRequestError",
        "Client",
        "ConfigurationError",
        "ConflictError",
        "CredentialsUnknownError",
        "NotFoundError",
        "PermissionDeniedError",
        "PgCloudError",
        "PrometheusParseError",
        "RateLimitError",
        "SandboxUnavailableError",
        "ServerError",
        "TransportError",
        "UnexpectedResponseError",
        "UnexpectedStateError",
        "WaitError",
        "WaitTimeout",
        "__version__",
        "connect",
    ],
    "pgcloud_nb.sandbox": ["Sandbox", "SandboxError", "SandboxInfo", "Settings", "ensure_running"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_exported_name_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name


def test_error_classes_share_one_root() -> None:
    errors = [
        getattr(pgcloud_nb, n) for n in pgcloud_nb.__all__ if n.endswith(("Error", "Timeout"))
    ]
    assert all(issubclass(e, pgcloud_nb.PgCloudError) for e in errors)


def test_package_is_typed() -> None:
    # PEP 561: the marker ships inside the package, so mypy users get our annotations.
    from importlib.resources import files

    assert files("pgcloud_nb").joinpath("py.typed").is_file()
