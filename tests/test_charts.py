"""LiveChart: one figure reused, readable axes, stable colours, both render paths, the loop.

Kernel-less: synthetic scrapes (tests/fixtures/synth.py) through ``source``, and ipympl's
canvas built headless, its browser side played by sending the messages the browser sends.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import uuid
from collections.abc import Callable
from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from fixtures.synth import exposition, services
from matplotlib.backend_bases import MouseEvent
from matplotlib.figure import Figure
from PIL import Image

import pgcloud_nb
from pgcloud_nb.charts import DEFAULT_INTERVAL, SANDBOX_INTERVAL, LiveChart
from pgcloud_nb.charts.catalogue import byte_scale
from pgcloud_nb.charts.style import PALETTE, ColourBook, time_limits
from pgcloud_nb.charts.views import InteractiveView, PngView
from pgcloud_nb.client import Client
from pgcloud_nb.prometheus import parse_prometheus
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.sandbox import SandboxInfo

ipympl = pytest.importorskip("ipympl.backend_nbagg")

CONNS = "PostgresServer_ActiveConnections"
COMMITS = "PostgresServer_TransactionsCommitted_Total"
SENT = "PostgresServer_NetworkTransmitBytes_Total"
MEMORY = "PostgresServer_MemoryLimitBytes"
CPU = "PostgresServer_CPUSeconds_Total"
CACHE = "PostgresServer_CacheHitRatio"
T0 = pd.Timestamp("2026-09-01", tz="UTC")
DAY = 86400.0
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def synthetic(
    n: int = 3, step: float = 60.0, *, start: int = 0
) -> tuple[Callable[[], pd.DataFrame], list[str]]:
    """A source of org scrapes ``step`` seconds apart (no network)."""
    svcs = services(n)
    k = [start]

    def source() -> pd.DataFrame:
        k[0] += 1
        stamp = T0 + pd.Timedelta(seconds=step * k[0])
        return parse_prometheus(exposition(svcs, k[0]), timestamp=stamp)

    return source, [s.id for s in svcs]


def png_chart(**kwargs: object) -> LiveChart:
    """A chart on the PNG path, drawn small (the machine is shared: text costs the most)."""
    kwargs.setdefault("figsize", (6.0, 1.6))
    kwargs.setdefault("dpi", 50)
    return LiveChart(interactive=False, **kwargs)  # type: ignore[arg-type]


def colours(chart: LiveChart) -> dict[tuple[str, str, tuple[str, ...]], str]:
    return {key: str(line.get_color()) for key, line in chart.lines.items()}


def test_one_figure_reused_with_set_data() -> None:
    source, ids = synthetic()
    figures_before = plt.get_fignums()
    chart = png_chart(source=source, services=ids[:2], metrics=[CONNS, COMMITS], window=3600)
    assert chart.redraws == 1 and chart.state == "stopped"  # no loop here: no autostart
    chart.update()
    lines = dict(chart.lines)
    # connections: 2 services × 3 states; commits need two scrapes for a rate
    assert len(lines) == 6
    chart.update()
    assert len(chart.lines) == 8
    assert all(chart.lines[k] is line for k, line in lines.items())  # moved, not redrawn anew
    assert chart.redraws == 3
    assert isinstance(chart.view, PngView)
    assert bytes(chart.view.widget.value).startswith(b"\x89PNG")
    assert plt.get_fignums() == figures_before  # never a pyplot figure
    key = next(k for k in chart.lines if k[0] == COMMITS)
    x, y = chart.lines[key].get_data()
    assert len(x) == 1 and float(y[0]) > 0  # a rate, not the raw counter
    assert key[1] in ids and key[2][0].startswith(("svc", "pg-"))  # (metric, id, (name, …))


def test_time_axis_starts_at_the_first_sample_and_grows_to_the_window() -> None:
    source, ids = synthetic(step=60.0)
    chart = png_chart(source=source, services=ids[:1], metrics=[CONNS], window=300)
    first = mdates.date2num(T0 + pd.Timedelta(seconds=60))
    chart.update()  # one sample: the axis starts there, a minute wide
    assert chart.axes[0].get_xlim() == pytest.approx((first, first + 60 / DAY))
    for _ in range(4):
        chart.update()  # 4 minutes of data fill the axis, not 4 minutes of a 10-minute one
    assert chart.axes[0].get_xlim() == pytest.approx((first, first + 240 / DAY))
    for _ in range(8):
        chart.update()
    newest = mdates.date2num(T0 + pd.Timedelta(seconds=60 * 13))
    assert chart.axes[0].get_xlim() == pytest.approx((newest - 300 / DAY, newest))
    assert time_limits(1.0, 1.0, 30.0) == pytest.approx((1.0, 1.0 + 30 / DAY))  # window < 60 s


def test_titles_units_and_the_prometheus_name() -> None:
    source, ids = synthetic()
    metrics = [CONNS, COMMITS, SENT, MEMORY, CPU, CACHE, "PostgresServer_Brand_New_Total"]
    chart = png_chart(source=source, services=ids, metrics=metrics)
    for _ in range(3):
        chart.update()
    got = {
        m: (ax.get_title(loc="left"), ax.get_title(loc="right"), ax.get_ylabel())
        for m, ax in zip(metrics, chart.axes, strict=True)
    }
    assert got[CONNS] == ("Connections, by backend state", CONNS, "connections")
    assert got[COMMITS] == ("Transactions committed", COMMITS, "transactions/s")
    # 250 000 … 900 000 bytes/s × load: KiB/s; 16 GiB-ish memory limits: GiB
    assert got[SENT][::2] == ("Network bytes sent", "KiB/s")
    sent = np.concatenate([ln.get_ydata() for k, ln in chart.lines.items() if k[0] == SENT])
    assert 1 <= sent.max() < 1024
    assert got[MEMORY][::2] == ("Memory provisioned", "GiB")
    assert got[CPU][::2] == ("CPU busy, all modes but idle", "% of provisioned cores")
    cpu = np.concatenate([ln.get_ydata() for k, ln in chart.lines.items() if k[0] == CPU])
    assert cpu.min() > 0 and cpu.max() < 100  # non-idle share of the cores, one line a service
    assert sum(k[0] == CPU for k in chart.lines) == len(ids)
    assert got[CACHE][::2] == ("Block reads served from the buffer cache", "%")
    # a metric the data sheet does not list keeps its name, and counters are still rates
    assert got["PostgresServer_Brand_New_Total"][0] == "PostgresServer_Brand_New_Total"
    assert chart.axes[-1].get_xlabel() == "time (UTC)"
    assert chart.axes[0].get_ylim()[0] == 0  # counts start at zero


def test_byte_scale_picks_the_unit_that_fits() -> None:
    assert byte_scale(512) == (1.0, "B")
    assert byte_scale(3 * 2**20) == (2**20, "MiB")
    assert byte_scale(16 * 2**30, per_second=True) == (2**30, "GiB/s")
    assert byte_scale(2**60)[1] == "PiB"


def test_colours_are_fixed_per_service_and_survive_stop_and_start() -> None:
    source, ids = synthetic(n=3)
    holder: list[dict[tuple[str, str, tuple[str, ...]], str]] = []

    async def scenario() -> LiveChart:
        # the services in an order of the caller's: colours follow it, not the names
        chart = png_chart(source=source, services=[ids[2], ids[0], ids[1]], metrics=[CONNS])
        chart.interval = 0.02
        chart.start()
        await _until(lambda: chart.redraws >= 3)
        holder.append(colours(chart))
        chart.stop()
        picture = bytes(chart.view.widget.value)
        await asyncio.sleep(0.1)
        # stop keeps the last picture and its lines; no more scrapes
        assert chart.state == "stopped" and chart.lines and chart.history.n_scrapes >= 2
        assert bytes(chart.view.widget.value) == picture
        chart.start()  # a new run: fresh data, the same colours
        await _until(lambda: chart.history.n_scrapes >= 2)
        holder.append(colours(chart))
        chart.close()
        return chart

    chart = asyncio.run(scenario())
    before, after = holder
    assert before == after
    by_service = {key[1]: colour for key, colour in before.items()}
    assert [by_service[i] for i in (ids[2], ids[0], ids[1])] == list(PALETTE[:3])
    assert chart.state == "closed"


def test_one_service_colours_its_label_values_and_a_returning_series_keeps_its_colour() -> None:
    svcs = services(1)
    texts = [exposition(svcs, k) for k in range(1, 4)]
    # the second scrape lacks the "idle in transaction" series; the third has it again
    texts[1] = "\n".join(
        line for line in texts[1].splitlines() if "idle in transaction" not in line
    )
    stamps = iter(range(1, 4))

    def source() -> pd.DataFrame:
        i = next(stamps)
        return parse_prometheus(texts[i - 1], timestamp=T0 + pd.Timedelta(seconds=60 * i))

    chart = png_chart(source=source, services=[svcs[0].id], metrics=[CONNS], window=50)
    chart.update()
    first = colours(chart)
    assert len(set(first.values())) == 3  # active, idle, idle in transaction: three colours
    chart.update()  # window 50 s: the first scrape ages out; one series is gone
    assert len(chart.lines) == 2
    chart.update()
    assert colours(chart) == first
    legend = [t.get_text() for t in chart.axes[0].get_legend().get_texts()]
    assert legend == ["active", "idle", "idle in transaction"]


def test_colour_book_is_stable_and_order_free() -> None:
    book = ColourBook(["b"])
    book.meet(["z", "a"])
    assert [book.index(k) for k in ("b", "a", "z")] == [0, 1, 2]
    other = ColourBook(["b"])
    other.meet(["a", "z"])  # met in another order: the same colours
    assert [other.colour(k) for k in ("b", "a", "z")] == [book.colour(k) for k in "baz"]


def test_png_frames_are_transparent_and_readable_on_both_themes(
    figures: dict[str, str],
) -> None:
    source, ids = synthetic()
    chart = png_chart(
        source=source, services=ids, metrics=[CONNS, COMMITS, SENT, CPU], figsize=(9.0, 2.4), dpi=96
    )
    for _ in range(6):
        chart.update()
    img = Image.open(io.BytesIO(bytes(chart.view.widget.value))).convert("RGBA")
    pixels = np.asarray(img)
    assert pixels[0, 0, 3] == 0 and pixels[-1, -1, 3] == 0  # no background of its own
    drawn = pixels[pixels[..., 3] > 200][:, :3].astype(int)
    assert len(drawn) > 1000
    ARTIFACTS.mkdir(exist_ok=True)
    for theme, background in (("light", (255, 255, 255)), ("dark", (17, 17, 17))):
        page = Image.new("RGBA", img.size, (*background, 255))
        page.alpha_composite(img)
        page.save(ARTIFACTS / f"chart-{theme}.png")
        # every drawn pixel differs clearly from the page it sits on
        gap = np.abs(drawn.mean(axis=1) - np.mean(background))
        assert np.percentile(gap, 5) > 60, theme
    figures["LiveChart PNG frame (4 panels, 3 services)"] = (
        f"{len(chart.view.widget.value) // 1024} KiB"
    )
    chart.close()


def test_stop_keeps_the_drawing_and_close_removes_it() -> None:
    source, ids = synthetic()
    chart = png_chart(source=source, services=ids, metrics=[CONNS])
    chart.update()
    chart.update()
    chart.stop()
    assert chart.lines and chart.view.widget.value and chart.history.n_scrapes == 2
    chart.close()
    assert chart.state == "closed" and not chart.lines


def test_window_bounds_memory_and_lines() -> None:
    source, ids = synthetic(step=60.0)
    chart = png_chart(source=source, services=ids[:1], metrics=[CONNS], window=600)
    for _ in range(15):
        chart.update()
    assert chart.history.n_scrapes <= 11  # 600 s of 60 s scrapes
    x, _ = next(iter(chart.lines.values())).get_data()
    assert len(x) <= 11
    assert len(chart.axes[0].lines) == len(chart.lines) == 3


def test_where_and_service_filters() -> None:
    source, ids = synthetic()
    chart = png_chart(source=source, services=[ids[1]], metrics=[CONNS], where={"state": "active"})
    chart.update()
    assert len(chart.lines) == 1
    ((metric, sid, parts),) = chart.lines
    assert metric == CONNS and sid == ids[1] and parts[1] == "active"


def test_repeated_scrapes_do_not_redraw() -> None:
    svcs = services(1)
    text = exposition(svcs, 1)
    chart = png_chart(source=lambda: text, metrics=[CONNS])
    assert chart.update() is True
    assert chart.update() is False  # the API refreshes once a minute: a repeat is dropped
    assert chart.redraws == 2 and chart.scrapes == 2


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait on the loop until ``check()`` (the machine may be busy: no fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_start_pause_stop_and_close_on_a_loop() -> None:
    source, ids = synthetic()
    holder: list[LiveChart] = []

    async def scenario() -> None:
        chart = png_chart(source=source, services=ids, metrics=[CONNS], interval=0.02)
        holder.append(chart)
        assert chart.state == "running" and chart.task is not None  # autostart on a loop
        await _until(lambda: chart.redraws >= 3)
        chart.pause_button.click()
        assert chart.state == "paused"
        paused_at = chart.redraws
        await asyncio.sleep(0.1)
        assert chart.redraws == paused_at
        chart.start_button.click()
        await _until(lambda: chart.redraws > paused_at)
        chart.stop_button.click()
        kept = chart.history.n_scrapes
        assert chart.state == "stopped" and kept and chart.lines  # the picture stays
        await asyncio.sleep(0.1)
        assert chart.history.n_scrapes == kept
        chart.start()  # a new run
        assert chart.history.n_scrapes == 0
        task = chart.task
        await asyncio.sleep(0.05)
        chart.close()
        await asyncio.sleep(0)
        assert task is not None and task.cancelled()

    asyncio.run(scenario())
    chart = holder[0]
    assert chart.state == "closed" and not chart.lines
    assert chart.errors.outputs == ()


def test_start_without_a_loop_is_refused_visibly() -> None:
    source, _ = synthetic()
    chart = png_chart(source=source)
    chart.start_button.click()
    assert "needs a running asyncio loop" in chart.errors.text


def test_a_failing_beat_is_shown_and_the_chart_goes_on() -> None:
    source, _ = synthetic()
    calls = [0]

    def flaky() -> pd.DataFrame:
        calls[0] += 1
        if calls[0] == 2:
            raise pgcloud_nb.ServerError(503, "SERVICE_UNAVAILABLE", request_id="rid-123")
        return source()

    shown: list[str] = []

    async def scenario() -> LiveChart:
        chart = png_chart(source=flaky, metrics=[CONNS], interval=0.02)
        await _until(lambda: bool(chart.errors.text))
        shown.append(chart.errors.text)
        await _until(lambda: calls[0] >= 4)
        chart.close()
        return chart

    chart = asyncio.run(scenario())
    assert "ServerError 503" in shown[0] and "rid-123" in shown[0]
    assert chart.redraws >= 3  # the beats after the failure drew
    assert chart.errors.text == ""  # and the next good beat cleared the error


@pytest.mark.parametrize("interactive", [False, True], ids=["png", "ipympl"])
def test_closed_charts_release_their_figure(interactive: bool) -> None:
    source, _ = synthetic()
    gc.collect()
    before = sum(isinstance(o, Figure) for o in gc.get_objects())
    for _ in range(5):
        chart = LiveChart(source=source, metrics=[CONNS], interactive=interactive)
        chart.update()
        chart.close()
    del chart
    gc.collect()
    assert sum(isinstance(o, Figure) for o in gc.get_objects()) == before


# -- the interactive path (ipympl), headless ------------------------------------------


def interactive_chart() -> tuple[LiveChart, list[dict[str, object]]]:
    """A chart on ipympl's canvas, with the messages its canvas sends recorded."""
    source, ids = synthetic()
    chart = LiveChart(
        source=source,
        services=ids[:2],
        metrics=[CONNS, COMMITS],
        interactive=True,
        figsize=(6.0, 1.6),
        dpi=50,
    )
    sent: list[dict[str, object]] = []
    canvas = chart.view.widget
    canvas.send = lambda content, buffers=None: sent.append({**content, "buffers": buffers})
    return chart, sent


