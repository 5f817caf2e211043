"""Calls whose answer is lost after the server acted on them: nothing is done twice.

A small fake of the API keeps the services' state, acts on every request it gets,
and then, for the requests a test picks, loses the answer (the connection drops
after the server handled it, as the sandbox's ``drop`` fault does) or answers 500
without acting (as its injected 5xx do). The client cannot tell these apart, so
each test checks what the server ended up doing: one service made, one restart,
one promote, no second switchover, no IP access rule added or removed twice; and what
the client says when it cannot know (a restart under way that may be another client's).
The rules are in :mod:`pgcloud_nb.resend`'s docstring (docs/api-behaviour.md §2.3).
"""

from __future__ import annotations

import json
import logging
import pickle
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pgcloud_nb.client import Client
from pgcloud_nb.errors import (
    BadRequestError,
    ConflictError,
    PermissionDeniedError,
    ServerError,
    TransportError,
)
from pgcloud_nb.ratelimit import Budget, RetryPolicy

ORG = "11111111-1111-4111-8111-111111111111"
BASE = "https://api.test"
PG = f"/v1/organizations/{ORG}/postgres"
WAIT = 2.0  # every backoff, so that the fake clock is predictable
MAY_BE_DONE = "may have been carried out"


def envelope(status: int, result: Any = None, error: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"status": status, "requestId": f"req-{uuid.uuid4().hex[:8]}"}
    if error is not None:
        body["error"] = error
    elif result is not None:
        body["result"] = result
    return httpx.Response(status, json=body)


@dataclass(frozen=True)
class FixedWaits(RetryPolicy):
    """Backoff without jitter: each retry waits WAIT seconds."""

    def backoff(self, attempt: int, rng: Any = None) -> float:
        return WAIT


