"""LiveChart: one figure reused, a bounded window, the loop task and its controls."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Callable

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from fixtures.synth import exposition, services
from matplotlib.figure import Figure

import pgcloud_nb
from pgcloud_nb.charts import DEFAULT_INTERVAL, SANDBOX_INTERVAL, LiveChart
from pgcloud_nb.client import Client
from pgcloud_nb.prometheus import parse_prometheus
from pgcloud_nb.ratelimit import Budget
from pgcloud_nb.sandbox import SandboxInfo

CONNS = "PostgresServer_ActiveConnections"
COMMITS = "PostgresServer_TransactionsCommitted_Total"
T0 = pd.Timestamp("2026-09-01", tz="UTC")


def synthetic(n: int = 3, step: float = 60.0) -> tuple[Callable[[], pd.DataFrame], list[str]]:
    """A source of org scrapes ``step`` seconds apart (no network)."""
    svcs = services(n)
    k = [0]

    def source() -> pd.DataFrame:
        k[0] += 1
        stamp = T0 + pd.Timedelta(seconds=step * k[0])
        return parse_prometheus(exposition(svcs, k[0]), timestamp=stamp)

    return source, [s.id for s in svcs]


def test_one_figure_reused_with_set_data() -> None:
    source, ids = synthetic()
    figures_before = plt.get_fignums()
    chart = LiveChart(source=source, services=ids[:2], metrics=[CONNS, COMMITS], window=3600)
    assert chart.redraws == 1 and chart.state == "stopped"  # no loop here: no autostart
    chart.update()
    lines = dict(chart.lines)
    # connections: 2 services × 3 states; commits need two scrapes for a rate
    assert len(lines) == 6
    chart.update()
    assert len(chart.lines) == 8
    assert all(chart.lines[k] is line for k, line in lines.items())  # moved, not redrawn anew
    assert chart.redraws == 3
    assert bytes(chart.image.value).startswith(b"\x89PNG")
    assert "(per second)" in chart.axes[1].get_title(loc="left")
    assert plt.get_fignums() == figures_before  # never a pyplot figure
    x, y = chart.lines[(COMMITS, next(k[1] for k in chart.lines if k[0] == COMMITS))].get_data()
    assert len(x) == 1 and float(y[0]) > 0  # a rate, not the raw counter


def test_window_bounds_memory_and_lines() -> None:
    source, ids = synthetic(step=60.0)
    chart = LiveChart(source=source, services=ids[:1], metrics=[CONNS], window=600)
    for _ in range(40):
        chart.update()
    assert chart.history.n_scrapes <= 11  # 600 s of 60 s scrapes
    x, _ = next(iter(chart.lines.values())).get_data()
    assert len(x) <= 11
    assert len(chart.axes[0].lines) == len(chart.lines) == 3


def test_where_and_service_filters() -> None:
    source, ids = synthetic()
    chart = LiveChart(source=source, services=[ids[1]], metrics=[CONNS], where={"state": "active"})
    chart.update()
    assert len(chart.lines) == 1
    ((metric, key),) = chart.lines
    assert metric == CONNS and "active" in key


def test_repeated_scrapes_do_not_redraw() -> None:
    svcs = services(1)
    text = exposition(svcs, 1)
    chart = LiveChart(source=lambda: text, metrics=[CONNS])
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
        chart = LiveChart(source=source, services=ids, metrics=[CONNS], interval=0.02)
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
        assert chart.state == "stopped" and chart.history.n_scrapes == 0
        chart.start()
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
    chart = LiveChart(source=source)
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

    async def scenario() -> LiveChart:
        chart = LiveChart(source=flaky, metrics=[CONNS], interval=0.02)
        await _until(lambda: calls[0] >= 4)
        chart.close()
        return chart

    chart = asyncio.run(scenario())
    assert "ServerError 503" in chart.errors.text and "rid-123" in chart.errors.text
    assert chart.redraws >= 3


def test_closed_charts_release_their_figure() -> None:
    source, _ = synthetic()
    gc.collect()
    before = sum(isinstance(o, Figure) for o in gc.get_objects())
    for _ in range(5):
        chart = LiveChart(source=source, metrics=[CONNS])
        chart.update()
        chart.close()
    del chart
    gc.collect()
    assert sum(isinstance(o, Figure) for o in gc.get_objects()) == before


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
        assert {key[1][0] for key in one.lines} == {"chart-a"}

        both = LiveChart(pg, [a, b], [CONNS, "PostgresServer_CacheHitRatio"])
        before = pg.request_count
        both.update()  # several services: one org-wide request
        assert pg.request_count == before + 1
        names = {key[1][0] for key in both.lines}
        assert names == {"chart-a", "chart-b"}
    finally:
        for svc in (a, b):
            pg.delete_service(svc.id)
