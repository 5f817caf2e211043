"""Models: camelCase aliases, tolerance for new fields and values, masked secrets."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, SecretStr

from pgcloud_nb import models
from pgcloud_nb.models import (
    HaType,
    PostgresBackup,
    PostgresInstanceConfig,
    PostgresInstanceUpdateConfigResponse,
    PostgresLogEntry,
    PostgresMetricDataPoint,
    PostgresMetrics,
    PostgresService,
    PostgresServiceListItem,
    PostgresServicePasswordResource,
    PostgresSlowQueryPattern,
    PostgresSlowQueryPatternDetail,
    ServiceState,
    Tag,
    tags_payload,
)

PASSWORD = "Xq7ZpR2mLk9sWv4T"
CONN = f"postgres://postgres:{PASSWORD}@my-pg.example:5432/postgres?channel_binding=require"

CREATE_ANSWER = {
    "id": "67b4f0d5-0000-4000-8000-000000000001",
    "name": "my postgres",
    "provider": "aws",
    "region": "us-west-2",
    "postgresVersion": "18",
    "size": "r8gd.large",
    "storageSize": 118,
    "haType": "none",
    "tags": [],
    "connectionString": CONN,
    "username": "postgres",
    "password": PASSWORD,
    "hostname": "my-pg.example",
    "isPrimary": True,
    "state": "creating",
}

PATTERN = {
    "queryId": "-4748036479882663975",
    "queryText": "SELECT $1",
    "dbName": "postgres",
    "dbUser": "postgres",
    "dbOperation": "SELECT",
    "app": "psql",
    "callCount": 3,
    "errorCount": 0,
    "totalDurationUs": 30,
    "avgDurationUs": 10,
    "maxDurationUs": 12,
    "p50DurationUs": 10,
    "p95DurationUs": 12,
    "p99DurationUs": 12,
    "totalRows": 3,
    "totalSharedBlksRead": 0,
    "totalSharedBlksHit": 4,
    "totalCpuTimeUs": 25,
    "totalWalBytes": 0,
}
EXECUTION_COUNTERS = [
    "durationUs",
    "rows",
    "sharedBlksHit",
    "sharedBlksRead",
    "sharedBlksWritten",
    "sharedBlksDirtied",
    "sharedBlkReadTimeUs",
    "sharedBlkWriteTimeUs",
    "localBlksHit",
    "localBlksRead",
    "localBlksWritten",
    "localBlksDirtied",
    "tempBlksRead",
    "tempBlksWritten",
    "tempBlkReadTimeUs",
    "tempBlkWriteTimeUs",
    "walRecords",
    "walBytes",
    "walFpi",
    "cpuUserTimeUs",
    "cpuSysTimeUs",
    "jitFunctions",
    "jitGenerationTimeUs",
    "jitInliningTimeUs",
    "jitOptimizationTimeUs",
    "jitEmissionTimeUs",
    "jitDeformTimeUs",
    "parallelWorkersPlanned",
    "parallelWorkersLaunched",
]
EXECUTION = {
    "timestamp": "2026-05-25T16:42:16.123Z",
    "queryId": "-1",
    "dbName": "postgres",
    "dbUser": "postgres",
    "dbOperation": "SELECT",
    "app": "psql",
    "queryText": "SELECT 1",
    "pid": "4242",
    "serverRole": "primary",
    **dict.fromkeys(EXECUTION_COUNTERS, 1),
}


def test_aliases_and_snake_case() -> None:
    svc = PostgresService.model_validate(CREATE_ANSWER)
    assert svc.postgres_version == "18" and svc.storage_size == 118 and svc.is_primary
    assert svc.ha_type is HaType.NONE and svc.state is ServiceState.CREATING
    wire = svc.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert wire["postgresVersion"] == "18" and wire["haType"] == "none"
    # populate_by_name: snake_case works on input too
    assert PostgresService(id="x", postgres_version="17").postgres_version == "17"


def test_unknown_fields_and_states_are_tolerated() -> None:
    svc = PostgresService.model_validate(
        {
            "id": "x",
            "state": "hibernating",
            "haType": "quorum",
            "provider": "azure",
            "size": "z9-huge-1024",
            "ipAccessList": {"add": []},
            "earliestRestoreTime": "2026",
        }
    )
    assert svc.state == "hibernating" and not svc.state.known
    assert ServiceState("running").known and not ServiceState("RUNNING").known
    assert svc.ha_type == "quorum" and svc.provider == "azure" and svc.size == "z9-huge-1024"
    assert svc.model_extra == {"ipAccessList": {"add": []}, "earliestRestoreTime": "2026"}
    assert json.loads(svc.model_dump_json())["state"] == "hibernating"


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-25T16:42:16+00:00",
        "2026-05-25T16:42:16Z",
        "2026-05-25T16:42:16.000Z",
        "2026-05-25T16:42:16",
    ],
)
def test_created_at_is_tz_aware(text: str) -> None:
    item = PostgresServiceListItem.model_validate({"id": "x", "createdAt": text})
    assert item.created_at == datetime(2026, 5, 25, 16, 42, 16, tzinfo=UTC)


def test_a_leap_second_is_the_last_microsecond_of_its_minute() -> None:
    entry = PostgresLogEntry.model_validate(
        {"timestamp": "2016-12-31T23:59:60.5Z", "severity": "LOG", "body": "x"}
    )
    assert entry.timestamp == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_integers_and_numbers_of_any_size() -> None:
    # JSON Schema: 1e20 is an integer, 10**400 a number; pydantic alone refuses both.
    point = PostgresMetricDataPoint.model_validate({"timestamp": 1e20, "value": 10**400})
    assert point.timestamp == 10**20 and point.value == float("inf")
    assert PostgresMetricDataPoint.model_validate(
        {"timestamp": 2**64, "value": -(10**400)}
    ).value == (float("-inf"))
    with pytest.raises(ValueError):
        PostgresMetricDataPoint.model_validate({"timestamp": 1.5, "value": 1})


def test_null_lists_read_as_empty() -> None:
    # Go marshals a nil slice as null
    assert PostgresService.model_validate({"id": "x", "tags": None}).tags == []
    metrics = PostgresMetrics.model_validate(
        {"metrics": [{"key": "k", "name": "n", "unit": "u", "series": None}]}
    )
    assert metrics.metrics[0].series == []
    assert (
        PostgresSlowQueryPatternDetail.model_validate({"recentExecutions": None}).recent_executions
        == []
    )


def test_config_sections_tolerate_null_and_missing() -> None:
    assert PostgresInstanceConfig.model_validate({"pgConfig": None}).pg_bouncer_config == {}
    resp = PostgresInstanceUpdateConfigResponse.model_validate(
        {
            "pgConfig": {"max_connections": "42"},
            "pgBouncerConfig": {},
            "message": "The changes require a database restart to take effect: max_connections.",
        }
    )
    assert resp.pg_config == {"max_connections": "42"} and resp.restart_required


def test_tags_payload_forms() -> None:
    assert tags_payload({"env": "prod"}) == [{"key": "env", "value": "prod"}]
    assert tags_payload([Tag(key="a", value="b"), {"key": "c"}]) == [
        {"key": "a", "value": "b"},
        {"key": "c"},
    ]
    assert tags_payload({}) == [] and tags_payload(None) is None
    svc = PostgresService.model_validate({"id": "x", "tags": [{"key": "a", "value": "b"}]})
    assert svc.tags_dict == {"a": "b"} and str(svc.tags[0]) == "a=b"


def test_observability_models() -> None:
    metrics = PostgresMetrics.model_validate(
        {
            "metrics": [
                {
                    "key": "cpu_usage",
                    "name": "CPU",
                    "unit": "%",
                    "description": "d",
                    "series": [{"label": "user", "dataPoints": [{"timestamp": 1, "value": 2.5}]}],
                }
            ]
        }
    )
    assert metrics.metrics[0].series[0].data_points[0].value == 2.5
    detail = PostgresSlowQueryPatternDetail.model_validate(
        {"aggregate": PATTERN, "recentExecutions": [EXECUTION]}
    )
    assert detail.aggregate is not None and detail.aggregate.query_id.startswith("-")
    ex = detail.recent_executions[0]
    assert ex.jit_deform_time_us == 1 and ex.shared_blk_read_time_us == 1 and ex.pid == "4242"
    assert PostgresSlowQueryPattern.model_validate(PATTERN).p99_duration_us == 12
    log = PostgresLogEntry.model_validate(
        {"timestamp": "2026-01-01T00:00:00Z", "severity": "LOG", "body": "{}"}
    )
    assert log.timestamp.tzinfo is not None


def _secret_bearing_models() -> list[BaseModel]:
    return [
        PostgresService.model_validate(CREATE_ANSWER),
        PostgresService.model_validate(
            {**CREATE_ANSWER, "superuserPassword": PASSWORD, "replicationConnectionString": CONN}
        ),
        PostgresServicePasswordResource.model_validate({"password": PASSWORD}),
    ]


def _every_model() -> list[BaseModel]:
    return [
        *_secret_bearing_models(),
        PostgresServiceListItem.model_validate({"id": "x", "state": "running"}),
        PostgresInstanceConfig.model_validate({"pgConfig": {}, "pgBouncerConfig": {}}),
        PostgresInstanceUpdateConfigResponse.model_validate({"pgConfig": {}, "message": "m"}),
        PostgresMetrics.model_validate({"metrics": []}),
        PostgresSlowQueryPattern.model_validate(PATTERN),
        PostgresSlowQueryPatternDetail.model_validate({"recentExecutions": [EXECUTION]}),
        PostgresLogEntry.model_validate(
            {"timestamp": "2026-01-01T00:00:00Z", "severity": "LOG", "body": "x"}
        ),
        Tag(key="a", value="b"),
        PostgresBackup.model_validate(
            {"key": "base/1", "status": "done", "lastModified": "2026-01-01T00:00:00Z"}
        ),
    ]


def test_every_model_class_is_covered() -> None:
    covered = {type(m) for m in _every_model()}
    declared = {getattr(models, n) for n in models.__all__}
    declared = {c for c in declared if isinstance(c, type) and issubclass(c, models.ApiModel)}
    assert declared - {models.ApiModel} <= covered | {
        models.PostgresMetric,
        models.PostgresMetricSeries,
        models.PostgresMetricDataPoint,
        models.PostgresQueryExecution,
    }


@pytest.mark.parametrize("model", _every_model(), ids=lambda m: type(m).__name__)
def test_no_secret_in_any_view(model: BaseModel, caplog: pytest.LogCaptureFixture) -> None:
    views = [
        repr(model),
        str(model),
        model.model_dump_json(),
        model.model_dump_json(by_alias=True),
        json.dumps(model.model_dump(mode="json")),
        f"{model}",
        f"{model!r}",
    ]
    html = getattr(model, "_repr_html_", None)
    if html:
        views.append(html())
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("pgcloud_nb.test").info("model: %s %r", model, model)
    views.append(caplog.text)
    for text in views:
        assert PASSWORD not in text
        assert "my-pg.example:5432" not in text  # the connection string is masked as a whole


def test_secrets_revealed_only_on_request() -> None:
    svc = PostgresService.model_validate(CREATE_ANSWER)
    assert isinstance(svc.password, SecretStr)
    assert svc.reveal_password() == PASSWORD
    assert svc.reveal_connection_string() == CONN
    assert svc.without_secrets().password is None
    extra = PostgresService.model_validate({"id": "x", "superuserPassword": PASSWORD})
    assert isinstance((extra.model_extra or {})["superuserPassword"], SecretStr)