def browser_says(chart: LiveChart, content: dict[str, object]) -> None:
    """Deliver a message as ipympl's browser side sends it."""
    canvas = chart.view.widget
    canvas._handle_message(canvas, content, [])


def test_interactive_chart_is_ipympls_canvas_and_draws_on_request() -> None:
    figures_before = plt.get_fignums()
    chart, sent = interactive_chart()
    assert isinstance(chart.view, InteractiveView)
    assert isinstance(chart.children[1], ipympl.Canvas) and chart.follow_button in (
        chart.children[0].children
    )
    chart.update()
    chart.update()
    # no browser has shown it yet: every redraw is rendered into the widget's saved state,
    # as a data URL the browser's <img> can load, and no frame is sent (before
    # 'initialized' ipympl would send raw RGBA as the PNG: a broken image, a 0x0 canvas)
    url = chart.view.widget._data_url
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
    assert not any(m.get("buffers") for m in sent)
    browser_says(chart, {"type": "initialized"})
    sent.clear()
    chart.update()  # now a redraw only asks the browser to ask for a frame
    assert [m["data"] for m in sent] == ['{"type": "draw"}'] and not sent[0]["buffers"]
    browser_says(chart, {"type": "draw"})
    frames = [m["buffers"][0] for m in sent if m.get("buffers")]  # type: ignore[index]
    assert len(frames) == 1 and bytes(frames[0]).startswith(b"\x89PNG")
    assert plt.get_fignums() == figures_before
    chart.close()
    assert not chart.view.widget.comm and not chart.view.manager.toolbar.comm


