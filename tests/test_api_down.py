"""An API that does not answer: one short bounded retry, then one line that says what to do.

A refused connection used to be retried for the policy's whole budget (about 35 s of a
busy kernel) and to print the httpx → httpcore → socket chain (158 lines in a notebook).
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import pgcloud_nb
from pgcloud_nb.client import Client
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.requester import CONNECT_WAITS, CONNECT_WINDOW


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(base_url: str, transport: httpx.BaseTransport | None = None) -> tuple[Client, Any]:
    """A client whose waits advance a fake clock instead of sleeping."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pg = pgcloud_nb.connect(
        api_key="key-id",
        api_secret="key-secret-never-shown",
        org_id="org",
        base_url=base_url,
        budget=Budget.unlimited(),
        transport=transport,
    )
    pg.requester.sleep = sleep
    pg.requester.clock = lambda: now[0]
    return pg, (sleeps, now)


def test_no_api_listening_fails_after_a_short_retry_with_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    pg, (sleeps, _) = _client(url)
    with pytest.raises(pgcloud_nb.TransportError) as info:
        pg.list_services()
    err = info.value
    text = str(err)
    assert "\n" not in text
    assert f"cannot reach the API at {url}" in text
    assert "pgcloud-nb sandbox start" in text and "CLICKHOUSE_API_URL" in text
    assert "key-secret-never-shown" not in text and not err.sent
    # Retried briefly: the connect waits, no more.
    assert pg.requester.request_count == len(CONNECT_WAITS) + 1
    assert sleeps == list(CONNECT_WAITS)
    # The httpx error stays the cause, as one line: no traceback, no httpcore chain.
    cause = err.__cause__
    assert isinstance(cause, httpx.ConnectError)
    assert cause.__traceback__ is None and cause.__cause__ is None and cause.__context__ is None
    shown = "".join(traceback.format_exception(err))
    assert "httpcore" not in shown and len(shown.splitlines()) < 25, shown
    pg.close()


def _failing(exc: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("no route", request=request)

    return handler


def test_a_remote_api_that_cannot_be_reached_names_the_network_not_the_sandbox() -> None:
    pg, _ = _client(
        "https://api.example.invalid", httpx.MockTransport(_failing(httpx.ConnectError))
    )
    with pytest.raises(pgcloud_nb.TransportError) as info:
        pg.list_services()
    text = str(info.value)
    assert "https://api.example.invalid" in text and "check the network" in text
    assert "sandbox" not in text


def test_connect_timeouts_stop_once_the_window_is_spent() -> None:
    """A connection that times out takes seconds per attempt: the window bounds them."""
    box: dict[str, Any] = {}

    def slow(request: httpx.Request) -> httpx.Response:
        box["now"][0] += CONNECT_WINDOW  # as if the connect timeout had passed
        raise httpx.ConnectTimeout("timed out", request=request)

    pg, (_, now) = _client("http://127.0.0.1:9", httpx.MockTransport(slow))
    box["now"] = now
    with pytest.raises(pgcloud_nb.TransportError, match="timed out"):
        pg.list_services()
    assert pg.requester.request_count == 2  # the first retry found the window spent


def test_a_url_that_is_not_http_is_not_retried() -> None:
    pg, (sleeps, _) = _client("ftp://127.0.0.1:21")
    with pytest.raises(pgcloud_nb.TransportError, match="not an http"):
        pg.list_services()
    assert pg.requester.request_count == 1 and sleeps == []


def test_other_transport_failures_keep_the_full_retry_policy() -> None:
    """A dropped answer may be transient (and may have been served): the policy decides."""
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 6:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(200, json={"status": 200, "requestId": "r", "result": []})

    pg, _ = _client("http://127.0.0.1:9", httpx.MockTransport(flaky))
    assert pg.list_services() == []
    assert len(calls) == 6