class FakeAPI:
    """The API's services and the state machine of docs/api-behaviour.md §5.2, in memory.

    ``lose[(method, kind)]`` lists which attempts (1-based, per method and kind of
    path) lose their answer: ``"drop"`` after acting on it, ``"500"`` before; ``"429"``
    refuses it before acting (the rate limit); ``"part"`` answers 500 after a PATCH's
    rule removals only (a change that partly succeeded). ``list_lag`` hides a new service from the
    list for that many seconds of the client's (fake) clock; ``restart_leaves`` is the
    state a restart puts the service in; ``strict_delete`` answers a DELETE of a service
    already ``deleting`` with a 409 instead of a 200.
    """

    def __init__(self, now: list[float], lose: dict[tuple[str, str], dict[int, str]]) -> None:
        self.now = now
        self.lose = lose
        self.services: dict[str, dict[str, Any]] = {}
        self.listed_from: dict[str, float] = {}
        self.list_lag = 0.0
        self.seen: Counter[tuple[str, str]] = Counter()
        self.done: Counter[str] = Counter()  # what the server carried out
        self.log: list[str] = []  # requests, and the client's sleeps, in order
        self.refuse_list = False
        self.restart_leaves = "restarting"
        self.strict_delete = False
        self.patches: list[dict[str, Any]] = []  # the PATCH bodies of services it acted on
        self.hidden = {"password"}  # fields a GET leaves out

    def add(self, name: str, **fields: Any) -> dict[str, Any]:
        svc = {
            "id": str(uuid.uuid4()),
            "name": name,
            "state": "running",
            "isPrimary": True,
            "createdAt": datetime.now(UTC).replace(microsecond=0).isoformat(),
            **fields,
        }
        self.services[svc["id"]] = svc
        self.listed_from[svc["id"]] = self.now[0] + self.list_lag
        return svc

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(PG)
        parts = [p for p in path.split("/") if p]
        kind = "/".join(["{id}", *parts[1:]]) if parts else "list"
        key = (request.method, kind)
        self.seen[key] += 1
        self.log.append(f"{request.method} {kind}")
        fault = self.lose.get(key, {}).get(self.seen[key])
        if fault == "500":
            return envelope(500, error="Internal server error")
        if fault == "429":
            return envelope(429, error="Rate limit exceeded")
        body = json.loads(request.content) if request.content else {}
        if fault == "part":
            removals = {"remove": body["ipAccessList"].get("remove", [])}
            self.act(request.method, parts, {"ipAccessList": removals})
            return envelope(500, error="Internal server error")
        response = self.act(request.method, parts, body)
        if fault == "drop":
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return response

    def act(self, method: str, parts: list[str], body: dict[str, Any]) -> httpx.Response:
        if not parts:
            if method == "GET":
                if self.refuse_list:
                    return envelope(403, error="FORBIDDEN: no view permission")
                now = self.now[0]
                shown = [s for s in self.services.values() if self.listed_from[s["id"]] <= now]
                return envelope(200, shown)
            self.done["create"] += 1
            made = self.add(body["name"], state="creating", password="Gener4tedPassword")
            return envelope(200, made)
        svc = self.services.get(parts[0])
        if svc is None or svc["state"] == "gone":
            return envelope(404, error="NOT_FOUND: no such service")
        tail = parts[1:]
        if method == "GET" and not tail:
            return envelope(200, {k: v for k, v in svc.items() if k not in self.hidden})
        if method == "DELETE":
            if svc["state"] == "deleting" and self.strict_delete:
                return envelope(409, error="CONFLICT: Service is deleting.")
            if svc["state"] not in ("running", "deleting"):
                return envelope(409, error=f"CONFLICT: Service is {svc['state']}.")
            self.done["delete"] += svc["state"] == "running"
            svc["state"] = "deleting"
            return envelope(200)
        if method == "PATCH" and not tail:
            return self.patch(svc, body)
        if tail == ["state"]:
            return self.command(svc, body["command"])
        if tail == ["password"]:
            self.done["password"] += 1
            return envelope(200, {"password": f"Gener4ted{self.done['password']}x"})
        if tail == ["config"]:
            self.done["config"] += 1
            return envelope(200, {"pgConfig": body["pgConfig"], "pgBouncerConfig": {}})
        # readReplica, restoredService: a new service beside the source
        self.done[tail[0]] += 1
        replica = tail == ["readReplica"]
        state = "creating" if replica else "restoring_backup"
        return envelope(200, self.add(body["name"], state=state, isPrimary=not replica))

    def patch(self, svc: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
        """A merge patch; its ``ipAccessList`` change all or nothing, removals first, a rule
        unknown or admitting what another does a 400 (docs/api-behaviour.md §12.2)."""
        rules = list(svc.get("ipAccessList", []))
        change = body.get("ipAccessList", {})
        for i, gone in enumerate(change.get("remove", [])):
            if not any(r["id"] == gone["id"] for r in rules):
                where = f"ipAccessList.remove[{i}].id"
                return envelope(400, error=f"BAD_REQUEST: {where}: the service has no rule")
            rules = [r for r in rules if r["id"] != gone["id"]]
        for i, new in enumerate(change.get("add", [])):
            rule = {"id": str(uuid.uuid4()), "description": "", "portRange": "5432..6432", **new}
            if any(
                (r["source"], r["portRange"]) == (rule["source"], rule["portRange"]) for r in rules
            ):
                where = f"ipAccessList.add[{i}]"
                return envelope(400, error=f"BAD_REQUEST: {where}: admits the same as a rule")
            rules.append(rule)
        self.done["patch"] += 1
        self.patches.append(body)
        svc.update({k: v for k, v in body.items() if k != "ipAccessList"})
        if change:
            svc["ipAccessList"] = rules
        return envelope(200, svc)

    def command(self, svc: dict[str, Any], command: str) -> httpx.Response:
        if command == "promote":
            if svc["isPrimary"]:  # the sandbox's wording (docs/api-behaviour.md §5.5)
                return envelope(
                    400,
                    error="BAD_REQUEST: only a read replica can be promoted; "
                    "this service is a primary",
                )
            svc["isPrimary"] = True
        elif svc["state"] != "running":  # docs/api-behaviour.md §5.4
            return envelope(
                409, error=f"CONFLICT: Service is {svc['state']}; a {command} needs it running."
            )
        if command == "restart":
            svc["state"] = self.restart_leaves
        self.done[command] += 1
        return envelope(200, svc)


def make(
    lose: dict[tuple[str, str], dict[int, str]] | None = None, retry: RetryPolicy | None = None
) -> tuple[Client, FakeAPI]:
    now = [0.0]
    api = FakeAPI(now, lose or {})

    def sleep(seconds: float) -> None:
        api.log.append(f"sleep {seconds:g}")
        now[0] += seconds

    client = Client(
        key_id="key-id",
        key_secret="kS3cr3t-never-printed",
        org_id=ORG,
        base_url=BASE,
        budget=Budget(0, 10.0, clock=lambda: now[0]),
        transport=httpx.MockTransport(api),
        retry=retry or FixedWaits(deadline=60, max_attempts=4),
    )
    client.requester.sleep = sleep
    client.requester.clock = lambda: now[0]
    return client, api


DROP_FIRST = {1: "drop"}


# -- state commands ---------------------------------------------------------------------------


def test_a_resent_restart_meeting_restarting_is_the_first_one_succeeding() -> None:
    client, api = make({("PATCH", "{id}/state"): DROP_FIRST})
    sid = api.add("db")["id"]
    with pytest.warns(UserWarning, match="most likely this is its restart") as caught:
        svc = client.restart(sid)
    assert svc.state == "restarting" and api.done["restart"] == 1
    assert api.log == ["PATCH {id}/state", "sleep 2", "PATCH {id}/state", "GET {id}"]
    # It still says the restart may be another client's, begun before a change was written.
    assert "restart again once the service is running" in str(caught[0].message)
    assert caught[0].filename == __file__  # the warning points at the caller's line


def test_a_restart_taken_as_done_after_a_500_warns_it_may_be_another_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Our first attempt is answered 500 and does nothing; meanwhile another client's
    # restart starts (perhaps before our config change was written); the resend meets it.
    client, api = make({("PATCH", "{id}/state"): {1: "500"}})
    sid = api.add("db")["id"]
    sleep = client.requester.sleep

    def another_client_restarts(seconds: float) -> None:
        sleep(seconds)
        api.services[sid]["state"] = "restarting"

    client.requester.sleep = another_client_restarts
    with (
        caplog.at_level(logging.WARNING, logger="pgcloud_nb.http"),
        pytest.warns(UserWarning, match="more likely another client's restart") as caught,
    ):
        svc = client.restart(sid)
    assert svc.state == "restarting" and api.done["restart"] == 0  # ours never ran
    text = str(caught[0].message)
    assert "answered 500" in text and "cannot prove" in text and sid in text
    assert "restart again once the service is running" in text
    assert caught[0].filename == __file__
    assert [r.levelno for r in caplog.records if r.getMessage() == text] == [logging.WARNING]


def test_a_resent_delete_meeting_deleting_does_not_warn() -> None:
    # Whoever's delete it is, the service goes: nothing for the caller to do differently.
    client, api = make({("DELETE", "{id}"): DROP_FIRST})
    api.strict_delete = True
    sid = api.add("db")["id"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.delete_service(sid)
    assert api.done["delete"] == 1


def test_restarting_on_a_first_attempt_is_someone_elses_restart() -> None:
    client, api = make()
    sid = api.add("db", state="restarting")["id"]
    with pytest.raises(ConflictError, match="is restarting"):
        client.restart(sid)
    assert api.seen[("PATCH", "{id}/state")] == 1


def test_a_resent_restart_meeting_another_state_is_a_failure() -> None:
    client, api = make({("PATCH", "{id}/state"): DROP_FIRST})
    sid = api.add("db")["id"]
    api.restart_leaves = "unavailable"  # the served restart failed: not what a 409 must show
    with pytest.raises(ConflictError, match="is unavailable"):
        client.restart(sid)


def test_a_restart_whose_answer_came_as_500_is_sent_again() -> None:
    client, api = make({("PATCH", "{id}/state"): {1: "500"}})
    sid = api.add("db")["id"]
    assert client.restart(sid).state == "restarting"
    assert api.done["restart"] == 1 and api.seen[("PATCH", "{id}/state")] == 2


def test_a_lost_promote_is_read_back_not_sent_again() -> None:
    client, api = make({("PATCH", "{id}/state"): DROP_FIRST})
    sid = api.add("r1", isPrimary=False)["id"]
    assert client.promote(sid).is_primary is True
    assert api.done["promote"] == 1
    # read before (a replica), then after (a primary): that is the proof
    assert api.log == ["GET {id}", "PATCH {id}/state", "sleep 2", "GET {id}"]


def test_a_promote_that_did_not_land_is_sent_again() -> None:
    client, api = make({("PATCH", "{id}/state"): {1: "500"}})
    sid = api.add("r1", isPrimary=False)["id"]
    assert client.promote(sid).is_primary is True
    assert api.log == ["GET {id}", "PATCH {id}/state", "sleep 2", "GET {id}", "PATCH {id}/state"]


@pytest.mark.parametrize("first", ["500", "drop"])
def test_a_resent_promote_of_a_primary_gets_the_apis_answer(first: str) -> None:
    # Already a primary: a read after the failure would show isPrimary true, which proves
    # nothing. The promote is sent again unread, and the API's 400 is the answer.
    client, api = make({("PATCH", "{id}/state"): {1: first}})
    sid = api.add("db")["id"]
    with pytest.raises(BadRequestError, match="only a read replica can be promoted") as info:
        client.promote(sid)
    assert api.done["promote"] == 0
    assert api.log == ["GET {id}", "PATCH {id}/state", "sleep 2", "PATCH {id}/state"]
    assert not getattr(info.value, "__notes__", [])  # nothing can have been carried out


def test_a_promote_whose_service_shows_no_role_is_not_read_back() -> None:
    # An API whose GET leaves isPrimary out: no read can prove the promote landed.
    client, api = make({("PATCH", "{id}/state"): {1: "500", 2: "500", 3: "500", 4: "500"}})
    api.hidden.add("isPrimary")
    sid = api.add("r1", isPrimary=False)["id"]
    with pytest.raises(ServerError) as info:
        client.promote(sid)
    assert api.log.count("GET {id}") == 1 and api.seen[("PATCH", "{id}/state")] == 4
    assert any(MAY_BE_DONE in note for note in info.value.__notes__)


@pytest.mark.parametrize(("first", "error"), [("drop", TransportError), ("500", ServerError)])
def test_a_switchover_that_may_have_landed_is_never_sent_twice(
    first: str, error: type[Exception]
) -> None:
    client, api = make({("PATCH", "{id}/state"): {1: first}})
    sid = api.add("db")["id"]
    with pytest.raises(error) as info:
        client.switchover(sid)
    assert api.seen[("PATCH", "{id}/state")] == 1
    assert api.done["switchover"] == (1 if first == "drop" else 0)  # the client cannot tell
    assert any(MAY_BE_DONE in note for note in info.value.__notes__)
    # the note survives pickling, as the errors do
    assert pickle.loads(pickle.dumps(info.value)).__notes__ == info.value.__notes__


def test_a_switchover_refused_by_the_rate_limit_is_sent_again() -> None:
    client, api = make({("PATCH", "{id}/state"): {1: "429"}})
    sid = api.add("db")["id"]
    client.switchover(sid)
    assert api.done["switchover"] == 1 and api.seen[("PATCH", "{id}/state")] == 2


# -- delete, password, config -----------------------------------------------------------------


@pytest.mark.parametrize("first", ["drop", "500"])
def test_a_resent_delete_finds_the_service_deleting(first: str) -> None:
    client, api = make({("DELETE", "{id}"): {1: first}})
    sid = api.add("db")["id"]
    client.delete_service(sid)
    assert api.done["delete"] == 1 and api.services[sid]["state"] == "deleting"


def test_a_resent_delete_meeting_409_deleting_is_done() -> None:
    # An API refusing a DELETE while one is in progress (docs/api-behaviour.md §4.9)
    client, api = make({("DELETE", "{id}"): DROP_FIRST})
    api.strict_delete = True
    sid = api.add("db")["id"]
    client.delete_service(sid)
    assert api.done["delete"] == 1


def test_a_lost_generated_password_is_replaced_by_the_one_that_arrives() -> None:
    client, api = make({("PATCH", "{id}/password"): DROP_FIRST})
    sid = api.add("db")["id"]
    result = client.reset_password(sid)
    # Two were generated; the one known is the second, which is the one in force.
    assert api.done["password"] == 2 and result.reveal_password() == "Gener4ted2x"
    assert client._known[sid].password.get_secret_value() == "Gener4ted2x"


def test_a_lost_config_write_is_sent_again_as_it_is() -> None:
    client, api = make({("POST", "{id}/config"): DROP_FIRST})
    sid = api.add("db")["id"]
    client.replace_config(
        sid, pg_config={"max_connections": "42"}, pg_bouncer_config={}, allow_empty=True
    )
    assert api.done["config"] == 2  # the same whole config, written twice


# -- creates: service, read replica, restore ---------------------------------------------------


def create(client: Client) -> Any:
    return client.create_service(name="dup", region="us-east-1", size="r8gd.large")


def test_a_lost_create_is_looked_for_after_the_wait_before_any_resend() -> None:
    client, api = make({("POST", "list"): DROP_FIRST})
    api.list_lag = 1.5  # the new service shows in the list only after a while
    with pytest.warns(UserWarning, match="was lost") as caught:
        svc = create(client)
    assert api.done["create"] == 1 and svc.name == "dup"
    assert api.log == ["POST list", "sleep 2", "GET list", "GET {id}"]
    assert caught[0].filename == __file__  # the warning points at the caller's line


def test_a_429_after_a_lost_create_still_looks_before_resending() -> None:
    client, api = make({("POST", "list"): {1: "500", 2: "429"}})
    create(client)
    assert api.done["create"] == 1
    assert api.log == [
        "POST list",
        "sleep 2",
        "GET list",
        "POST list",  # the 429: not served
        "sleep 2",
        "GET list",  # an earlier attempt may still have landed
        "POST list",
    ]


def test_a_create_that_never_lands_gives_up_saying_it_may_have() -> None:
    client, api = make({("POST", "list"): {1: "500", 2: "500", 3: "500", 4: "500"}})
    with pytest.raises(ServerError) as info:
        create(client)
    assert api.done["create"] == 0
    assert api.log.count("POST list") == 4 and api.log.count("GET list") == 4
    assert any(MAY_BE_DONE in note for note in info.value.__notes__)


def test_lookups_end_by_the_calls_deadline() -> None:
    # A create that never lands, against a list that fails three times in four: each
    # lookup retries only in the time the call has left, so the call ends at its deadline
    # (a lookup with a deadline of its own took the call to 30 s here, minutes by default).
    failing = {i: "500" for i in range(1, 40) if i % 4}
    lose = {("POST", "list"): {i: "500" for i in range(1, 40)}, ("GET", "list"): failing}
    client, api = make(lose, retry=FixedWaits(deadline=20, max_attempts=100))
    with pytest.raises(ServerError) as info:
        create(client)
    assert api.now[0] == 20 and api.done["create"] == 0
    assert api.log.count("POST list") == 3 and api.log.count("GET list") == 10
    notes = "\n".join(info.value.__notes__)
    assert "Looking for what it did failed too" in notes and MAY_BE_DONE in notes


def test_the_last_lookup_is_one_attempt() -> None:
    # The call gives up on its attempts with time left; the lookup then is one GET.
    lose = {("POST", "list"): {1: "500", 2: "500"}, ("GET", "list"): {2: "500", 3: "500"}}
    client, api = make(lose, retry=FixedWaits(deadline=60, max_attempts=2))
    with pytest.raises(ServerError) as info:
        create(client)
    assert api.log == ["POST list", "sleep 2", "GET list", "POST list", "GET list"]
    assert "Looking for what it did failed too" in "\n".join(info.value.__notes__)


def test_a_failed_lookup_raises_the_lost_create_never_resends_it() -> None:
    client, api = make({("POST", "list"): DROP_FIRST})
    api.refuse_list = True
    with pytest.raises(TransportError) as info:
        create(client)
    assert api.seen[("POST", "list")] == 1 and api.done["create"] == 1
    assert isinstance(info.value.__cause__, PermissionDeniedError)
    notes = "\n".join(info.value.__notes__)
    assert "Looking for what it did failed too" in notes and MAY_BE_DONE in notes


def test_an_older_or_deleting_service_of_the_same_name_is_not_taken() -> None:
    client, api = make({("POST", "list"): {1: "500"}})
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    api.add("dup", createdAt=old)
    api.add("dup", state="deleting")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing "found"
        svc = create(client)
    assert api.done["create"] == 1 and svc.state == "creating"


def test_two_services_made_under_the_name_are_both_named() -> None:
    client, api = make({("POST", "list"): DROP_FIRST})
    # made just now, by a lost attempt or by another user
    made = (datetime.now(UTC) - timedelta(seconds=30)).replace(microsecond=0)
    other = api.add("dup", state="creating", createdAt=made.isoformat())
    with pytest.warns(UserWarning, match=f"Also made under that name meanwhile: {other['id']}"):
        svc = create(client)
    assert svc.id != other["id"] and api.done["create"] == 1


@pytest.mark.parametrize("first", ["drop", "500"])
def test_read_replica_and_restore_are_made_once(first: str) -> None:
    lose = {("POST", "{id}/readReplica"): {1: first}, ("POST", "{id}/restoredService"): {1: first}}
    client, api = make(lose)
    sid = api.add("src")["id"]
    api.add("r1", state="running")  # a primary of that name made just now: not the replica
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replica = client.create_read_replica(sid, name="r1")
        restored = client.restore_service(sid, name="pitr", restore_target=timedelta(minutes=5))
    assert api.done["readReplica"] == 1 and api.done["restoredService"] == 1
    assert replica.is_primary is False and restored.state == "restoring_backup"
    assert len(caught) == (2 if first == "drop" else 0)


def test_a_first_attempt_400_on_promote_is_raised() -> None:
    client, api = make()
    sid = api.add("db")["id"]
    with pytest.raises(BadRequestError, match="is a primary"):
        client.promote(sid)


# -- PATCH of a service: its IP access rules ---------------------------------------------------

OLD = {"id": "rule-old", "source": "0.0.0.0/0", "description": "", "portRange": "5432"}
NEW = {"source": "10.0.0.0/8", "description": "office"}


def with_rules(lose: dict[int, str]) -> tuple[Client, FakeAPI, str]:
    client, api = make({("PATCH", "{id}"): lose})
    return client, api, api.add("db", ipAccessList=[OLD])["id"]


def sources(api: FakeAPI, sid: str) -> list[str]:
    return [r["source"] for r in api.services[sid]["ipAccessList"]]


def test_a_lost_rules_change_in_force_is_read_back_not_sent_again() -> None:
    client, api, sid = with_rules(DROP_FIRST)
    svc = client.update_service(sid, ip_access_remove=[OLD], ip_access_add=[NEW])
    assert api.done["patch"] == 1 and sources(api, sid) == ["10.0.0.0/8"]
    assert (svc.model_extra or {})["ipAccessList"] == api.services[sid]["ipAccessList"]
    assert api.log == ["PATCH {id}", "sleep 2", "GET {id}"]


def test_a_rules_change_not_in_force_is_sent_again_as_it_is() -> None:
    client, api, sid = with_rules({1: "500"})
    client.update_service(sid, ip_access_remove=[OLD], ip_access_add=[NEW])
    assert api.done["patch"] == 1 and sources(api, sid) == ["10.0.0.0/8"]
    assert api.log == ["PATCH {id}", "sleep 2", "GET {id}", "PATCH {id}"]


@pytest.mark.parametrize(("first", "sent"), [("drop", 1), ("500", 2)])
def test_a_rule_replaced_by_one_for_the_same_network_is_judged_by_both(
    first: str, sent: int
) -> None:
    # Only the description changes. The old rule admits the new one's network and ports,
    # but it is removed first: while it is there, the addition is not in force either.
    client, api, sid = with_rules({1: first})
    relabelled = {"source": "0.0.0.0/0", "portRange": "5432", "description": "everyone"}
    client.update_service(sid, ip_access_remove=[OLD], ip_access_add=[relabelled])
    assert api.done["patch"] == 1 and api.seen[("PATCH", "{id}")] == sent
    assert [r["description"] for r in api.services[sid]["ipAccessList"]] == ["everyone"]


def test_only_the_part_not_in_force_is_sent_again() -> None:
    client, api, sid = with_rules({1: "part"})  # the removal done, the addition not
    client.update_service(sid, name="renamed", ip_access_remove=[OLD], ip_access_add=[NEW])
    assert sources(api, sid) == ["10.0.0.0/8"] and api.services[sid]["name"] == "renamed"
    assert api.patches[-1] == {"name": "renamed", "ipAccessList": {"add": [NEW]}}
    assert api.log == ["PATCH {id}", "sleep 2", "GET {id}", "PATCH {id}"]


def test_with_the_rules_in_force_the_other_fields_are_sent_again_alone() -> None:
    client, api, sid = with_rules(DROP_FIRST)
    svc = client.update_service(sid, name="renamed", ip_access_add=[NEW])
    assert api.patches == [
        {"name": "renamed", "ipAccessList": {"add": [NEW]}},
        {"name": "renamed"},  # a merge patch: the same effect again
    ]
    assert svc.name == "renamed" and sources(api, sid) == ["0.0.0.0/0", "10.0.0.0/8"]


def test_a_rules_change_that_never_lands_gives_up_saying_it_may_have() -> None:
    client, api, sid = with_rules({1: "500", 2: "500", 3: "500", 4: "500"})
    with pytest.raises(ServerError) as info:
        client.update_service(sid, ip_access_add=[NEW])
    assert api.done["patch"] == 0 and api.log.count("GET {id}") == 4
    assert any(MAY_BE_DONE in note for note in info.value.__notes__)


def test_rules_that_cannot_be_read_back_are_not_sent_again() -> None:
    client, api = make({("PATCH", "{id}"): DROP_FIRST})
    api.hidden.add("ipAccessList")  # an API whose GET does not show the rules
    sid = api.add("db")["id"]
    with pytest.raises(TransportError) as info:
        client.update_service(sid, ip_access_add=[NEW])
    assert api.seen[("PATCH", "{id}")] == 1 and api.done["patch"] == 1
    notes = "\n".join(info.value.__notes__)
    assert "cannot be told" in notes and MAY_BE_DONE in notes


def test_a_lost_merge_patch_without_rules_is_sent_again_unread() -> None:
    client, api, sid = with_rules(DROP_FIRST)
    client.update_service(sid, tags={"env": "prod"})
    assert api.log == ["PATCH {id}", "sleep 2", "PATCH {id}"] and api.done["patch"] == 2
