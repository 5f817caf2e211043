"""The sandbox's start, create, restart and memory figures, printed (no pass/fail).

    python tests/benchmarks/bench_sandbox.py [--services 10] [--restarts 10]

1. Cold start: ``Sandbox.start()`` on a fresh home until the API answers.
2. Create → running: POST, then GET every 50 ms until ``state`` reads ``running``;
   one service at a time. The first create also builds the engine's template data
   folder, so it is shown on its own as well as in the median.
3. Restart: ``PATCH …/state {"command":"restart"}``, then GET every 50 ms until
   ``running`` again; one at a time, round-robin over the services.
4. Memory per idle service: PSS summed over each postmaster and all its
   descendants (``/proc/<pid>/smaps_rollup``), and RSS summed the same way (RSS
   counts shared pages once per process, so it overstates the total).
5. Warm start: stop the sandbox (and its servers), then ``Sandbox.start()`` on
   the same home until it answers, and until every service is ``running`` again.

Aims: create → running ≤ 3 s, restart ≤ 1 s. Each ratio printed is
the measured median over that aim. Everything started here is stopped, and the
home and the folder its ``clusters`` symlink points to (under /tmp when the home
is not reachable by the PostgreSQL user) are deleted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pgcloud_nb.sandbox import Sandbox, SandboxInfo, Settings
from pgcloud_nb.sandbox.telemetry import procfs

POLL = 0.05
AIM_CREATE = 3.0
AIM_RESTART = 1.0
BODY = {"provider": "aws", "region": "us-east-1", "size": "r8gd.large", "postgresVersion": "17"}


def api_for(info: SandboxInfo) -> httpx.Client:
    return httpx.Client(
        base_url=f"{info.url}/v1/organizations/{info.org_id}",
        auth=(info.key_id, info.key_secret),
        timeout=60,
        trust_env=False,
    )


def wait_running(api: httpx.Client, sid: str, timeout: float = 120) -> float:
    """Poll every 50 ms until the service reads ``running``; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/postgres/{sid}")
        r.raise_for_status()
        state = r.json()["result"]["state"]
        if state == "running":
            return time.monotonic()
        if state == "unavailable":
            raise RuntimeError(f"service {sid} became unavailable")
        time.sleep(POLL)
    raise TimeoutError(f"service {sid} not running after {timeout:g} s")


def create(api: httpx.Client, name: str) -> tuple[dict[str, Any], float]:
    """The create answer's result (it alone carries the connection string), and the time."""
    t0 = time.monotonic()
    r = api.post("/postgres", json={"name": name, **BODY})
    r.raise_for_status()
    result = r.json()["result"]
    return result, wait_running(api, result["id"]) - t0


