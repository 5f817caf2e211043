"""No answer the spec allows can crash the client or a frame.

Every Managed Postgres operation of the embedded specs (the 17 of the API file
and the 2 Postgres Prometheus endpoints), and the backups list of the live
contract (its answer written from docs/api-behaviour.md), is driven through its client method
against :class:`fixtures.genserver.GenServer`, which answers each request with a
body generated from the spec's response schema: valid bodies first, then
"drift" bodies (unknown enum values, nulls, numbers as text, …), then each
result goes through every frame built on it, and the raw JSON result through
the same frames as a user holding plain dicts would pass it. The only
exceptions allowed are the client's own (the ``pgcloud_nb.errors`` tree). A
fixed seed keeps the run the same on every machine.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
from fixtures.genserver import BACKUPS, GenServer

from pgcloud_nb import contract
from pgcloud_nb.client import Client
from pgcloud_nb.errors import PgCloudError
from pgcloud_nb.frames import (
    backups_frame,
    config_frame,
    executions_frame,
    logs_frame,
    metrics_frame,
    services_frame,
    slow_queries_frame,
)
from pgcloud_nb.history import History
from pgcloud_nb.metrics import concat_scrapes, derived, fleet_snapshot, key_metrics
from pgcloud_nb.prometheus import parse_prometheus
from pgcloud_nb.ratelimit import Budget, RetryPolicy

SEED = 20260525
VALID, DRIFT = 100, 50  # bodies per operation of each kind
ORG = "11111111-1111-4111-8111-111111111111"
SID = "22222222-2222-4222-8222-222222222222"
T0 = pd.Timestamp("2026-05-25T12:00:00Z")
SINCE = datetime(2026, 5, 25, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=1)


def _show(model: Any) -> None:
    # What a notebook does with a result: repr and the HTML view.
    repr(model)
    getattr(model, "_repr_html_", lambda: "")()


def _services(services: list[Any]) -> None:
    for s in services:
        _show(s)
    services_frame(services)


class Scrapes:
    """The scrapes one Prometheus operation answered, analysed ``BATCH`` at a time.

    Every answer is parsed; every ``BATCH`` parsed scrapes (a minute apart) go
    together through the analytics (rates, derived series, key metrics, a
    History): what a live chart does with successive scrapes, and a tenth of the
    pandas calls that one analysis per answer would cost.
    """

    BATCH = 10

    def __init__(self) -> None:
        self.batch: list[pd.DataFrame] = []

    def add(self, text: str) -> None:
        stamp = T0 + pd.Timedelta(minutes=len(self.batch))
        self.batch.append(parse_prometheus(text, timestamp=stamp))
        if len(self.batch) == self.BATCH:
            scrapes, self.batch = self.batch, []
            frame = concat_scrapes(scrapes)
            derived(frame)  # rates() inside
            key_metrics(frame)
            history = History()
            for scrape in scrapes:
                history.add(scrape)
            history.frame()
            history.rates()
            history.derived()
            repr(history)


def _pattern_detail(c: Client) -> None:
    detail = c.slow_query_pattern(SID, "-47", db_name="d", db_user="u", db_operation="SELECT")
    _show(detail)
    executions_frame(detail)
    slow_queries_frame([detail.aggregate] if detail.aggregate else [])


def drivers() -> dict[str, Callable[[Client], None]]:
    """operationId -> what a user does with the operation's client method and its frames."""
    org, one = Scrapes(), Scrapes()
    fleet = History()
    fleets = [0]

    def org_prometheus(c: Client) -> None:
        org.add(c.prometheus())
        fleets[0] += 1
        if fleets[0] % Scrapes.BATCH == 0:  # the list and the org scrape, with a history
            fleet_snapshot(c, history=fleet)

    return {
        "postgresServiceCreate": lambda c: _services(
            [c.create_service(name="gen", region="us-east-1", size="r8gd.large")]
        ),
        "postgresServiceGetList": lambda c: _services(c.list_services()),
        "postgresServiceGet": lambda c: _services([c.get_service(SID)]),
        "postgresServiceDelete": lambda c: c.delete_service(SID),
        "postgresServicePatch": lambda c: _services([c.update_service(SID, name="renamed")]),
        "postgresServiceCertsGet": lambda c: c.ca_certificate(SID).splitlines(),
        "postgresInstanceRestore": lambda c: _services(
            [c.restore_service(SID, name="back", restore_target=SINCE)]
        ),
        "postgresServiceSetPassword": lambda c: _show(c.reset_password(SID)),
        "postgresServicePatchState": lambda c: _services([c.restart(SID)]),
        "postgresInstanceCreateReadReplica": lambda c: _services(
            [c.create_read_replica(SID, name="replica")]
        ),
        "postgresInstanceConfigGet": lambda c: config_frame(c.get_config(SID)),
        "postgresInstanceConfigPost": lambda c: config_frame(
            c.replace_config(SID, pg_config={"work_mem": "8MB"}, pg_bouncer_config={"a": "1"})
        ),
        "postgresInstanceConfigPatch": lambda c: config_frame(
            c.patch_config(SID, pg_config={"max_connections": 50}), defaults=False
        ),
        "postgresInstanceMetricsGet": lambda c: metrics_frame(
            c.metrics(SID, from_date=SINCE, to_date=UNTIL)
        ),
        "slowQueryPatternsGetList": lambda c: slow_queries_frame(
            c.slow_query_patterns(SID, from_date=SINCE, to_date=UNTIL)
        ),
        "slowQueryPatternGet": _pattern_detail,
        "postgresLogsGetList": lambda c: logs_frame(
            c.logs(SID, from_date=SINCE, to_date=UNTIL, page_size=3)
        ),
        "postgresOrgPrometheusGet": org_prometheus,
        "postgresInstancePrometheusGet": lambda c: one.add(c.prometheus(SID)),
        BACKUPS.operation_id: lambda c: backups_frame(c.list_backups(SID, limit=3)),
    }


