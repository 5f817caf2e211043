"""Every route of the sandbox, walked with a catalogue of hostile inputs.

The routes come from the app itself (:func:`create_app`'s route table), so a new
route is covered the day it is added; what each takes (its body schema, its query
parameters) comes from the embedded spec. Every input of the catalogue
(:mod:`hostile_catalogue`) is invalid for the route it is sent to, so the answer
must be a 4xx with the error envelope ``{status, error, requestId}`` (naming the
field or parameter where there is one), never a 5xx, never a redirect, and never a
hang (each request has a deadline). Nothing a hostile request carried may be
stored: the shared service's details and config are compared before and after,
and any service the run made is a failure (and deleted).

A second test probes every route × method × trailing-slash variant without
valid credentials: each must answer 401.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hostile_catalogue import AUTH_VARIANTS, BASE_BODIES, Case, Target, cases_for, targets
from test_api import org_client, result, running_service

from pgcloud_nb.sandbox import SandboxInfo
from pgcloud_nb.sandbox.api.app import create_app
from pgcloud_nb.sandbox.settings import Settings
from pgcloud_nb.spec import load, resolved, validate_body

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DEADLINE = 30.0  # seconds for one answer: past it the request counts as a hang
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SUFFIXES = ("", "/", "//")
UNKNOWN_PATHS = (
    "/",
    "/v1",
    "/v1/",
    "/docs",
    "/openapi.json",
    "/V1/ORGANIZATIONS",
    "/v1/organizations/x/y/z/w/v",
    "//v1/organizations",
    "/v1/organizations/%2e%2e/%2e%2e/etc/passwd",
)


@pytest.fixture(scope="module")
def app_targets(tmp_path_factory: pytest.TempPathFactory) -> list[Target]:
    """The app's own routes (it is built, never started), with what the spec says of each."""
    app = create_app(Settings(home=tmp_path_factory.mktemp("routes") / "home"))
    found = targets(app.routes, load())
    assert len({t.template for t in found}) >= 17, found  # every route of the table
    return found


@pytest.fixture(scope="module")
def shared(sandbox: SandboxInfo) -> Iterator[dict[str, Any]]:
    with running_service(sandbox, "hostile") as created:
        yield created


def problem(case: Case, resp: httpx.Response) -> str | None:
    """What is wrong with the answer to ``case``, or None."""
    status = resp.status_code
    if not 400 <= status < 500:
        return f"answered {status}: {resp.text[:200]}"
    if case.expect and status not in case.expect:
        return f"answered {status}, expected {sorted(case.expect)}: {resp.text[:200]}"
    if "location" in resp.headers:
        return f"redirects to {resp.headers['location']}"
    if case.method == "HEAD":
        return None
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {resp.headers.get('content-type')}"
    try:
        body = resp.json()
    except ValueError:
        return f"no JSON: {resp.text[:200]}"
    if set(body) != {"status", "error", "requestId"} or body["status"] != status:
        return f"not the error envelope: {body}"
    uuid.UUID(body["requestId"])
    if case.names and case.names not in body["error"]:
        return f"the error does not name {case.names!r}: {body['error'][:300]}"
    return None


