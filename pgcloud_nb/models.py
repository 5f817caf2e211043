"""pydantic models named after the spec's ``components.schemas``.

Attributes are snake_case with the API's camelCase as aliases (both accepted on
input; ``model_dump(by_alias=True)`` gives the wire form). Every model keeps
unknown fields (``extra="allow"``) because the API grows. The field types are in
:mod:`pgcloud_nb.apitypes`: enum-like fields use :class:`OpenEnum` subclasses,
which accept values they do not know yet; integers, numbers, date-times and
lists read whatever JSON Schema allows for them.

``password`` and ``connection_string`` are :class:`pydantic.SecretStr`: repr,
str, ``_repr_html_`` and ``model_dump_json`` show ``**********``. Reveal them
only on purpose, with ``svc.reveal_password()`` / ``svc.reveal_connection_string()``
(or ``.get_secret_value()``). Unknown fields whose name looks secret are masked too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

from .apitypes import (
    BouncerSection,
    ConfigSection,
    Float,
    HaType,
    Int,
    List,
    OpenEnum,
    Provider,
    ServiceState,
    Size,
    UtcDatetime,
)
from .redaction import remember_secret

__all__ = [
    "ApiModel",
    "HaType",
    "OpenEnum",
    "PostgresBackup",
    "PostgresInstanceConfig",
    "PostgresInstanceUpdateConfigResponse",
    "PostgresLogEntry",
    "PostgresMetric",
    "PostgresMetricDataPoint",
    "PostgresMetricSeries",
    "PostgresMetrics",
    "PostgresQueryExecution",
    "PostgresService",
    "PostgresServiceListItem",
    "PostgresServicePasswordResource",
    "PostgresSlowQueryPattern",
    "PostgresSlowQueryPatternDetail",
    "Provider",
    "ResourceTagsV1",
    "ServiceState",
    "Tag",
    "Tags",
    "bouncer_payload",
    "tags_payload",
]


_SECRET_NAME = re.compile(r"(?i)password|secret|connection_?string|token|credential")


class ApiModel(BaseModel):
    """Base: camelCase aliases, extra fields kept, secrets masked everywhere."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def model_post_init(self, __context: Any) -> None:
        # An unknown field named like a secret (the API adds fields) is masked like the known ones.
        extra = self.__pydantic_extra__
        if extra:
            for name, value in extra.items():
                if isinstance(value, str) and _SECRET_NAME.search(name):
                    remember_secret(value)
                    extra[name] = SecretStr(value)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                remember_secret(value.get_secret_value())

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(_show(v))}</td></tr>"
            for k, v in self._display_items()
        )
        return f"<table><caption>{type(self).__name__}</caption>{rows}</table>"

    def _display_items(self) -> list[tuple[str, Any]]:
        items = [(name, getattr(self, name)) for name in type(self).model_fields]
        items += list((self.__pydantic_extra__ or {}).items())
        return [(k, v) for k, v in items if v is not None]


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, OpenEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    return str(value)  # str of a model is pydantic's field list, secrets masked


class ResourceTagsV1(ApiModel):
    """One tag. Keys and values match ``^[a-zA-Z0-9._-]+$`` (the API checks)."""

    key: str
    value: str | None = None

    def __str__(self) -> str:
        return f"{self.key}={self.value}" if self.value is not None else self.key


Tag = ResourceTagsV1


# Tags as users give them: a mapping, or a list of Tag / {"key", "value"} dicts.
Tags = Mapping[str, str] | list[ResourceTagsV1] | list[dict[str, str]]


def tags_payload(tags: Tags | None) -> list[dict[str, str]] | None:
    """Tags given as a mapping, or a list of Tag / dicts, in the API's list form."""
    if tags is None:
        return None
    if isinstance(tags, Mapping):
        return [{"key": str(k), "value": str(v)} for k, v in tags.items()]
    out = []
    for tag in tags:
        item = tag if isinstance(tag, ResourceTagsV1) else ResourceTagsV1.model_validate(tag)
        out.append(item.model_dump(by_alias=True, exclude_none=True, include={"key", "value"}))
    return out


def bouncer_payload(config: Mapping[str, Any]) -> dict[str, str]:
    """PgBouncer settings in the API's form: every value a string (users may give numbers)."""
    return {k: str(v) for k, v in config.items()}


class _ServiceBase(ApiModel):
    id: str
    name: str | None = None
    provider: Provider | None = None
    region: str | None = None
    postgres_version: str | None = None
    size: Size | None = None
    ha_type: HaType | None = None
    tags: List[ResourceTagsV1] = Field(default_factory=list)
    state: ServiceState | None = None
    created_at: UtcDatetime | None = None
    is_primary: bool | None = None

    @property
    def tags_dict(self) -> dict[str, str | None]:
        return {t.key: t.value for t in self.tags}


class PostgresServiceListItem(_ServiceBase):
    """An item of GET /postgres (the live list also carries ``storageSize``)."""

    storage_size: Int | None = None


