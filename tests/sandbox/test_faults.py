"""The rate limit and fault injection middleware, on a tiny Starlette app.

Status answers go through httpx's ASGITransport. A dropped connection only
exists on a real socket, so "drop" also runs on a real uvicorn.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgcloud_nb.sandbox.api.realism import (
    PROBE_HEADER,
    FaultMiddleware,
    FaultStats,
    RateLimiter,
    rate_limit_key,
)
from pgcloud_nb.sandbox.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tiny_app() -> tuple[Starlette, list[str]]:
    """An app whose POST leaves a trace, to see which requests reached a handler."""
    created: list[str] = []

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"status": 200, "requestId": "r", "result": "pong"})

    async def create(request: Request) -> JSONResponse:
        created.append((await request.json())["name"])
        return JSONResponse({"status": 200, "requestId": "r", "result": {"state": "creating"}})

    app = Starlette(routes=[Route("/ping", ping), Route("/create", create, methods=["POST"])])
    return app, created


def basic(key_id: str, secret: str = "secret") -> dict[str, str]:
    token = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def key_of(authorization: str) -> str | None:
    """The stand-in key check: keys A and B, each with the secret "secret"."""
    for key_id in ("A", "B"):
        if authorization == basic(key_id)["Authorization"]:
            return key_id
    return None


def wrap(settings: Settings, clock: FakeClock | None = None) -> tuple[FaultMiddleware, list[str]]:
    app, created = tiny_app()
    mw = FaultMiddleware(app, settings, FaultStats(), clock=clock or FakeClock(), key_of=key_of)
    return mw, created


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(mw: FaultMiddleware) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://sandbox")
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


# --- the limiter on its own -------------------------------------------------------------


def test_sliding_window_exact() -> None:
    clock = FakeClock()
    rl = RateLimiter(3, 10.0, clock)
    for _ in range(3):  # at +0, +2, +4
        assert rl.acquire("k") == 0.0
        clock.now += 2
    assert rl.acquire("k") == pytest.approx(4.0)  # at +6; the first leaves the window at +10
    clock.now += 4
    assert rl.acquire("k") == 0.0  # one slot freed, not all three
    assert rl.acquire("k") == pytest.approx(2.0)


def test_rejections_use_no_budget() -> None:
    clock = FakeClock()
    rl = RateLimiter(1, 10.0, clock)
    assert rl.acquire("k") == 0.0
    for _ in range(50):
        clock.now += 0.1
        assert rl.acquire("k") > 0
    clock.now = 1010.0  # exactly one window after the only accepted request
    assert rl.acquire("k") == 0.0


def test_off_means_unlimited() -> None:
    rl = RateLimiter(0, 0.0)
    assert all(rl.acquire("k") == 0.0 for _ in range(1000))


def test_idle_keys_are_forgotten() -> None:
    clock = FakeClock()
    rl = RateLimiter(1, 10.0, clock)
    for i in range(1100):
        rl.acquire(f"ip:{i}")
    clock.now += 11
    rl.acquire("fresh")
    assert len(rl._log) < 10


def test_only_a_proven_key_has_a_budget_of_its_own() -> None:
    def scope(headers: dict[str, str]) -> dict[str, Any]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return {"headers": raw, "client": ("10.1.2.3", 5555)}

    assert rate_limit_key(scope(basic("A")), key_of) == "key:A"
    # The key ID is no secret: a wrong secret, or a made-up key ID, is the caller's address.
    assert rate_limit_key(scope(basic("A", "other")), key_of) == "ip:10.1.2.3"
    assert rate_limit_key(scope(basic(str(uuid.uuid4()))), key_of) == "ip:10.1.2.3"
    assert rate_limit_key(scope({}), key_of) == "ip:10.1.2.3"
    assert rate_limit_key(scope({"Authorization": "Basic !!!"}), key_of) == "ip:10.1.2.3"
    assert rate_limit_key(scope({"Authorization": "Bearer abc"}), key_of) == "ip:10.1.2.3"
    no_colon = base64.b64encode(b"nocolon").decode()
    assert rate_limit_key(scope({"Authorization": f"Basic {no_colon}"}), key_of) == "ip:10.1.2.3"
    assert rate_limit_key(scope(basic("A")), None) == "ip:10.1.2.3"  # no key check: no keys


# --- the middleware over ASGI ------------------------------------------------------------


async def test_default_limit_is_10_per_10s_per_key(client_for: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    mw, _ = wrap(Settings(home=tmp_path), clock)
    c = client_for(mw)
    codes = [(await c.get("/ping", headers=basic("A"))).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]
    # Another key has its own budget.
    assert (await c.get("/ping", headers=basic("B"))).status_code == 200

    clock.now += 3
    r = await c.get("/ping", headers=basic("A"))
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-ratelimit-reset"] == "7"
    body = r.json()
    assert set(body) == {"status", "error", "requestId"}
    assert body["status"] == 429
    assert "10 requests per 10 s" in body["error"]
    assert uuid.UUID(body["requestId"]).version == 4

    clock.now += 7
    assert (await c.get("/ping", headers=basic("A"))).status_code == 200
    assert mw.stats.limited == 2
    assert mw.stats.answered == 12


async def test_unauthenticated_counted_per_ip(client_for: Any, tmp_path: Path) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=2, rate_window=5))
    c = client_for(mw)
    codes = [(await c.get("/ping")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert (await c.get("/ping", headers=basic("A"))).status_code == 200


async def test_probes_with_the_key_bypass_limit_and_faults(client_for: Any, tmp_path: Path) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=1, faults={"503": 1.0}))
    c = client_for(mw)
    for _ in range(5):
        assert (await c.get("/ping", headers={PROBE_HEADER: "1", **basic("A")})).status_code == 200
    assert mw.stats.probes == 5
    assert (await c.get("/ping", headers=basic("A"))).status_code == 503  # the budget is whole


async def test_probe_header_without_the_key_is_no_pass(client_for: Any, tmp_path: Path) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=2, rate_window=5))
    c = client_for(mw)
    for headers in ({PROBE_HEADER: "1"}, {PROBE_HEADER: "1", **basic("A", "wrong")}):
        codes = [(await c.get("/ping", headers=headers)).status_code for _ in range(3)]
        assert codes[-1] == 429, codes
    assert mw.stats.probes == 0 and mw.stats.limited >= 2


async def test_wrong_secrets_and_made_up_keys_spend_the_address_budget(
    client_for: Any, tmp_path: Path
) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=10, rate_window=10))
    c = client_for(mw)
    wrong = [(await c.get("/ping", headers=basic("A", "guess"))).status_code for _ in range(10)]
    assert wrong == [200] * 10  # the stand-in app answers; the real one says 401
    # The real key still has its whole budget...
    assert [(await c.get("/ping", headers=basic("A"))).status_code for _ in range(10)] == [200] * 10
    # ...while the address that sent the guesses has none left, whatever key ID it makes up.
    for _ in range(5):
        r = await c.get("/ping", headers=basic(str(uuid.uuid4())))
        assert r.status_code == 429
    assert (await c.get("/ping")).status_code == 429


@pytest.mark.parametrize("kind", ["500", "503", "429"])
async def test_status_faults_answer_before_the_handler(
    client_for: Any, tmp_path: Path, kind: str
) -> None:
    mw, created = wrap(Settings(home=tmp_path, rate_limit=0, faults={kind: 1.0}))
    c = client_for(mw)
    r = await c.post("/create", json={"name": "x"})
    assert r.status_code == int(kind)
    body = r.json()
    assert body["status"] == int(kind) and body["error"] and body["requestId"]
    assert created == []  # no side effect
    assert ("retry-after" in r.headers) == (kind == "429")
    assert mw.stats.injected[kind] == 1
    assert mw.stats.answered == 0


async def test_shares_and_seed_are_reproducible(client_for: Any, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, rate_limit=0, faults={"500": 0.2, "503": 0.1}, seed=7)

    async def run() -> list[int]:
        mw, _ = wrap(settings)
        c = client_for(mw)
        return [(await c.get("/ping")).status_code for _ in range(400)]

    first, second = await run(), await run()
    assert first == second
    assert 50 <= first.count(500) <= 110
    assert 20 <= first.count(503) <= 65
    assert first.count(200) + first.count(500) + first.count(503) == 400


async def test_faulted_requests_use_budget_limited_ones_do_not(
    client_for: Any, tmp_path: Path
) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=2, faults={"500": 1.0}))
    c = client_for(mw)
    codes = [(await c.get("/ping", headers=basic("A"))).status_code for _ in range(4)]
    # Requests that reached the server count, as at a real gateway; 429s never do.
    assert codes == [500, 500, 429, 429]
    assert mw.stats.injected["500"] == 2 and mw.stats.limited == 2


async def test_latency_is_added(client_for: Any, tmp_path: Path) -> None:
    mw, _ = wrap(Settings(home=tmp_path, rate_limit=0, latency=0.2))
    c = client_for(mw)
    t0 = time.monotonic()
    assert (await c.get("/ping")).status_code == 200
    assert time.monotonic() - t0 >= 0.2


async def test_drop_sends_headers_only(tmp_path: Path) -> None:
    mw, created = wrap(Settings(home=tmp_path, rate_limit=0, faults={"drop": 1.0}))
    sent: list[dict[str, Any]] = []
    body = b'{"name": "svc"}'

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/create", "raw_path": b"/create", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("sandbox", 80),
    }  # fmt: skip
    await mw(scope, receive, send)
    assert created == ["svc"]  # the handler ran
    assert [m["type"] for m in sent] == ["http.response.start"]
    length = dict(sent[0]["headers"])[b"content-length"]
    assert int(length) > 0
    assert mw.stats.injected["drop"] == 1


# --- a dropped connection on a real server -------------------------------------------------


@pytest.fixture
def real_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    app, created = tiny_app()
    settings = Settings(home=tmp_path, rate_limit=0, faults={"drop": 0.5}, seed=3)
    mw = FaultMiddleware(app, settings, key_of=key_of)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(mw, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", created
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_drop_on_a_real_server(real_server: tuple[str, list[str]]) -> None:
    url, created = real_server
    outcomes: list[str] = []
    with httpx.Client(base_url=url, timeout=5) as c:
        for i in range(20):
            try:
                r = c.post("/create", json={"name": f"s{i}"})
                assert r.json()["result"]["state"] == "creating"
                outcomes.append("ok")
            except httpx.RemoteProtocolError:
                outcomes.append("dropped")
    assert "ok" in outcomes and "dropped" in outcomes
    # Dropped or not, every create reached its handler: a blind resend would duplicate it.
    assert created == [f"s{i}" for i in range(20)]


async def test_counters_are_published_on_app_state(tmp_path: Path) -> None:
    created: list[str] = []

    async def create(request: Request) -> JSONResponse:
        created.append("x")
        return JSONResponse({"status": 200, "requestId": "r", "result": {}})

    settings = Settings(home=tmp_path, rate_limit=1, faults={"500": 0.5}, seed=1)
    app = Starlette(
        routes=[Route("/create", create, methods=["POST"])],
        middleware=[Middleware(FaultMiddleware, settings=settings)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as c:
        codes = [(await c.post("/create")).status_code for _ in range(3)]
    stats: FaultStats = app.state.fault_stats
    assert codes.count(429) == 2 and stats.limited == 2
    assert stats.answered + stats.injected["500"] == 1 == len(codes) - 2
    assert stats.as_dict()["injected"] == {"500": stats.injected["500"], "503": 0, "429": 0,
                                           "drop": 0}  # fmt: skip
