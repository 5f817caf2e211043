"""LiveChart over 1,000 updates: redraw time, memory growth, figures left open.

    python tests/benchmarks/bench_charts.py [--updates 1000] [--services 3]

Each update is one synthetic org scrape (tests/fixtures/synth.py, 60 s apart,
no network) added to a chart of two metrics (a gauge with three series per
service, and a counter drawn as a rate) over a 30-minute window, followed by a
full redraw: ``set_data`` on every line, ``draw_idle`` on the Agg canvas, and
the PNG sent to the Image widget. Printed, never asserted:

- the median (and p95) time of one update, and of the redraw alone;
- memory growth between update 100 (window full, caches warm) and the last:
  process RSS and the count of live Python objects; with ``--tracemalloc``
  also the Python heap (numpy reports to it), at the price of ~5× slower updates
  (so the times printed are then not representative);
- figures left open: live ``matplotlib.figure.Figure`` objects and pyplot's
  figure count, while the chart is open (aim: 1 and 0) and after ``close()``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.synth import exposition, services

from pgcloud_nb.charts import LiveChart
from pgcloud_nb.prometheus import parse_prometheus

T0 = pd.Timestamp("2026-09-01", tz="UTC")
METRICS = ["PostgresServer_ActiveConnections", "PostgresServer_TransactionsCommitted_Total"]
WARMUP = 100


def rss_mib() -> float:
    # Linux reports ru_maxrss in KiB; read the current RSS from /proc when we can.
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def heap_mib() -> float:
    return tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else 0.0


def live_figures() -> int:
    gc.collect()
    return sum(isinstance(o, Figure) for o in gc.get_objects())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--services", type=int, default=3)
    parser.add_argument("--tracemalloc", action="store_true", help="also measure the heap")
    args = parser.parse_args()

    svcs = services(args.services)
    # The texts are made up front (the benchmark measures the chart, not the generator);
    # each is parsed when fetched, as a real scrape is. Keeping parsed frames instead
    # would grow pandas' per-frame caches and read as the chart's memory.
    texts = [exposition(svcs, k) for k in range(args.updates)]
    k = iter(range(args.updates))

    def source() -> pd.DataFrame:
        i = next(k)
        return parse_prometheus(texts[i], timestamp=T0 + pd.Timedelta(seconds=60 * i))

    chart = LiveChart(source=source, metrics=METRICS, window=1800)

    original_redraw = chart.redraw
    redraw_times: list[float] = []

    def timed_redraw() -> None:
        t = time.perf_counter()
        original_redraw()
        redraw_times.append(time.perf_counter() - t)

    chart.redraw = timed_redraw  # type: ignore[method-assign]
    if args.tracemalloc:
        tracemalloc.start()
    update_times: list[float] = []
    cpu0 = time.process_time()
    heap0 = rss0 = 0.0
    objects0 = 0
    for i in range(args.updates):
        if i == WARMUP:
            gc.collect()
            heap0, rss0, objects0 = heap_mib(), rss_mib(), len(gc.get_objects())
        t = time.perf_counter()
        chart.update()
        update_times.append(time.perf_counter() - t)
    gc.collect()
    cpu_per_update = (time.process_time() - cpu0) / args.updates
    heap1, rss1, objects1 = heap_mib(), rss_mib(), len(gc.get_objects())
    tracemalloc.stop()
    open_figures, pyplot_figures = live_figures(), len(plt.get_fignums())
    lines = len(chart.lines)
    chart.close()
    del chart.redraw  # the timing wrapper holds the chart, through its closure cell
    original_redraw = None  # type: ignore[assignment]
    del chart, timed_redraw
    after_close = live_figures()

    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else 0.0

    print(
        f"LiveChart: {args.updates} updates, {args.services} services, {len(METRICS)} metrics, "
        f"{lines} lines, 30-min window of 60 s scrapes"
    )
    print(
        f"  update (add + redraw): median {statistics.median(update_times) * 1000:.1f} ms, "
        f"p95 {ms(update_times, 95):.1f} ms"
    )
    print(
        f"  CPU time per update:   mean {cpu_per_update * 1000:.1f} ms "
        "(wall times above include waiting for a busy machine's CPU)"
    )
    print(
        f"  redraw alone:          median {statistics.median(redraw_times) * 1000:.1f} ms, "
        f"p95 {ms(redraw_times, 95):.1f} ms"
    )
    heap = f"heap {heap1 - heap0:+.2f} MiB, " if args.tracemalloc else ""
    print(
        f"  memory growth, updates {WARMUP}–{args.updates}: {heap}RSS {rss1 - rss0:+.2f} MiB, "
        f"{objects1 - objects0:+d} Python objects (aim: ≤ 5 MB)"
    )
    print(
        f"  figures open while charting: {open_figures} (pyplot: {pyplot_figures}); "
        f"after close(): {after_close} (aim: 1, then 0)"
    )


if __name__ == "__main__":
    main()
