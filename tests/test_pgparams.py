"""PostgreSQL's parameter catalogue: defaults, units and restart rules of the API's keys."""

from __future__ import annotations

import pandas as pd
import pytest

from pgcloud_nb.pgparams import (
    BOUNCER_RESTART_PARAMETERS,
    KINDS,
    PG_DEFAULTS,
    RESTART_PARAMETERS,
    needs_restart,
    typed_value,
)
from pgcloud_nb.spec import pg_config_keys


def test_defaults_cover_exactly_the_keys_the_api_accepts() -> None:
    assert set(PG_DEFAULTS) == set(pg_config_keys())


def test_every_default_reads_as_a_typed_value() -> None:
    for key, raw in PG_DEFAULTS.items():
        value, kind = typed_value("pgConfig", key, raw)
        assert kind in KINDS, key
        assert value is not None, key


@pytest.mark.parametrize(
    ("section", "key", "raw", "expected"),
    [
        ("pgConfig", "work_mem", "4MB", (4 * 2**20, "memory")),
        ("pgConfig", "work_mem", "4096", (4096 * 1024, "memory")),  # bare number: kB
        ("pgConfig", "effective_cache_size", 16, (16 * 8192, "memory")),  # 8 kB pages
        ("pgConfig", "autovacuum_work_mem", "-1", (-1, "memory")),  # -1 keeps its meaning
        ("pgConfig", "statement_timeout", "1500", (pd.Timedelta(milliseconds=1500), "duration")),
        ("pgConfig", "autovacuum_naptime", "1min", (pd.Timedelta(minutes=1), "duration")),
        ("pgConfig", "random_page_cost", "1.1", (1.1, "real")),
        ("pgConfig", "max_connections", "100", (100, "integer")),
        ("pgConfig", "wal_compression", "off", ("off", "text")),  # PostgreSQL's enums stay text
        ("pgBouncerConfig", "server_reset_query_always", "on", (True, "bool")),
        ("pgBouncerConfig", "default_pool_size", True, (True, "bool")),
    ],
)
def test_typed_value(section: str, key: str, raw: object, expected: tuple[object, str]) -> None:
    assert typed_value(section, key, raw) == expected


def test_restart_rules_per_section() -> None:
    assert needs_restart("pgConfig", "max_connections")
    assert not needs_restart("pgConfig", "work_mem")
    assert needs_restart("pgBouncerConfig", "listen_port")
    # a name is judged in its own section only
    assert not needs_restart("pgBouncerConfig", "max_connections")
    assert not needs_restart("pgConfig", "listen_port")
    assert not RESTART_PARAMETERS & BOUNCER_RESTART_PARAMETERS