class PostgresService(_ServiceBase):
    """A service as GET/POST/PATCH return it.

    The spec marks every field optional; ``id`` is required here because a
    service without one cannot be addressed (the client reports such a body as
    an unexpected response). ``password``/``connection_string`` arrive only in the
    create response (docs/api-behaviour.md §3.1).
    """

    storage_size: Int | None = None
    hostname: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    connection_string: SecretStr | None = None

    def reveal_password(self) -> str | None:
        """The password in clear text. Do not print it in a notebook that you save."""
        return self.password.get_secret_value() if self.password else None

    def reveal_connection_string(self) -> str | None:
        """The connection string in clear text (it holds the password)."""
        return self.connection_string.get_secret_value() if self.connection_string else None

    def without_secrets(self) -> Self:
        """A copy without password and connection string."""
        return self.model_copy(update={"password": None, "connection_string": None})


class PostgresServicePasswordResource(ApiModel):
    """PATCH …/password result: the generated password, only when none was sent."""

    password: SecretStr | None = None

    def reveal_password(self) -> str | None:
        return self.password.get_secret_value() if self.password else None


class PostgresInstanceConfig(ApiModel):
    """GET …/config: only user-set keys, numbers as strings (docs/api-behaviour.md §8.1)."""

    pg_config: ConfigSection = Field(default_factory=dict)
    pg_bouncer_config: BouncerSection = Field(default_factory=dict)


class PostgresInstanceUpdateConfigResponse(PostgresInstanceConfig):
    """POST/PATCH …/config result; ``message`` appears when a restart is needed."""

    message: str | None = None

    @property
    def restart_required(self) -> bool:
        return bool(self.message and "restart" in self.message.lower())


class PostgresMetricDataPoint(ApiModel):
    timestamp: Int  # Unix seconds, start of the bucket
    value: Float


class PostgresMetricSeries(ApiModel):
    label: str
    data_points: List[PostgresMetricDataPoint] = Field(default_factory=list)


class PostgresMetric(ApiModel):
    key: str
    name: str
    unit: str
    description: str = ""
    series: List[PostgresMetricSeries] = Field(default_factory=list)


class PostgresMetrics(ApiModel):
    metrics: List[PostgresMetric] = Field(default_factory=list)


class PostgresSlowQueryPattern(ApiModel):
    """One aggregated slow query pattern; ``query_id`` is a signed 64-bit hash as text."""

    query_id: str
    query_text: str
    db_name: str
    db_user: str
    db_operation: str
    app: str
    call_count: Int
    error_count: Int
    total_duration_us: Int
    avg_duration_us: Int
    max_duration_us: Int
    p50_duration_us: Int
    p95_duration_us: Int
    p99_duration_us: Int
    total_rows: Int
    total_shared_blks_read: Int
    total_shared_blks_hit: Int
    total_cpu_time_us: Int
    total_wal_bytes: Int


class PostgresQueryExecution(ApiModel):
    """One recent execution of a pattern (pg_stat_statements-like counters)."""

    timestamp: UtcDatetime
    query_id: str
    db_name: str
    db_user: str
    db_operation: str
    app: str
    query_text: str
    pid: str
    duration_us: Int
    rows: Int
    shared_blks_hit: Int
    shared_blks_read: Int
    shared_blks_written: Int
    shared_blks_dirtied: Int
    shared_blk_read_time_us: Int
    shared_blk_write_time_us: Int
    local_blks_hit: Int
    local_blks_read: Int
    local_blks_written: Int
    local_blks_dirtied: Int
    temp_blks_read: Int
    temp_blks_written: Int
    temp_blk_read_time_us: Int
    temp_blk_write_time_us: Int
    wal_records: Int
    wal_bytes: Int
    wal_fpi: Int
    cpu_user_time_us: Int
    cpu_sys_time_us: Int
    jit_functions: Int
    jit_generation_time_us: Int
    jit_inlining_time_us: Int
    jit_optimization_time_us: Int
    jit_emission_time_us: Int
    jit_deform_time_us: Int
    parallel_workers_planned: Int
    parallel_workers_launched: Int
    server_role: str | None = None
    err_message: str | None = None
    err_sqlstate: str | None = None
    err_elevel: Int | None = None
    trace_id: str | None = None
    span_id: str | None = None


class PostgresSlowQueryPatternDetail(ApiModel):
    aggregate: PostgresSlowQueryPattern | None = None
    recent_executions: List[PostgresQueryExecution] = Field(default_factory=list)


class PostgresLogEntry(ApiModel):
    """One log line; a structured body arrives JSON-encoded in ``body``."""

    timestamp: UtcDatetime
    severity: str
    body: str


class PostgresBackup(ApiModel):
    """One base backup of the backups list, newest first (docs/api-behaviour.md,
    "Backups list"). ``key``, ``status`` and ``last_modified`` are the live API's
    fields; ``started_at`` and ``size_in_bytes`` come from the sandbox only."""

    key: str | None = None
    status: str | None = None
    last_modified: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    size_in_bytes: Int | None = None
