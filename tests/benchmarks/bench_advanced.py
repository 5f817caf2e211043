"""Figures for the sandbox's advanced lifecycle (restore, replica, lag, switchover).

    python tests/benchmarks/bench_advanced.py [--mb 100] [--load-seconds 20]

1. Time to restore a service holding 100 MB of data (POST restoredService →
   running), from a base backup taken after the load plus the WAL to the target.
2. Time for a new read replica to become running (POST readReplica → running).
3. Replica lag under a steady write load: a writer commits a row with its
   clock time every few milliseconds; a reader on the replica takes
   ``now() - max(written)`` (one machine, one clock).
4. Switchover downtime: a writer inserts in a loop, reconnecting on failure,
   through the service's own connection string; the figure is the longest gap
   between two successful writes around the switchover (async and sync HA).

No timing is asserted; every figure is printed. Each sandbox lives in a
throwaway home.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pgcloud_nb.sandbox import Sandbox, Settings

CREATE = {"provider": "aws", "region": "us-east-1", "size": "r8gd.large"}


@contextmanager
def sandbox(**knobs: Any) -> Iterator[tuple[httpx.Client, Path]]:
    root = Path(tempfile.mkdtemp(prefix="pgcloud-nb-bench-"))
    root.chmod(0o755)
    home = root / "home"
    sb = Sandbox(home, Settings(home=home, rate_limit=0, sample_interval=60, **knobs))
    info = sb.start()
    try:
        with httpx.Client(
            base_url=f"{info.url}/v1/organizations/{info.org_id}",
            auth=(info.key_id, info.key_secret),
            timeout=120,
        ) as api:
            yield api, home
    finally:
        sb.stop()
        # The clusters folder may be a symlink to a folder the server's user can reach.
        shutil.rmtree((home / "clusters").resolve(), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def result(resp: httpx.Response) -> Any:
    resp.raise_for_status()
    return resp.json()["result"]


def wait(api: httpx.Client, sid: str, key: str = "state", value: Any = "running") -> dict[str, Any]:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        svc = result(api.get(f"/postgres/{sid}"))
        if (svc.get(key) == value) if value is not None else svc.get(key):
            return dict(svc)
        time.sleep(0.05)
    raise TimeoutError(f"{sid}: {key} never became {value}")


def create(api: httpx.Client, **extra: Any) -> dict[str, Any]:
    body = {**CREATE, "name": f"bench-{uuid.uuid4().hex[:6]}", **extra}
    svc = dict(result(api.post("/postgres", json=body)))
    wait(api, svc["id"])
    wait(api, svc["id"], "earliestRestoreTime", None)  # its first base backup
    return svc


def dsn_at(svc: dict[str, Any], other: dict[str, Any]) -> str:
    dsn = str(svc["connectionString"]).replace(svc["hostname"], other["hostname"])
    return dsn.replace(f":{svc['port']}/", f":{other['port']}/")


def sql(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def timed_until_running(api: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, Any]:
    start = time.monotonic()
    made = result(api.post(path, json=body))
    wait(api, made["id"])
    return time.monotonic() - start, made


# -- 1 -------------------------------------------------------------------------


def restore_figure(mb: int) -> None:
    with sandbox(backup_interval=10) as (api, home):
        svc = create(api)
        dsn = svc["connectionString"]
        rows = mb * 1024 * 1024 // 1100  # ~1 KiB of text per row, plus the row header
        sql(dsn, "CREATE TABLE big (id int, pad text)")
        sql(
            dsn,
            f"INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, {rows}) g",
        )
        size = sql(dsn, "SELECT pg_database_size('postgres')")[0][0]
        loaded = time.time()
        base = Path(home, "clusters", ".backups", svc["id"], "base").resolve()
        deadline = time.monotonic() + 300
        while not any(json.loads(p.read_text())["ended_at"] > loaded for p in base.glob("*.json")):
            if time.monotonic() > deadline:
                raise TimeoutError("no base backup after the load")
            time.sleep(0.5)
        sql(dsn, "INSERT INTO big VALUES (0, 'after the backup')")
        target = datetime.now(UTC).isoformat()
        path = f"/postgres/{svc['id']}/restoredService"
        took, made = timed_until_running(api, path, {"name": "restored", "restoreTarget": target})
        count = sql(dsn_at(svc, made), "SELECT count(*) FROM big")[0][0]
    print(
        f"1. Restore of a service with {size / 2**20:.0f} MB of data: {took:.1f} s "
        f"(POST restoredService -> running; {count} rows restored)"
    )


# -- 2, 3 ----------------------------------------------------------------------


def replica_figures(load_seconds: float) -> None:
    with sandbox() as (api, _):
        svc = create(api)
        dsn = svc["connectionString"]
        sql(dsn, "CREATE TABLE w (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
        times = []
        replica: dict[str, Any] = {}
        for i in range(3):
            took, replica = timed_until_running(
                api, f"/postgres/{svc['id']}/readReplica", {"name": f"replica {i}"}
            )
            times.append(took)
        print(
            f"2. New read replica to running: median {statistics.median(times):.2f} s "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)})"
        )

        stop = threading.Event()
        written = [0]

        def writer() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO w (at) VALUES (clock_timestamp())")
                    written[0] += 1
                    time.sleep(0.005)

        thread = threading.Thread(target=writer)
        thread.start()
        lags = []
        try:
            with psycopg.connect(dsn_at(svc, replica), autocommit=True) as conn:
                time.sleep(1)
                end = time.monotonic() + load_seconds
                while time.monotonic() < end:
                    row = conn.execute(
                        "SELECT extract(epoch FROM clock_timestamp() - max(at)) FROM w"
                    ).fetchone()
                    if row and row[0] is not None:
                        lags.append(float(row[0]) * 1000)
                    time.sleep(0.1)
        finally:
            stop.set()
            thread.join()
        lags.sort()
        print(
            f"3. Replica lag under {written[0] / (load_seconds + 1):.0f} commits/s for "
            f"{load_seconds:g} s: median {statistics.median(lags):.1f} ms, "
            f"p95 {lags[int(len(lags) * 0.95)]:.1f} ms, max {lags[-1]:.1f} ms"
        )


# -- 4 -------------------------------------------------------------------------


def switchover_figure(ha_type: str) -> None:
    with sandbox() as (api, _):
        svc = create(api, haType=ha_type)
        dsn = svc["connectionString"]
        sql(dsn, "CREATE TABLE s (id bigserial PRIMARY KEY)")
        want = 2 if ha_type == "sync" else 1
        streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        while sql(dsn, streaming)[0][0] < want:
            time.sleep(0.2)
        started = sql(dsn, "SELECT pg_postmaster_start_time()")[0][0]

        stop = threading.Event()
        ok: list[float] = []

        def writer() -> None:
            conn: psycopg.Connection[Any] | None = None
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
                    conn.execute("INSERT INTO s DEFAULT VALUES")
                    ok.append(time.monotonic())
                except psycopg.Error:
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.01)
            if conn is not None:
                conn.close()

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(2)
        begun = time.monotonic()
        result(api.patch(f"/postgres/{svc['id']}/state", json={"command": "switchover"}))
        while True:  # until the service's port is served by the promoted standby
            try:
                if sql(dsn, "SELECT pg_postmaster_start_time()")[0][0] != started:
                    break
            except psycopg.Error:
                pass
            time.sleep(0.1)
        moved = time.monotonic() - begun
        time.sleep(3)
        stop.set()
        thread.join()
        gaps = [b - a for a, b in itertools.pairwise(ok)]
        rows = sql(dsn, "SELECT count(*) FROM s")[0][0]
    print(
        f"4. Switchover ({ha_type}, {want} standby{'s' * (want > 1)}): longest gap in "
        f"successful writes {max(gaps):.2f} s; role moved {moved:.1f} s after the request; "
        f"{len(ok)} writes acknowledged, {rows} rows on the new primary"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=20)
    args = parser.parse_args()
    restore_figure(args.mb)
    replica_figures(args.load_seconds)
    switchover_figure("async")
    switchover_figure("sync")


if __name__ == "__main__":
    main()