def send(client: httpx.Client, case: Case) -> httpx.Response | str:
    try:
        return client.request(
            case.method,
            case.path,
            params=case.params,
            content=case.content() if case.content is not None else None,
            headers=case.headers,
            timeout=DEADLINE,
        )
    except httpx.TimeoutException:
        return f"no answer within {DEADLINE:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_every_route_refuses_every_hostile_input(
    sandbox: SandboxInfo,
    shared: dict[str, Any],
    app_targets: list[Target],
    figures: dict[str, str],
) -> None:
    ids = {"org_id": sandbox.org_id, "service_id": shared["id"], "query_id": "1"}
    with org_client(sandbox) as api:
        services_before = {s["id"] for s in result(api.get("/postgres"))}
        view_before = result(api.get(f"/postgres/{shared['id']}"))
        config_before = result(api.get(f"/postgres/{shared['id']}/config"))

    failures: list[str] = []
    tried = fives = 0
    per_route: Counter[str] = Counter()
    started = time.monotonic()
    auth = (sandbox.key_id, sandbox.key_secret)
    with httpx.Client(base_url=sandbox.url, auth=auth, trust_env=False) as client:
        for target in app_targets:
            for case in cases_for(target, ids, resolved):
                tried += 1
                per_route[f"{case.method} {target.template}"] += 1
                resp = send(client, case)
                if isinstance(resp, str):
                    failures.append(f"{case.describe()}: {resp}")
                    continue
                fives += resp.status_code >= 500
                if (why := problem(case, resp)) is not None:
                    failures.append(f"{case.describe()}: {why}")
    seconds = time.monotonic() - started

    with org_client(sandbox) as api:
        listed = api.get("/postgres")
        made = [s for s in listed.json().get("result", []) if s["id"] not in services_before]
        for svc in made:
            api.delete(f"/postgres/{svc['id']}")
        view_after = api.get(f"/postgres/{shared['id']}")
        config_after = api.get(f"/postgres/{shared['id']}/config")
    failures += [f"a hostile request made service {s['name']!r}" for s in made]
    for what, resp in (("list", listed), ("service", view_after), ("config", config_after)):
        if resp.status_code != 200:  # what was stored cannot even be shown
            failures.append(f"after the run, the shared {what} answers {resp.status_code}")
    if view_after.status_code == 200:
        for key in ("name", "tags", "size", "haType", "state"):
            if view_after.json()["result"].get(key) != view_before.get(key):
                failures.append(f"the shared service's {key} changed: {view_after.text[:300]}")
    if config_after.status_code == 200 and config_after.json()["result"] != config_before:
        failures.append(f"the shared service's config changed: {config_after.text[:300]}")

    routes = len({t.template + " " + m for t in app_targets for m in t.methods})
    figures["routes × hostile inputs tried"] = f"{tried} ({routes} routes), 5xx seen: {fives}"
    print(f"\n{tried} hostile requests over {routes} routes in {seconds:.0f} s")
    for name, count in sorted(per_route.items()):
        print(f"  {count:>4}  {name}")
    assert fives == 0 and not failures, "\n".join(failures[:40]) + f"\n({len(failures)} in all)"
    assert tried >= 20 * routes  # the catalogue really ran


def test_no_path_answers_without_the_key(
    sandbox: SandboxInfo, shared: dict[str, Any], app_targets: list[Target], figures: dict[str, str]
) -> None:
    ids = {"org_id": sandbox.org_id, "service_id": shared["id"], "query_id": "1"}
    paths = sorted({t.fill(ids) for t in app_targets}) + list(UNKNOWN_PATHS)
    probes: list[tuple[str, str, dict[str, str]]] = []
    for path in paths:
        for method in METHODS:
            for suffix in SUFFIXES:
                for label, headers in AUTH_VARIANTS[:3]:  # none, wrong secret, made-up key
                    probes.append((method, path + suffix, {**headers(sandbox), "x-label": label}))
        # Every odd Authorization header, on each path once.
        probes += [
            ("GET", path, {**headers(sandbox), "x-label": label})
            for label, headers in AUTH_VARIANTS
        ]
    wrong: list[str] = []
    with httpx.Client(base_url=sandbox.url, trust_env=False, timeout=DEADLINE) as client:
        for method, path, headers in probes:
            headers = {**headers, "host": "attacker.example"}  # never reflected anywhere
            body = b'{"name": "x"}' if method in ("POST", "PATCH", "PUT") else None
            resp = client.request(method, path, headers=headers, content=body)
            case = Case(method, path, expect=frozenset({401}), names="Unauthorized")
            why = problem(case, resp)
            if why is None and "basic" not in resp.headers.get("www-authenticate", "").lower():
                why = "no WWW-Authenticate challenge"
            if why is not None:
                wrong.append(f"{method} {path} [{headers['x-label']}]: {why}")
    figures["unauthenticated paths probed"] = f"{len(probes)}, non-401 answers: {len(wrong)}"
    assert not wrong, "\n".join(wrong[:40]) + f"\n({len(wrong)} in all)"


def test_the_base_bodies_are_valid() -> None:
    """The bodies the field mutations start from are valid: a 400 is the mutation's doing."""
    for name, body in BASE_BODIES.items():
        assert validate_body(name, json.loads(json.dumps(body))) == [], name
