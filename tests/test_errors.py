"""The exception tree: status mapping, messages, redaction, pickling."""

from __future__ import annotations

import inspect
import pickle
import re

import pytest

from pgcloud_nb import errors, redaction
from pgcloud_nb.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    PgCloudError,
    PrometheusParseError,
    RateLimitError,
    SandboxUnavailableError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnexpectedStateError,
    WaitTimeout,
    status_error,
)
from pgcloud_nb.redaction import redact

PASSWORD = "Sup3rSecretPassw0rd"
CONN = f"postgres://postgres:{PASSWORD}@db.example:5432/postgres?channel_binding=require"
# The client remembers every password it sees (create/reset answers, reset arguments) before
# any error can quote it; do the same here, before the parametrized errors are built.
redaction.remember_secret(PASSWORD)


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
    redaction.remember_secret("zz-Unusual-Token-42")  # learned after the error was made
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
    out.append(SandboxUnavailableError(f"the sandbox server exited; log: dsn={CONN}"))
    out.append(PrometheusParseError(3, f'x{{password="{PASSWORD}"}} 1x', "bad number"))
    return out


@pytest.mark.parametrize("err", _all_error_instances(), ids=lambda e: type(e).__name__)
def test_no_secret_in_any_error_text(err: Exception) -> None:
    for text in (str(err), repr(err), *map(str, err.args), str(getattr(err, "body", ""))):
        assert PASSWORD not in text
        assert CONN not in text


def test_snippet_is_truncated_and_single_line() -> None:
    err = UnexpectedResponseError("not JSON", status=502, body="<html>\n" + "x" * 5000)
    assert len(err.body) <= redaction.SNIPPET_LIMIT
    assert "\n" not in err.body


def test_wait_timeout_is_a_timeout_error() -> None:
    assert issubclass(WaitTimeout, TimeoutError)
    assert WaitTimeout("x", service=1).service == 1


def _drawn_parents() -> dict[str, str | None]:
    """Class → parent as drawn in the module docstring (by the column each name starts at)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^( {4}[ │├└─]*)([A-Z][A-Za-z]+)\b", line)
        if m is None or not inspect.isclass(getattr(errors, m[2], None)):
            continue
        column = len(m[1])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[m[2]] = stack[-1][1] if stack else None
        stack.append((column, m[2]))
    return parents


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, PgCloudError)
    }
    assert set(classes) == set(errors.__all__) - {"status_error"}
    real = {
        name: next((b.__name__ for b in cls.__bases__ if issubclass(b, PgCloudError)), None)
        for name, cls in classes.items()
    }
    assert _drawn_parents() == real


def test_parse_and_sandbox_errors_join_the_tree_and_keep_their_builtin_bases() -> None:
    parse = PrometheusParseError(7, "x 12x", "bad number")
    assert isinstance(parse, PgCloudError) and isinstance(parse, ValueError)
    assert (parse.lineno, parse.line, parse.reason) == (7, "x 12x", "bad number")
    assert str(parse) == "line 7: bad number: 'x 12x'"
    back = pickle.loads(pickle.dumps(parse))
    assert (type(back), back.lineno, back.line, str(back)) == (
        PrometheusParseError,
        7,
        "x 12x",
        str(parse),
    )
    assert issubclass(SandboxUnavailableError, PgCloudError)
    assert issubclass(SandboxUnavailableError, RuntimeError)  # what the CLI and callers catch
