"""The exception tree: status mapping, messages, redaction, pickling."""

from __future__ import annotations

import pickle

import pytest

from pgcloud_nb import errors
from pgcloud_nb.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    PgCloudError,
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnexpectedStateError,
    WaitTimeout,
    redact,
    status_error,
)

PASSWORD = "Sup3rSecretPassw0rd"
CONN = f"postgres://postgres:{PASSWORD}@db.example:5432/postgres?channel_binding=require"
# The client remembers every password it sees (create/reset answers, reset arguments) before
# any error can quote it; do the same here, before the parametrized errors are built.
errors.remember_secret(PASSWORD)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (418, APIError),
        (422, APIError),
    ],
)
def test_status_maps_to_class(status: int, cls: type[APIError]) -> None:
    assert status_error(status) is cls
    assert issubclass(cls, APIError) and issubclass(cls, PgCloudError)


def test_api_error_carries_status_message_and_request_id() -> None:
    err = ConflictError(
        409,
        "Service is deleting.",
        request_id="req-1",
        method="DELETE",
        url="https://key:secret@api.example/v1/organizations/o/postgres/p",
    )
    assert (err.status, err.message, err.request_id, err.method) == (
        409,
        "Service is deleting.",
        "req-1",
        "DELETE",
    )
    assert err.url == "https://api.example/v1/organizations/o/postgres/p"  # userinfo dropped
    text = str(err)
    assert "409" in text and "req-1" in text and "Service is deleting." in text
    assert "secret" not in text and "secret" not in repr(err)


def test_errors_survive_pickling() -> None:
    err = RateLimitError(429, "slow down", retry_after=3.0, request_id="r")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is RateLimitError
    assert (back.status, back.message, back.retry_after, str(back)) == (
        429,
        "slow down",
        3.0,
        str(err),
    )


def test_redact_masks_json_fields_uris_basic_auth() -> None:
    text = (
        f'{{"password":"{PASSWORD}","connectionString":"{CONN}","username":"postgres"}} '
        f"dsn={CONN} Authorization: Basic a2V5OnNlY3JldA=="
    )
    out = redact(text)
    assert PASSWORD not in out
    assert "a2V5OnNlY3JldA==" not in out
    assert '"username":"postgres"' in out  # non-secrets stay readable


def test_remembered_secret_is_masked_anywhere() -> None:
    err = BadRequestError(400, "the server said zz-Unusual-Token-42 was bad")
    errors.remember_secret("zz-Unusual-Token-42")  # learned after the error was made
    assert "zz-Unusual-Token-42" not in redact("the server said zz-Unusual-Token-42 was bad")
    assert "zz-Unusual-Token-42" not in str(err) and "zz-Unusual-Token-42" not in repr(err)


def _all_error_instances() -> list[Exception]:
    body = f'{{"status":500,"error":"boom","password":"{PASSWORD}","connectionString":"{CONN}"}}'
    out: list[Exception] = [
        cls(
            status,
            f"bad password {PASSWORD} in {CONN}",
            request_id="r",
            method="POST",
            url=f"https://k:{PASSWORD}@h/x",
            body=body,
        )
        for status, cls in [
            (400, BadRequestError),
            (401, AuthenticationError),
            (403, PermissionDeniedError),
            (404, NotFoundError),
            (409, ConflictError),
            (500, ServerError),
            (418, APIError),
        ]
    ]
    out.append(RateLimitError(429, f"password={PASSWORD}", retry_after=1, body=body))
    out.append(UnexpectedResponseError("not JSON", status=200, body=f"<html>{CONN}</html>"))
    out.append(UnexpectedResponseError("no result", status=200, body=body, url="https://a:b@h/"))
    out.append(TransportError(f"dropped while sending {CONN}", method="POST", url="https://h/x"))
    out.append(WaitTimeout("still creating"))
    out.append(UnexpectedStateError("deleting"))
    out.append(errors.ConfigurationError("no key"))
    out.append(errors.CredentialsUnknownError("no password known"))
    return out


@pytest.mark.parametrize("err", _all_error_instances(), ids=lambda e: type(e).__name__)
def test_no_secret_in_any_error_text(err: Exception) -> None:
    for text in (str(err), repr(err), *map(str, err.args), str(getattr(err, "body", ""))):
        assert PASSWORD not in text
        assert CONN not in text


def test_snippet_is_truncated_and_single_line() -> None:
    err = UnexpectedResponseError("not JSON", status=502, body="<html>\n" + "x" * 5000)
    assert len(err.body) <= errors.SNIPPET_LIMIT
    assert "\n" not in err.body


def test_wait_timeout_is_a_timeout_error() -> None:
    assert issubclass(WaitTimeout, TimeoutError)
    assert WaitTimeout("x", service=1).service == 1