# JupyterLab's output area at a 1,200 px window with the file browser open, and what
# ipympl's toolbar beside the canvas takes (its buttons are 32 px; a margin for borders).
NARROW_OUTPUT, TOOLBAR = 768, 48


@pytest.mark.parametrize("interactive", [True, False])
def test_the_figure_and_its_legends_fit_a_narrow_notebook(interactive: bool) -> None:
    """ipympl's canvas cannot shrink with the output area as a PNG frame does: by default
    it is laid out narrow enough that canvas, toolbar and every legend are inside 768 px.
    PNG frames keep the 9-inch figure (the picture shrinks); their legends are inside it."""
    source, ids = synthetic(3)
    chart = LiveChart(
        source=source, services=ids, metrics=[CONNS, COMMITS], interactive=interactive
    )
    for _ in range(3):
        chart.update()
    figure = chart.figure
    width = figure.get_size_inches()[0] * figure.dpi
    if interactive:
        assert width + TOOLBAR <= NARROW_OUTPUT
    else:
        assert width == 9.0 * 96
    renderer = figure.canvas.get_renderer()
    for ax in chart.axes:
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) >= 3
        box = legend.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width, (box.x1, width)  # not cut on the right
    # the status line wraps under the buttons rather than run past the right edge
    assert chart.children[0].layout.flex_flow == "row wrap"
    chart.close()


