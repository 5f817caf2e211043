"""LiveChart over 1,000 updates: redraw time and memory, PNG path and ipympl path, and a baseline.

    python tests/benchmarks/bench_charts.py [--updates 1000] [--baseline-updates 300]
        [--services 3] [--paths ...]

Three paths, each in its own process (so that one's memory does not read as another's),
run at the same time:

- ``baseline``: bare matplotlib, what any live plot costs at the least: one Agg
  figure with as many lines as the chart draws, ``set_data`` on each, the limits
  set by hand, ``savefig`` to PNG. No parsing, no history, no widget.
- ``png``: ``LiveChart(interactive=False)``: each update is one synthetic org
  scrape (tests/fixtures/synth.py, 60 s apart, no network) added to the history,
  then the full redraw (lines moved, axes fitted, Agg render, PNG sent to the
  Image widget).
- ``ipympl``: ``LiveChart(interactive=True)`` on ipympl's canvas, built headless;
  the browser's part is played: after each update the canvas is asked for a
  frame as the browser asks (``{"type": "draw"}``), so the render and the frame
  (a PNG, full or diff) are counted. Without that answer ipympl renders nothing.

The chart has two metrics (a gauge with three series per service, and a counter
drawn as a rate) over a 30-minute window, at each path's default size (2.4 in
high per panel at 96 dpi; 9 in wide for PNG frames, 680 px for ipympl). Printed, never asserted:

- the median and p95 wall time of one update, and mean CPU time per update
  (wall times include waiting for a busy machine's CPU; CPU time does not);
- memory: RSS growth from update 100 (window full, caches warm) to the last,
  and over the last 20 updates the Python heap's peak above its level at their
  start (tracemalloc: the transient memory of one redraw) and its net growth.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# tests/ for the synthetic payloads; the repository for the package when it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.synth import exposition, services

from pgcloud_nb.charts import LiveChart
from pgcloud_nb.prometheus import parse_prometheus

T0 = pd.Timestamp("2026-09-01", tz="UTC")
METRICS = ["PostgresServer_ActiveConnections", "PostgresServer_TransactionsCommitted_Total"]
WINDOW = 1800.0
WARMUP = 100
TRACED = 20  # the last updates, run under tracemalloc (about 5× slower)
PATHS = ("baseline", "png", "ipympl")


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def chart_step(
    interactive: bool, args: argparse.Namespace
) -> tuple[Callable[[], None], Callable[[], int]]:
    svcs = services(args.services)
    # Texts made up front (the benchmark measures the chart, not the generator); each is
    # parsed when fetched, as a real scrape is.
    texts = [exposition(svcs, k) for k in range(args.updates)]
    k = iter(range(args.updates))

    def source() -> pd.DataFrame:
        i = next(k)
        return parse_prometheus(texts[i], timestamp=T0 + pd.Timedelta(seconds=60 * i))

    chart = LiveChart(source=source, metrics=METRICS, window=WINDOW, interactive=interactive)
    if not interactive:
        return chart.update, lambda: len(chart.lines)
    canvas = chart.view.widget
    sent = [0]

    def send(content: dict[str, str], buffers: list[bytes] | None = None) -> None:
        sent[0] += sum(len(b) for b in buffers or ())

    canvas.send = send  # no browser: count the bytes a browser would receive
    canvas._handle_message(canvas, {"type": "initialized"}, [])

    def step() -> None:
        chart.update()
        canvas._handle_message(canvas, {"type": "draw"}, [])  # the browser asks for the frame

    return step, lambda: len(chart.lines)


def baseline_step(args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], int]]:
    """As many lines as the chart, moved with set_data; limits by hand; savefig to PNG."""
    n_lines = (3 + 1) * args.services
    points = int(WINDOW // 60) + 1
    figure = Figure(figsize=(9.0, 4.8), dpi=96)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(2, 1, sharex=True)
    lines = [axes[i % 2].plot([], [])[0] for i in range(n_lines)]
    rng = np.random.default_rng(0)
    i = [0]

    def step() -> None:
        i[0] += 1
        end = mdates.date2num(T0 + pd.Timedelta(seconds=60 * i[0]))
        x = end - np.arange(points)[::-1] * 60 / 86400
        for line in lines:
            line.set_data(x, rng.random(points))
        axes[1].set_xlim(x[0], x[-1])
        for ax in axes:
            ax.set_ylim(0, 1)
        out = io.BytesIO()
        canvas.print_png(out)

    return step, lambda: n_lines


def run(path: str, args: argparse.Namespace) -> dict[str, float]:
    step, lines = baseline_step(args) if path == "baseline" else chart_step(path == "ipympl", args)
    times: list[float] = []
    rss0 = 0.0
    heap_start = heap_peak = heap_end = 0
    cpu0 = time.process_time()
    for i in range(args.updates):
        if i == WARMUP:
            gc.collect()
            rss0 = rss_mib()
        if i == args.updates - TRACED:
            gc.collect()
            tracemalloc.start()
            heap_start = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / args.updates  # includes the traced updates' overhead
    if tracemalloc.is_tracing():
        gc.collect()
        heap_end, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    untraced = times[: args.updates - TRACED] or times
    return {
        "lines": lines(),
        "median_ms": statistics.median(untraced) * 1000,
        "p95_ms": statistics.quantiles(untraced, n=100)[94] * 1000,
        "cpu_ms": cpu * 1000,
        "rss_growth_mib": rss_mib() - rss0,
        "heap_peak_mib": (heap_peak - heap_start) / 2**20,
        "heap_growth_mib": (heap_end - heap_start) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=1000)
    # The baseline gives the CPU per update the ratios divide by, steady after its warm-up:
    # it need not run as long as the paths whose memory over 1,000 updates is the question.
    parser.add_argument("--baseline-updates", type=int, default=300)
    parser.add_argument("--services", type=int, default=3)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--one", choices=PATHS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one, args)))
        return
    # The paths run at the same time, each in its own process: on a shared machine that
    # gets them done sooner. Compare CPU times; wall times include waiting for a CPU.
    children = {
        path: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--one",
                path,
                *("--updates", str(args.baseline_updates if path == "baseline" else args.updates)),
                *("--services", str(args.services)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for path in args.paths
    }
    results = {}
    for path, child in children.items():
        out, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"{path}: exit {child.returncode}")
        results[path] = json.loads(out.strip().splitlines()[-1])
    print(
        f"LiveChart: {args.updates} updates, {args.services} services, {len(METRICS)} metrics, "
        f"30-min window of 60 s scrapes (last {TRACED} under tracemalloc; the baseline "
        f"{args.baseline_updates} updates)"
    )
    base = results.get("baseline")
    for path, r in results.items():
        ratio = f" ({r['cpu_ms'] / base['cpu_ms']:.1f}× baseline CPU)" if base else ""
        print(
            f"  {path:8} {r['lines']:3.0f} lines: update median {r['median_ms']:.1f} ms, "
            f"p95 {r['p95_ms']:.1f} ms, CPU {r['cpu_ms']:.1f} ms{ratio}; "
            f"RSS {r['rss_growth_mib']:+.1f} MiB after warm-up; heap peak "
            f"{r['heap_peak_mib']:.2f} MiB, growth {r['heap_growth_mib']:+.2f} MiB"
        )


if __name__ == "__main__":
    main()
