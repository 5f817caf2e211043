"""What the sandbox shows of a service: list items, details, config and messages."""

from __future__ import annotations

from typing import Any

from pgcloud_nb.sandbox.services.access_lists import rules
from pgcloud_nb.sandbox.store import ServiceRow
from pgcloud_nb.sizes import size_spec

__all__ = ["config_view", "list_item", "restart_message", "service_view"]


def list_item(row: ServiceRow) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "provider": row.provider,
        "region": row.region,
        "postgresVersion": row.postgres_version,
        "size": row.size,
        "haType": row.ha_type,
        "tags": row.tags,
        "state": row.state,
        "createdAt": row.created_at,
        "isPrimary": row.is_primary,
    }
    spec_ = size_spec(row.size)
    if spec_ is not None:  # the live list carries storageSize too (docs/api-behaviour.md §4.5)
        item["storageSize"] = spec_.storage_gib
    return item


def service_view(row: ServiceRow) -> dict[str, Any]:
    # docs/api-behaviour.md §3.1: no password or connection string outside create / reset.
    # `port` is a sandbox extension (§13.2): every real service listens on 5432 (§3.2),
    # but here each service has its own; extra fields are allowed by the spec.
    view = {**list_item(row), "username": row.username, "hostname": row.hostname, "port": row.port}
    if row.earliest_restore:  # docs/api-behaviour.md §12.4: restore from here up to now
        view["earliestRestoreTime"] = row.earliest_restore
    # docs/api-behaviour.md, "IP access lists": GET shows each rule with its id (list
    # items do not: clickhousectl's list item has the spec's fields only).
    view["ipAccessList"] = rules(row)
    return view


# A spec-valid answer never has an empty section (minProperties: 1), although the
# real API sends {}; when nothing is user-set we show the effective default.
def config_view(row: ServiceRow, current_max_connections: str | None = None) -> dict[str, Any]:
    pg = dict(row.pg_config) or {"max_connections": current_max_connections or "100"}
    bouncer = dict(row.pg_bouncer_config) or {"default_pool_size": "20"}
    return {"pgConfig": pg, "pgBouncerConfig": bouncer}


def restart_message(pending: list[str]) -> str:
    # The documented wording (docs/api-behaviour.md §8.3).
    return (
        "The changes in the following parameters require a database restart to take effect: "
        f"{', '.join(pending)}. You can restart the database by using the restart endpoint."
    )