def test_an_all_zero_panel_counts_from_0_to_1() -> None:
    """No connections yet: the axis reads 0 and 1, not 0.000 … 0.054."""
    text = (
        f"# TYPE {CONNS} gauge\n"
        f'{CONNS}{{postgres_service="s",postgres_service_name="a",state="active"}} 0\n'
    )
    frames = iter(
        parse_prometheus(text, timestamp=T0 + pd.Timedelta(seconds=10 * k)) for k in range(3)
    )
    chart = png_chart(source=lambda: next(frames), metrics=[CONNS])
    for _ in range(3):
        chart.update()
    assert chart.axes[0].get_ylim() == (0.0, 1.0)
    chart.close()


def test_hover_shows_the_value_and_unit_under_the_mouse() -> None:
    chart, _ = interactive_chart()
    for _ in range(3):
        chart.update()
    canvas = chart.view.widget
    key = next(k for k in chart.lines if k[0] == COMMITS)
    line = chart.lines[key]
    x, y = line.get_data()
    px, py = chart.axes[1].transData.transform((x[-1], y[-1]))
    canvas.callbacks.process(
        "motion_notify_event", MouseEvent("motion_notify_event", canvas, px - 3, py - 2)
    )
    label = chart.view.hover.labels[chart.axes[1]]
    assert label.get_visible()
    text = label.get_text()
    assert key[2][0] in text and f"{y[-1]:,.4g} transactions/s" in text and "UTC" in text
    far = chart.axes[1].transAxes.transform((0.5, 0.5)) + 2000
    canvas.callbacks.process("motion_notify_event", MouseEvent("motion_notify_event", canvas, *far))
    assert not label.get_visible()
    chart.close()


