"""PostgreSQL's parameters as the API exposes them: defaults, units, restart rules.

The API's ``pgConfig`` accepts 31 PostgreSQL parameters and its
``pgBouncerConfig`` PgBouncer's own; it reports only what the user set, as
strings. This module holds what PostgreSQL and PgBouncer say about them (their
documentation, ``pg_settings``), beside :mod:`pgcloud_nb.spec` (the API's
contract) and :mod:`pgcloud_nb.sizes` (the size table):

- :data:`PG_DEFAULTS`: PostgreSQL 17's default for each key the API accepts;
- :data:`RESTART_PARAMETERS` / :data:`BOUNCER_RESTART_PARAMETERS`: keys whose
  change needs a restart (:func:`needs_restart`);
- :data:`MEMORY_UNITS`, :data:`TIME_UNITS` and :data:`UNIT_OF`: PostgreSQL's unit
  suffixes and each key's base unit, the one copy of them (the sandbox's check of
  values, ``pgcloud_nb.sandbox.api.pgvalues``, reads them too);
- :func:`typed_value`: a value's text as a typed Python value, by its unit.

:func:`pgcloud_nb.frames.config_frame` builds its frame from these. pandas is
imported only by :func:`typed_value`, so the sandbox's server reads the units
without it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BOUNCER_RESTART_PARAMETERS",
    "KINDS",
    "MEMORY_UNITS",
    "PG_DEFAULTS",
    "RESTART_PARAMETERS",
    "TIME_UNITS",
    "UNIT_OF",
    "needs_restart",
    "typed_value",
]

# The kinds typed_value() tells apart, in the order a frame's categorical lists them.
KINDS = ("memory", "duration", "integer", "real", "bool", "text")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Parameters that only take effect after a server restart: PostgreSQL's
# "postmaster" context (pg_settings.context), from its documentation. Of the 31
# keys the API accepts, max_connections and max_worker_processes are always
# here, autovacuum_max_workers up to PostgreSQL 17 (18 made it reloadable). The
# WAL keys the API accepts (wal_keep_size, min/max_wal_size, wal_compression,
# wal_sender_timeout, max_slot_wal_keep_size) are reloadable; the postmaster
# WAL settings are listed for configs that carry them.
RESTART_PARAMETERS: frozenset[str] = frozenset(
    _words(
        "max_connections max_worker_processes autovacuum_max_workers "
        "superuser_reserved_connections reserved_connections shared_buffers huge_pages "
        "huge_page_size max_prepared_transactions max_locks_per_transaction "
        "max_pred_locks_per_transaction max_files_per_process shared_preload_libraries "
        "wal_level wal_buffers wal_log_hints max_wal_senders max_replication_slots "
        "track_commit_timestamp track_activity_query_size listen_addresses port ssl_library "
        "archive_mode hot_standby shared_memory_type dynamic_shared_memory_type "
        "max_notify_queue_pages recovery_target_timeline"
    )
)
# PgBouncer settings that a reload does not change (its docs: "Can be changed at
# runtime: no" or a restart needed for the new value).
BOUNCER_RESTART_PARAMETERS: frozenset[str] = frozenset(
    _words(
        "listen_addr listen_port unix_socket_dir unix_socket_mode unix_socket_group user "
        "pidfile so_reuseport peer_id auth_type"
    )
)

# PostgreSQL 17's own defaults for the 31 keys the API accepts (docs/api-behaviour.md §8.5).
# The managed service may tune some per size (e.g. max_connections; unknown): a
# ``source="default"`` row is PostgreSQL's default, not a reading of the server.
PG_DEFAULTS: Mapping[str, str] = {
    "max_connections": "100",
    "default_transaction_isolation": "read committed",
    "ssl_min_protocol_version": "TLSv1.2",
    "maintenance_work_mem": "64MB",
    "work_mem": "4MB",
    "effective_cache_size": "4GB",
    "random_page_cost": "4",
    "effective_io_concurrency": "1",
    "max_worker_processes": "8",
    "max_parallel_workers": "8",
    "max_parallel_workers_per_gather": "2",
    "max_parallel_maintenance_workers": "2",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "transaction_timeout": "0",
    "wal_sender_timeout": "60s",
    "wal_keep_size": "0",
    "min_wal_size": "80MB",
    "max_wal_size": "1GB",
    "max_slot_wal_keep_size": "-1",
    "wal_compression": "off",
    "autovacuum_max_workers": "3",
    "autovacuum_naptime": "1min",
    "autovacuum_work_mem": "-1",
    "autovacuum_vacuum_scale_factor": "0.2",
    "autovacuum_analyze_scale_factor": "0.1",
    "autovacuum_vacuum_insert_scale_factor": "0.2",
    "autovacuum_vacuum_cost_limit": "-1",
    "autovacuum_vacuum_cost_delay": "2ms",
}
# Bytes per unit, and milliseconds per unit, as PostgreSQL spells them (case matters).
MEMORY_UNITS: Mapping[str, int] = {"B": 1, "kB": 1024, "MB": 2**20, "GB": 2**30, "TB": 2**40}
TIME_UNITS: Mapping[str, float] = {
    "us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
}  # fmt: skip
# The base unit of each pgConfig key that has one (pg_settings.unit), the unit of a bare
# number: (kind, size of one base unit in bytes or in milliseconds).
UNIT_OF: Mapping[str, tuple[str, float]] = {
    "maintenance_work_mem": ("memory", 1024), "work_mem": ("memory", 1024),
    "autovacuum_work_mem": ("memory", 1024), "effective_cache_size": ("memory", 8192),
    "wal_keep_size": ("memory", 2**20), "min_wal_size": ("memory", 2**20),
    "max_wal_size": ("memory", 2**20), "max_slot_wal_keep_size": ("memory", 2**20),
    "statement_timeout": ("time", 1), "lock_timeout": ("time", 1),
    "idle_session_timeout": ("time", 1), "idle_in_transaction_session_timeout": ("time", 1),
    "transaction_timeout": ("time", 1), "wal_sender_timeout": ("time", 1),
    "autovacuum_vacuum_cost_delay": ("time", 1), "autovacuum_naptime": ("time", 1000),
}  # fmt: skip
_QUANTITY = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def typed_value(section: str, key: str, raw: Any) -> tuple[Any, str]:
    """A parameter's value as a Python object, and its kind (one of :data:`KINDS`).

    Memory becomes bytes (int), durations ``pandas.Timedelta``, numbers int or
    float; a bare number takes the parameter's own unit (``work_mem = 4096`` is
    kB). ``-1`` and ``0`` keep their PostgreSQL meaning (unlimited / off) as
    plain numbers. ``section`` is ``"pgConfig"`` or ``"pgBouncerConfig"``: only
    in PgBouncer's section are ``on``/``off`` read as booleans (PostgreSQL's stay
    text, as its enums do).
    """
    if isinstance(raw, bool):
        return raw, "bool"
    if isinstance(raw, int | float):
        raw = repr(raw)
    text = str(raw)
    m = _QUANTITY.fullmatch(text)
    if m is None:
        low = text.strip().lower()
        if low in ("on", "off", "true", "false") and section == "pgBouncerConfig":
            return low in ("on", "true"), "bool"
        return text, "text"
    number, suffix = m[1], m[2]
    num: int | float = float(number) if "." in number else int(number)
    kind, base = UNIT_OF.get(key, ("", 0))
    if kind == "memory" or suffix in MEMORY_UNITS:
        if num < 0 and not suffix:
            return num, "memory"  # -1: "use the other setting" / unlimited
        scale = MEMORY_UNITS.get(suffix) if suffix else int(base)
        size = num * scale if scale else math.inf
        # a decimal past float's range (1e309 kB) is no size PostgreSQL takes: kept as text
        finite = isinstance(size, int) or math.isfinite(size)
        return (int(size), "memory") if finite else (text, "text")
    if kind == "time" or suffix in TIME_UNITS:
        if num < 0 and not suffix:
            return num, "duration"
        ms = TIME_UNITS.get(suffix) if suffix else base
        if ms is None:
            return text, "text"
        return _duration(num, ms, text)
    if suffix:
        return text, "text"
    return num, "integer" if isinstance(num, int) else "real"


def _duration(num: float, ms_per_unit: float, text: str) -> tuple[Any, str]:
    """``num`` units of ``ms_per_unit`` ms as a ``pandas.Timedelta`` (counted in whole
    microseconds per unit, exact for every unit), or the text past its ±292 years."""
    import pandas as pd  # only here: the sandbox's server reads this module's units

    try:
        return pd.Timedelta(num * round(ms_per_unit * 1000), unit="us"), "duration"
    except (OverflowError, ValueError):
        return text, "text"


def needs_restart(section: str, key: str) -> bool:
    """Whether a change of ``key`` takes effect only after a restart (PostgreSQL or PgBouncer)."""
    if section == "pgConfig":
        return key in RESTART_PARAMETERS
    return key in BOUNCER_RESTART_PARAMETERS