def _as_list(result: Any) -> list[Any]:
    return result if isinstance(result, list) else []


def _as_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else {}


# operationId -> the frames a user holding the plain JSON result would build
RAW_FRAMES: dict[str, Callable[[Any], Any]] = {
    "postgresServiceGetList": lambda r: services_frame(_as_list(r)),
    "postgresInstanceConfigGet": lambda r: config_frame(_as_dict(r)),
    "postgresInstanceConfigPost": lambda r: config_frame(_as_dict(r), defaults=False),
    "postgresInstanceConfigPatch": lambda r: config_frame(_as_dict(r)),
    "postgresInstanceMetricsGet": lambda r: metrics_frame(_as_dict(r)),
    "slowQueryPatternsGetList": lambda r: slow_queries_frame(_as_list(r)),
    "slowQueryPatternGet": lambda r: executions_frame(_as_dict(r)),
    "postgresLogsGetList": lambda r: logs_frame(_as_list(r)),
    BACKUPS.operation_id: lambda r: backups_frame(_as_list(r)),
    # the other operations that answer a PostgresService have the same schema: one stands for all
    "postgresServiceGet": lambda r: services_frame([r] if isinstance(r, dict) else []),
}


def _client(server: GenServer) -> Client:
    client = Client(
        key_id="key-id",
        key_secret="generated-key-secret",
        org_id=ORG,
        base_url="https://api.test",
        budget=Budget.unlimited(),
        transport=httpx.MockTransport(server.handler),
        retry=RetryPolicy(deadline=600, max_attempts=2),
    )
    client.requester.sleep = lambda seconds: None  # backoff without waiting
    return client


def test_every_postgres_operation_is_driven() -> None:
    postgres_ops = {
        op.operation_id
        for op in contract.operations()
        if op.path.startswith("/v1/organizations/{organizationId}/postgres")
    }
    assert set(drivers()) == postgres_ops | {BACKUPS.operation_id}
    assert len(postgres_ops) == 19


def test_generated_answers_never_crash_the_client_or_a_frame(figures: dict[str, str]) -> None:
    server = GenServer(SEED)
    client = _client(server)
    driven = drivers()
    crashes: list[str] = []
    outcome: Counter[tuple[str, str]] = Counter()
    with warnings.catch_warnings():
        # a lost create found by name warns (provisioning); that is the client working
        warnings.filterwarnings("ignore", message="the answer to creating")
        for op_id, drive in driven.items():
            for i in range(VALID + DRIFT):
                server.drift = i >= VALID
                server.last.pop(op_id, None)
                try:
                    drive(client)
                    outcome[op_id, "ok"] += 1
                except PgCloudError:
                    outcome[op_id, "typed error"] += 1
                except Exception as exc:  # the finding this test exists for
                    crashes.append(f"{op_id} #{i}: {type(exc).__name__}: {exc}"[:300])
                raw = server.last.get(op_id, {}).get("result")
                if op_id in RAW_FRAMES and raw is not None:
                    try:
                        RAW_FRAMES[op_id](raw)
                    except Exception as exc:
                        crashes.append(f"{op_id} #{i} raw: {type(exc).__name__}: {exc}"[:300])
    per_op = min(server.served[op] for op in driven)
    figures["generated response bodies per operation"] = (
        f"{per_op} over {len(driven)} operations, client or frame crashes: {len(crashes)}"
    )
    assert not server.wrong_accept, server.wrong_accept[:5]
    assert not crashes, "\n".join(crashes[:20])
    # not vacuous: every operation got through to its frames often, not only to typed errors
    thin = {op: outcome[op, "ok"] for op in driven if outcome[op, "ok"] < (VALID + DRIFT) // 4}
    assert not thin, thin