def test_a_zoom_is_kept_until_follow_or_home() -> None:
    chart, _ = interactive_chart()
    for _ in range(4):
        chart.update()
    lo, hi = chart.axes[0].get_xlim()
    zoom = (lo, lo + (hi - lo) / 3)
    chart.axes[0].set_xlim(*zoom)  # what the toolbar's zoom does
    chart.update()
    assert not chart.panels.following and chart.axes[0].get_xlim() == pytest.approx(zoom)
    browser_says(chart, {"type": "toolbar_button", "name": "home"})  # the toolbar's home
    assert chart.panels.following
    newest = chart.axes[0].get_xlim()[1]
    assert newest == pytest.approx(mdates.date2num(T0 + pd.Timedelta(seconds=300)))
    chart.axes[1].set_ylim(0, 1)
    chart.update()
    assert chart.axes[1].get_ylim() == (0, 1)
    chart.follow_button.click()
    assert chart.panels.following and chart.axes[1].get_ylim()[1] > 1
    chart.close()


def test_interactive_none_picks_ipympl_when_installed() -> None:
    source, _ = synthetic()
    chart = LiveChart(source=source, interactive=None)
    assert isinstance(chart.view, InteractiveView)
    chart.close()


def test_png_frames_are_the_default() -> None:
    source, _ = synthetic()
    chart = LiveChart(source=source)
    assert isinstance(chart.view, PngView)
    chart.close()