def server_version(connection_string: str) -> str:
    with psycopg.connect(connection_string, sslmode="require", connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def restart(api: httpx.Client, sid: str) -> float:
    t0 = time.monotonic()
    r = api.patch(f"/postgres/{sid}/state", json={"command": "restart"})
    r.raise_for_status()
    return wait_running(api, sid) - t0


# -- memory ----------------------------------------------------------------------------------


def postmaster_pids(clusters: Path) -> dict[str, int]:
    pids = {}
    for pidfile in clusters.glob("*/pgdata/postmaster.pid"):
        first = pidfile.read_text().splitlines()[0]
        pids[pidfile.parent.parent.name] = int(first)
    return pids


def memory(clusters: Path, ids: list[str]) -> list[tuple[int, int, int]]:
    """Per service: (processes, PSS kB, RSS kB), summed over the postmaster's tree."""
    pids = postmaster_pids(clusters)
    out = []
    for sid in ids:
        tree = procfs.process_tree(pids[sid])  # the sampler's own reading of /proc
        out.append((len(tree), sum(p.pss for p in tree) // 1024, sum(p.rss for p in tree) // 1024))
    return out


# -- reporting -------------------------------------------------------------------------------


def fmt_times(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<34} {value:<22} {note}")


def versus_aim(median: float, aim: float) -> str:
    verdict = "within" if median <= aim else "OVER"
    return f"aim ≤ {aim:g} s; ratio {median / aim:.2f} of the aim ({verdict})"


def start_timed(home: Path, settings: Settings) -> tuple[Sandbox, SandboxInfo, float]:
    sb = Sandbox(home, settings)
    t0 = time.monotonic()
    info = sb.start()
    return sb, info, time.monotonic() - t0


def cleanup(sb: Sandbox | None, home: Path) -> None:
    if sb is not None:
        sb.stop()
    clusters = home / "clusters"
    target = clusters.resolve() if clusters.is_symlink() else None
    shutil.rmtree(home, ignore_errors=True)
    if target is not None:
        shutil.rmtree(target, ignore_errors=True)
    print(f"\ncleaned up: {home}" + (f" and {target}" if target is not None else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10, help="services to create (default 10)")
    ap.add_argument("--restarts", type=int, default=10, help="restarts to time (default 10)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds to idle before memory")
    args = ap.parse_args(argv)

    # mkdtemp's 0700 folder is not reachable by the PostgreSQL user when run as root,
    # so the engine may move the clusters under /tmp behind a symlink: cleaned up below.
    home = Path(tempfile.mkdtemp(prefix="pgcloud-nb-bench-"))
    settings = Settings(home=home, rate_limit=0)
    sb: Sandbox | None = None
    print(
        f"sandbox figures on {platform.node()}: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    try:
        sb, info, cold = start_timed(home, settings)
        with api_for(info) as api:
            ids: list[str] = []
            creates: list[float] = []
            first: dict[str, Any] = {}
            for i in range(args.services):
                result, seconds = create(api, f"bench-{i:02d}")
                if not ids:
                    first = result
                ids.append(result["id"])
                creates.append(seconds)
            restarts = [restart(api, ids[i % len(ids)]) for i in range(args.restarts)]
            runs = server_version(first["connectionString"])
            trips = []
            for _ in range(20):
                t0 = time.monotonic()
                api.get("/postgres")
                trips.append(time.monotonic() - t0)

            time.sleep(args.idle)
            clusters = (home / "clusters").resolve()
            mem = memory(clusters, ids)

        # warm start: the same home, with its services, after a clean stop
        sb.stop()
        sb, info, warm = start_timed(home, settings)
        t0 = time.monotonic() - warm
        with api_for(info) as api:
            all_running = max(wait_running(api, sid) for sid in ids) - t0

        print("\nfigures (seconds unless noted)")
        line("sandbox cold start (fresh home)", f"{cold:.2f} s", "Sandbox.start() until it answers")
        line(
            f"warm start ({len(ids)} services)",
            f"{warm:.2f} s",
            f"until it answers; every service running after {all_running:.2f} s",
        )
        med_c = statistics.median(creates)
        line(
            f"create → running, median of {len(creates)}",
            f"{med_c:.2f} s",
            versus_aim(med_c, AIM_CREATE),
        )
        line("  each (first builds the template)", fmt_times(creates))
        line(
            "  without the first",
            f"{statistics.median(creates[1:]):.2f} s" if len(creates) > 1 else "-",
            f"min {min(creates[1:] or creates):.2f}, max {max(creates[1:] or creates):.2f}",
        )
        med_r = statistics.median(restarts)
        line(
            f"restart → running, median of {len(restarts)}",
            f"{med_r:.2f} s",
            versus_aim(med_r, AIM_RESTART),
        )
        line("  each", fmt_times(restarts))
        pss = [m[1] for m in mem]
        rss = [m[2] for m in mem]
        procs = [m[0] for m in mem]
        line(
            "memory per idle service, PSS",
            f"{statistics.median(pss) / 1024:.1f} MiB (median)",
            f"min {min(pss) / 1024:.1f}, max {max(pss) / 1024:.1f}; "
            f"{statistics.median(procs):.0f} processes each; total {sum(pss) / 1024:.0f} MiB",
        )
        line(
            "memory per idle service, RSS",
            f"{statistics.median(rss) / 1024:.1f} MiB (median)",
            "RSS sums shared pages once per process: an upper bound",
        )
        print(
            f"\n  postgresVersion recorded: {first['postgresVersion']}; the server runs "
            f"PostgreSQL {runs}. Memory measured after {args.idle:g} s idle."
        )
        print(f"  polling every {POLL * 1000:.0f} ms adds up to that much to each time")
        trip = statistics.median(trips) * 1000
        print(f"  GET on a kept-alive connection: {trip:.0f} ms (median of 20), paid by each poll")
    finally:
        cleanup(sb, home)


if __name__ == "__main__":
    main()
