"""Slow query figures belong to the statement and the node that ran them.

Two sandbox bugs clickhousectl's lifecycle found (tests/foreign/test_clickhousectl.py):

- auto_explain logs an execution when its executor ends; for a portal closed by
  the next Bind or by COMMIT (psycopg in a transaction) the line's ``query_id``
  is that next statement's, so executions went to the wrong pattern. The plan's
  own "Query Identifier" (``auto_explain.log_verbose``) names the right one.
- after a switchover pg_stat_statements is another server's: its counters were
  diffed against the old primary's as if one server had gone on counting (four
  runs on the new primary showed as one) or had reset.
"""

from __future__ import annotations

import json
from pathlib import Path

from pgcloud_nb.sandbox.insights.executions import activity_by_key, log_key
from pgcloud_nb.sandbox.insights.logs import LogIndex
from pgcloud_nb.sandbox.insights.statements import Counters, Key, Snapshots, Statement

SELECT_ID, COMMIT_ID = 4242, -77


def explained(when: str, ms: float, plan_id: int, line_id: int, ps: str) -> dict[str, object]:
    plan = {"Query Text": 'select pg_sleep(0.15) as "\\"Query Identifier\\": 1"', "Plan": {}}
    plan["Query Identifier"] = plan_id
    return {
        "timestamp": f"2026-12-01 {when} UTC",
        "user": "postgres",
        "dbname": "postgres",
        "ps": ps,
        "error_severity": "LOG",
        "message": f"duration: {ms} ms  plan:\n" + json.dumps(plan, indent=2),
        "application_name": "app",
        "query_id": line_id,
    }


def test_an_execution_closed_by_commit_belongs_to_its_own_statement(tmp_path: Path) -> None:
    lines = [
        explained("12:00:00.100", 150.8, SELECT_ID, SELECT_ID, "BIND"),
        explained("12:00:00.300", 156.8, SELECT_ID, COMMIT_ID, "COMMIT"),  # the last one
    ]
    (tmp_path / "postgresql-2026-12-01.json").write_text(
        "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)  # as jsonlog
    )
    index = LogIndex(tmp_path)
    everything = index.records(0, 2e9)
    assert [log_key(rec).query_id for _, rec in everything] == [SELECT_ID, SELECT_ID]
    assert len(index.records(0, 2e9, query_id=SELECT_ID)) == 2
    assert index.records(0, 2e9, query_id=COMMIT_ID) == []
    seen = activity_by_key(everything)
    assert seen[Key(SELECT_ID, "postgres", "postgres")].durations == [150.8, 156.8]


def test_a_switchover_starts_the_new_nodes_own_counters() -> None:
    key = Key(SELECT_ID, "postgres", "postgres")

    def read(calls: float, total: float) -> list[Statement]:
        return [Statement(key, Counters(calls=calls, total_ms=total), 150.0, 160.0, "select")]

    snaps = Snapshots()
    snaps.record("svc", 10.0, read(3, 455.0), node="svc")  # before the switchover
    snaps.record("svc", 30.0, read(4, 600.0), node="svc.s1")  # four runs on the new primary
    assert snaps.window("svc", key, 15.0, 40.0) == Counters(calls=4, total_ms=600.0)
    assert snaps.window("svc", key, 0.0, 40.0).calls == 7  # both nodes' runs