# -- against the sandbox ------------------------------------------------------------


def test_interval_defaults_and_budget(sandbox: SandboxInfo) -> None:
    near = pgcloud_nb.connect(
        api_key=sandbox.key_id,
        api_secret=sandbox.key_secret,
        org_id=sandbox.org_id,
        base_url=sandbox.url,
        budget=Budget(10, 10),
    )
    assert LiveChart(near).interval == SANDBOX_INTERVAL
    # the chart alone takes at most 20% of 10 requests / 10 s: one request per 5 s
    assert LiveChart(near).effective_interval() == pytest.approx(5.0)
    far = pgcloud_nb.connect(
        api_key="k",
        api_secret="s",
        org_id=str(uuid.uuid4()),
        base_url="https://api.clickhouse.cloud",
        budget=Budget(10, 10),
    )
    assert LiveChart(far).interval == DEFAULT_INTERVAL == 60.0


@pytest.mark.timeout(180)
def test_live_chart_on_the_sandbox(pg: Client) -> None:
    a = pg.wait(
        pg.create_service(name="chart-a", region="us-east-1", size="r8gd.large").id, progress=False
    )
    b = pg.wait(
        pg.create_service(name="chart-b", region="us-east-1", size="r8gd.large").id, progress=False
    )
    try:
        one = LiveChart(pg, a.id, [CONNS])
        before = pg.request_count
        one.update()
        assert pg.request_count == before + 1
        assert {key[2][0] for key in one.lines} == {"chart-a"}

        both = LiveChart(pg, [a, b], [CONNS, "PostgresServer_CacheHitRatio"])
        before = pg.request_count
        both.update()  # several services: one org-wide request
        assert pg.request_count == before + 1
        names = {key[2][0] for key in both.lines}
        assert names == {"chart-a", "chart-b"}
    finally:
        for svc in (a, b):
            pg.delete_service(svc.id)
