"""A pattern's executions, from the lines the server logged while running it.

``auto_explain`` logs each execution slower than its threshold as
``duration: <ms> ms  plan:`` and the plan in JSON (with buffers, WAL, JIT and
workers); the log line carries the pid, user, database, ``application_name``
and ``query_id``. A failed execution is an ERROR/FATAL/PANIC line with a
``query_id``. Any other line with a ``query_id`` (a WARNING raised by the
statement, say) tells only which application ran it. See :mod:`api.insights`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from pgcloud_nb.sandbox.insights.logs import iso
from pgcloud_nb.sandbox.insights.statements import Key

__all__ = ["FAILED", "Activity", "activity_by_key", "execution", "log_key", "logged_duration", "us"]

FAILED = {"ERROR": 21, "FATAL": 22, "PANIC": 23}  # elevel numbers of PostgreSQL's elog.h


# auto_explain's plan names its statement; the line's query_id may be the next one
# (see insights/logs.py). A query text cannot fake it: its quotes are escaped.
_PLAN_QID = re.compile(r'"Query Identifier": (-?\d+)')


def log_key(rec: dict[str, Any]) -> Key:
    qid = int(rec.get("query_id", 0))
    if logged_duration(rec) is not None and (plan := _PLAN_QID.search(rec["message"])):
        qid = int(plan.group(1))
    return Key(qid, str(rec.get("dbname", "")), str(rec.get("user", "")))


def logged_duration(rec: dict[str, Any]) -> float | None:
    """The duration (ms) of an auto_explain line ("duration: 1.2 ms  plan: …"), else None."""
    msg = rec.get("message", "")
    if rec.get("error_severity") != "LOG" or not msg.startswith("duration: "):
        return None
    head = msg.split("\n", 1)[0]
    if not head.endswith("plan:"):
        return None
    try:
        return float(head.split()[1])
    except (IndexError, ValueError):
        return None


class Activity:
    """What the log says about one pattern: logged durations, failures, apps."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.errors = 0
        self.apps: Counter[str] = Counter()
        self.lines: list[tuple[float, dict[str, Any]]] = []  # executions and failures

    def add(self, when: float, rec: dict[str, Any]) -> None:
        self.apps[str(rec.get("application_name", ""))] += 1
        duration = logged_duration(rec)
        if duration is not None:
            self.durations.append(duration)
            self.lines.append((when, rec))
        elif rec.get("error_severity") in FAILED:
            self.errors += 1
            self.lines.append((when, rec))

    def app(self) -> str:
        return self.apps.most_common(1)[0][0] if self.apps else ""


def activity_by_key(records: list[tuple[float, dict[str, Any]]]) -> dict[Key, Activity]:
    out: dict[Key, Activity] = {}
    for when, rec in records:
        out.setdefault(log_key(rec), Activity()).add(when, rec)
    return out


def us(ms: float) -> int:
    return round(ms * 1000)


def _plan_totals(node: dict[str, Any], key: str) -> int:
    """A per-node figure summed over the plan tree (workers sit on Gather nodes)."""
    return int(node.get(key) or 0) + sum(_plan_totals(n, key) for n in node.get("Plans", []))


def execution(
    when: float, rec: dict[str, Any], pattern: dict[str, Any], role: str
) -> dict[str, Any]:
    """One PostgresQueryExecution from an auto_explain or error line."""
    duration = logged_duration(rec)
    explained: dict[str, Any] = {}
    if duration is not None:
        try:
            explained = json.loads(rec["message"].split("\n", 1)[1])
        except (IndexError, ValueError):
            explained = {}
    plan = explained.get("Plan", {})
    jit = explained.get("JIT", {})
    timing = jit.get("Timing", {})

    def n(name: str) -> int:
        return int(plan.get(name) or 0)

    def ms(value: Any) -> int:
        return us(float(value or 0))

    rows = n("Actual Rows") * max(n("Actual Loops"), 1)
    if plan.get("Node Type") == "ModifyTable" and not rows and plan.get("Plans"):
        child = plan["Plans"][0]  # rows written, when nothing is RETURNING
        rows = int(child.get("Actual Rows") or 0) * max(int(child.get("Actual Loops") or 0), 1)
    io_ms = sum(float(plan.get(k) or 0) for k in ("I/O Read Time", "I/O Write Time"))
    temp_ms = sum(float(plan.get(k) or 0) for k in ("Temp I/O Read Time", "Temp I/O Write Time"))
    out: dict[str, Any] = {
        "timestamp": iso(when),
        **{k: pattern[k] for k in ("queryId", "dbName", "dbUser", "dbOperation", "queryText")},
        "app": str(rec.get("application_name", "")),
        "pid": str(rec.get("pid", "")),
        "durationUs": ms(duration),
        "rows": rows,
        "sharedBlksHit": n("Shared Hit Blocks"),
        "sharedBlksRead": n("Shared Read Blocks"),
        "sharedBlksWritten": n("Shared Written Blocks"),
        "sharedBlksDirtied": n("Shared Dirtied Blocks"),
        "sharedBlkReadTimeUs": ms(plan.get("I/O Read Time")),
        "sharedBlkWriteTimeUs": ms(plan.get("I/O Write Time")),
        "localBlksHit": n("Local Hit Blocks"),
        "localBlksRead": n("Local Read Blocks"),
        "localBlksWritten": n("Local Written Blocks"),
        "localBlksDirtied": n("Local Dirtied Blocks"),
        "tempBlksRead": n("Temp Read Blocks"),
        "tempBlksWritten": n("Temp Written Blocks"),
        "tempBlkReadTimeUs": ms(plan.get("Temp I/O Read Time")),
        "tempBlkWriteTimeUs": ms(plan.get("Temp I/O Write Time")),
        "walRecords": n("WAL Records"),
        "walBytes": n("WAL Bytes"),
        "walFpi": n("WAL FPI"),
        "cpuUserTimeUs": ms(max((duration or 0) - io_ms - temp_ms, 0)),  # estimate, see above
        "cpuSysTimeUs": 0,
        "jitFunctions": int(jit.get("Functions") or 0),
        "jitGenerationTimeUs": ms(timing.get("Generation")),
        "jitInliningTimeUs": ms(timing.get("Inlining")),
        "jitOptimizationTimeUs": ms(timing.get("Optimization")),
        "jitEmissionTimeUs": ms(timing.get("Emission")),
        "jitDeformTimeUs": ms(timing.get("Deform")),  # PostgreSQL 17+
        "parallelWorkersPlanned": _plan_totals(plan, "Workers Planned"),
        "parallelWorkersLaunched": _plan_totals(plan, "Workers Launched"),
        "serverRole": role,
    }
    severity = rec.get("error_severity", "")
    if severity in FAILED:
        out |= {
            "errMessage": str(rec.get("message", "")),
            "errSqlstate": str(rec.get("state_code", "")),
            "errElevel": FAILED[severity],
        }
    return out
