"""Telemetry against a real, throwaway PostgreSQL 15 server run as user ``postgres``.

The server is our own (not the engine's) so that these tests depend only on
telemetry; every database figure asserted here comes from real SQL load.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgcloud_nb.sandbox.telemetry.exposition import FAMILIES, ServiceLabels, render_prometheus
from pgcloud_nb.sandbox.telemetry.samples import Sample
from pgcloud_nb.sandbox.telemetry.sampling import ProcessCounters, collect
from pgcloud_nb.sandbox.telemetry.timeseries import MAX_POINTS, metrics_json, plan_buckets
from pgcloud_nb.sizes import SizeSpec

BINDIR = Path("/usr/lib/postgresql/15/bin")
SIZE = SizeSpec("r8gd.large", "aws", "r8gd", 2, 16.0, 118)

pytestmark = pytest.mark.skipif(
    not (BINDIR / "initdb").exists() or shutil.which("runuser") is None,
    reason="needs Debian's PostgreSQL 15 and runuser",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port if port != 5432 else _free_port()


def _as_postgres(*args: str) -> None:
    cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)
    subprocess.run(cmd, check=True, capture_output=True, cwd="/tmp")


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    inside = [(point, fs) for point, fs in mounts if path.is_relative_to(point)]
    return max(inside, key=lambda m: len(m[0]))[1] == "tmpfs"


@dataclass
class Server:
    pgdata: Path
    port: int

    def dsn(self, dbname: str = "postgres") -> str:
        # TCP, not the Unix socket: the network counters only see TCP sessions
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def pg_ctl(self, *args: str) -> None:
        _as_postgres(str(BINDIR / "pg_ctl"), "-D", str(self.pgdata), "-w", *args)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.pgdata.parent} -c listen_addresses=127.0.0.1"
        self.pg_ctl("-o", opts, "-l", str(self.pgdata.parent / "log"), "start")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="pgcloud-telemetry-", dir="/tmp"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    srv = Server(root / "data", _free_port())
    _as_postgres(str(BINDIR / "initdb"), "-D", str(srv.pgdata), "-A", "trust", "-U", "postgres")
    srv.start()
    try:
        yield srv
    finally:
        srv.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _sample(
    server: Server, acc: ProcessCounters, admin: psycopg.Connection[tuple[object, ...]]
) -> Sample:
    return collect(admin, server.postmaster_pid(), server.pgdata, SIZE, acc)


def _counters(sample: Sample) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (name, tuple(sorted(labels.items()))): value
        for name, labels, value in sample.points
        if name.endswith("_Total")
    }


def _assert_monotonic(samples: list[Sample]) -> None:
    for before, after in itertools.pairwise(samples):
        old, new = _counters(before), _counters(after)
        assert old.keys() == new.keys()
        for key, value in old.items():
            assert new[key] >= value, (key, value, new[key])


def _load(conn: psycopg.Connection[tuple[object, ...]], rows: int = 50_000) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (id int, pad text)")
    conn.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, %s) g", [rows])
    conn.execute("UPDATE t SET pad = 'y' WHERE id <= 100")
    conn.execute("DELETE FROM t WHERE id <= 10")
    conn.execute("SELECT count(*) FROM t").fetchone()
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute("SELECT 1 / 0")


@pytest.fixture
def admin(server: Server) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with server.connect() as conn:
        yield conn


def test_collect_measures_real_load(
    server: Server, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    admin.execute("DROP DATABASE IF EXISTS appdb")
    admin.execute("CREATE DATABASE appdb")
    acc = ProcessCounters()
    with server.connect("appdb") as app, server.connect() as waiting:
        before = _sample(server, acc, admin)
        _load(app)
        waiting.autocommit = False
        waiting.execute("SELECT 1")  # leaves this session idle in transaction
        during = _sample(server, acc, admin)
        waiting.rollback()
    time.sleep(0.3)  # let the closed sessions flush their statistics on exit
    after = _sample(server, acc, admin)
    _assert_monotonic([before, during, after])

    P = "PostgresServer_"
    delta = {k: (after.get(P + k) or 0) - (before.get(P + k) or 0) for k in (
        "TuplesInserted_Total", "TuplesUpdated_Total", "TuplesDeleted_Total",
        "TuplesFetched_Total", "TransactionsCommitted_Total", "TransactionsRolledBack_Total",
        "DiskWrites_Total",
    )}  # fmt: skip
    assert delta["TuplesInserted_Total"] >= 50_000
    assert delta["TuplesUpdated_Total"] >= 100
    assert delta["TuplesDeleted_Total"] >= 10
    assert delta["TuplesFetched_Total"] > 0
    assert delta["TransactionsCommitted_Total"] >= 4
    assert delta["TransactionsRolledBack_Total"] >= 1
    if not _on_tmpfs(server.pgdata):  # tmpfs has no block layer to count I/O in
        assert delta["DiskWrites_Total"] > 0  # WAL and heap pages went to the block layer
    busy = sum(after.get(P + "CPUSeconds_Total", mode=m) or 0 for m in ("user", "system"))
    assert busy > 0
    assert (after.get(P + "CPUSeconds_Total", mode="idle") or 0) > 0
    # the app session's TCP traffic was seen while it was open, and is kept after it closed
    for name in ("NetworkReceiveBytes_Total", "NetworkTransmitBytes_Total"):
        assert (during.get(P + name) or 0) > (before.get(P + name) or 0)

    assert (during.get(P + "MemoryUsedPercent") or 0) > 0  # PSS of a live server
    assert (during.get(P + "MemoryCachePercent") or 0) > 0
    assert 0 < (after.get(P + "FilesystemUsedPercent") or 0) < 100
    assert 0 <= (after.get(P + "CacheHitRatio") or -1) <= 100
    assert during.get(P + "ActiveConnections", state="idle") == 1
    assert during.get(P + "ActiveConnections", state="idle in transaction") == 1
    assert after.get(P + "ActiveConnections", state="idle") == 0  # the collector is not counted
    dbs = {lb["database"] for n, lb, _ in after.points if n == P + "DatabaseSizeBytes"}
    assert dbs == {"postgres", "appdb"}  # templates left out
    assert (after.get(P + "DatabaseSizeBytes", database="appdb") or 0) > 5_000_000
    assert after.get(P + "CPUCores") == 2
    assert after.get(P + "MemoryLimitBytes") == 16 * 2**30


def test_counters_survive_exits_store_round_trips_and_restart(
    server: Server, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    acc = ProcessCounters()
    samples = [_sample(server, acc, admin)]
    sessions = [server.connect() for _ in range(4)]
    for conn in sessions:
        _load(conn, 5_000)
    samples.append(_sample(server, acc, admin))
    for conn in sessions:  # backends exit: their CPU, I/O and bytes must stay counted
        conn.close()
    time.sleep(0.3)
    samples.append(_sample(server, acc, admin))
    # the store persists the counters as JSON; a sandbox restart reloads them
    acc = ProcessCounters.from_dict(json.loads(json.dumps(acc.to_dict())))
    samples.append(_sample(server, acc, admin))
    samples = [Sample.from_dict(json.loads(json.dumps(s.to_dict()))) for s in samples]
    _assert_monotonic(samples)
    # an immediate stop discards pg_stat data and every process: still no counter goes back
    admin.close()
    server.pg_ctl("-m", "immediate", "stop")
    server.start()
    with server.connect() as fresh:
        samples.append(_sample(server, acc, fresh))
        with server.connect() as loader:
            _load(loader, 1_000)
        time.sleep(0.3)
        samples.append(_sample(server, acc, fresh))
    _assert_monotonic(samples)
    inserted = [s.get("PostgresServer_TuplesInserted_Total") or 0 for s in samples]
    assert inserted[-1] >= inserted[-2] + 1_000 >= 20_000 + 1_000


def test_collect_is_cheap(server: Server, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    acc = ProcessCounters()
    _sample(server, acc, admin)
    costs = []
    for _ in range(10):
        t0 = time.perf_counter()
        _sample(server, acc, admin)
        costs.append(time.perf_counter() - t0)
    costs.sort()
    print(f"collect(): median {costs[5] * 1000:.1f} ms, max {costs[-1] * 1000:.1f} ms")
    assert costs[5] < 0.1  # typically ~10 ms; loose for loaded CI machines


# ---------------------------------------------------------------- Prometheus text

ODD = ServiceLabels("org-1", "svc-2", 'we\\ird "name"\nhere', "stopped", "15")


def test_render_prometheus_parses_with_every_family(
    server: Server, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sample = _sample(server, ProcessCounters(), admin)
    running = ServiceLabels("org-1", "svc-1", "db one", "running", "15")
    text = render_prometheus([(running, sample), (ODD, None)])

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(families) == 22 == len(FAMILIES)
    for name, type_, _ in FAMILIES:
        assert families[name].type == type_, name
        # the parser names a counter's samples <family>_total; that is its convention
        suffix = "_total" if type_ == "counter" else ""
        assert {s.name for s in families[name].samples} == {name + suffix}
    info = {s.labels["postgres_service"]: s for s in families["PostgresServiceInfo"].samples}
    assert info["svc-2"].labels == {
        "clickhouse_org": "org-1",
        "postgres_service": "svc-2",
        "postgres_service_name": 'we\\ird "name"\nhere',
        "postgres_status": "stopped",
        "postgres_version": "15",
    }
    assert info["svc-2"].value == 1
    # the stopped service has nothing but its info series
    others = [s for f in families.values() for s in f.samples if f.name != "PostgresServiceInfo"]
    assert others and all(s.labels["postgres_service"] == "svc-1" for s in others)
    modes = {s.labels["mode"] for s in families["PostgresServer_CPUSeconds_Total"].samples}
    assert modes == {"user", "system", "iowait", "softirq", "steal", "irq", "nice", "idle"}


def test_render_prometheus_format() -> None:
    sample = Sample(1.0)
    sample.add("CacheHitRatio", 100.0)
    sample.add("MemoryUsedPercent", 12.5)
    sample.add("CPUSeconds_Total", 3, mode="user")
    sample.add("ActiveConnections", 1, state="active")
    text = render_prometheus([(ODD, sample)])
    common = (
        'clickhouse_org="org-1",postgres_service="svc-2",'
        'postgres_service_name="we\\\\ird \\"name\\"\\nhere"'
    )
    assert text == (
        "# HELP PostgresServiceInfo Information about PostgreSQL service,"
        " including status and version.\n"
        "# TYPE PostgresServiceInfo gauge\n"
        f'PostgresServiceInfo{{{common},postgres_status="stopped",postgres_version="15"}} 1\n'
        "\n"
        "# HELP PostgresServer_CPUSeconds_Total CPU time consumed by mode, in seconds.\n"
        "# TYPE PostgresServer_CPUSeconds_Total counter\n"
        f'PostgresServer_CPUSeconds_Total{{{common},mode="user"}} 3\n'
        "\n"
        "# HELP PostgresServer_MemoryUsedPercent Memory in use relative to the memory limit (%).\n"
        "# TYPE PostgresServer_MemoryUsedPercent gauge\n"
        f"PostgresServer_MemoryUsedPercent{{{common}}} 12.5\n"
        "\n"
        "# HELP PostgresServer_ActiveConnections Number of active connections by state.\n"
        "# TYPE PostgresServer_ActiveConnections gauge\n"
        f'PostgresServer_ActiveConnections{{{common},state="active"}} 1\n'
        "\n"
        "# HELP PostgresServer_CacheHitRatio Buffer cache hit ratio: blocks served from cache"
        " vs. total blocks accessed (%).\n"
        "# TYPE PostgresServer_CacheHitRatio gauge\n"
        f"PostgresServer_CacheHitRatio{{{common}}} 100\n"
    )
    assert render_prometheus([]) == ""


# ---------------------------------------------------------------- /metrics JSON


def _synthetic(t: float, n: int, *, states: dict[str, int] | None = None) -> Sample:
    """A sample whose counters grow by fixed steps: n is the sample's ordinal."""
    s = Sample(t)
    s.add("CPUCores", 2)
    s.add("CPUSeconds_Total", 0.5 * n, mode="user")  # 0.05 s/s over 10 s steps = 2.5 % of 2 cores
    s.add("CPUSeconds_Total", 20.0 * n, mode="idle")
    s.add("DiskReads_Total", 30 * n)
    s.add("TuplesInserted_Total", 1000 * n)
    s.add("Deadlocks_Total", n // 3)
    s.add("MemoryUsedPercent", float(n))
    for state, count in (states or {"active": 1, "idle": 2}).items():
        s.add("ActiveConnections", count, state=state)
    s.add("DatabaseSizeBytes", 1000 + n, database="postgres")
    return s


def _by_key(result: dict[str, object]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    metrics = result["metrics"]
    assert isinstance(metrics, list)
    return {
        m["key"]: {
            s["label"]: [(p["timestamp"], p["value"]) for p in s["dataPoints"]] for s in m["series"]
        }
        for m in metrics
    }


def test_metrics_json_rates_and_buckets() -> None:
    samples = [_synthetic(1000 + 10 * n, n) for n in range(13)]  # 1000 … 1120, every 10 s
    out = _by_key(metrics_json(samples, 1000.0, 1120.0, 60))
    assert set(out) >= {
        "cpu_usage", "memory_usage", "disk_usage", "iops", "network", "connection_count",
        "cache_hit_ratio", "throughput", "transactions", "deadlocks", "database_size",
    }  # fmt: skip
    # the sample at 1000 opens the window; 1120 is outside (to_date is exclusive)
    assert out["cpu_usage"] == {"user": [(1000, 2.5), (1060, 2.5)]}  # idle is left out
    assert out["iops"] == {"Reads": [(1000, 3.0), (1060, 3.0)]}
    assert out["throughput"] == {"Inserted": [(1000, 100.0), (1060, 100.0)]}
    assert out["deadlocks"] == {"Deadlocks": [(1000, 1.0), (1060, 2.0)]}  # 5//3 - 0, 11//3 - 5//3
    assert out["memory_usage"] == {"Used": [(1000, 2.5), (1060, 8.5)]}  # mean of 0…5, 6…11
    assert out["connection_count"] == {"active": [(1000, 1.0), (1060, 1.0)],
                                       "idle": [(1000, 2.0), (1060, 2.0)]}  # fmt: skip
    assert out["database_size"] == {"postgres": [(1000, 1002.5), (1060, 1008.5)]}
    assert out["network"] == {} and out["disk_usage"] == {}  # no data, no series
    for metric in metrics_json(samples, 1000.0, 1120.0, 60)["metrics"]:
        assert set(metric) == {"key", "name", "unit", "description", "series"}


def test_metrics_json_gaps_resets_and_rare_states() -> None:
    samples = [
        _synthetic(990, 0),  # before the window: only feeds the first rate
        _synthetic(1005, 1, states={"active": 1, "idle": 1, "idle in transaction (aborted)": 4}),
        _synthetic(1015, 2),
        # 1030-1060: nothing (the service was stopped)
        _synthetic(1075, 0),  # a counter reset: rates count from zero
        _synthetic(1085, 1),
    ]
    out = _by_key(metrics_json(samples, 1000.5, 1100.0, 30))
    buckets = [ts for ts, _ in out["throughput"]["Inserted"]]
    assert buckets == [1000, 1060]  # 1030 is empty and left out; starts are whole seconds
    # bucket 1000: 1000 rows in 15 s, then 1000 in 10 s;
    # bucket 1060: a reset to 0 after 60 s, then 1000 in 10 s
    assert out["throughput"]["Inserted"] == [
        (1000, 80.0),
        (1060, pytest.approx(1000 / 70, abs=1e-6)),
    ]
    # a rare state missing from a sample counts as 0 there, not as "no data"
    assert out["connection_count"]["idle in transaction (aborted)"] == [(1000, 2.0), (1060, 0.0)]


def test_plan_buckets() -> None:
    day = 86_400.0
    assert MAX_POINTS == 250
    assert plan_buckets(0, 3600, None) == 60
    assert plan_buckets(0, day, None) == 600  # 144 points
    assert math.ceil(30 * day / plan_buckets(0, 30 * day, None)) <= 250
    assert plan_buckets(0, 1000 * day, None) % 86_400 == 0
    assert plan_buckets(0, 250, 1) == 1  # exactly 250 points is allowed
    with pytest.raises(ValueError, match=r"bucket_size_seconds.*251.*>= 2"):
        plan_buckets(0, 251, 1)
    with pytest.raises(ValueError, match="bucket_size_seconds"):
        plan_buckets(0, 10, 0)
    for start, end in ((10, 10), (20, 10)):
        with pytest.raises(ValueError, match="from_date"):
            plan_buckets(start, end, 60)
