"""The dashboard server: page, /metrics, /healthz, /api/snapshot and live WebSocket frames."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
from haive_plugin_observability import (
    Alert,
    AlertManager,
    Dashboard,
    Histogram,
    LineChart,
    MetricsCollector,
    StreamAnalytics,
)
from websockets.trio.client import connect

from haive.dataflow.errors import ConfigError


async def test_pages_and_endpoints() -> None:
    metrics = MetricsCollector()
    dashboard = Dashboard("http-test", metrics=metrics)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(dashboard.serve)
        assert url.startswith("http://127.0.0.1:")
        await metrics.record({"latency_ms": 4})
        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert (
                b"new WebSocket" in page.content
                and b"http://" not in page.content.split(b"<script>")[1]
            )
            prom = await client.get(url + "metrics")
            assert prom.status_code == 200 and prom.headers["content-type"].startswith("text/plain")
            assert 'haive_throughput_events_total{metric="throughput"} 1.0' in prom.text
            health = (await client.get(url + "healthz")).json()
            assert health["status"] == "ok" and health["dashboard"] == "http-test"
            snapshot = (await client.get(url + "api/snapshot")).json()
            assert snapshot["type"] == "init" and snapshot["name"] == "http-test"
            assert (await client.get(url + "nope")).status_code == 404
            assert (await client.get(url + "ws")).status_code == 426
        nursery.cancel_scope.cancel()


async def test_websocket_frames_follow_updates_and_alerts() -> None:
    metrics = MetricsCollector()
    alerts = AlertManager()
    state = {"bad": False}

    @alerts.rule("error_spike")
    def check(m: Any) -> Alert | None:
        return Alert("critical", "Error rate spike", "Investigate") if state["bad"] else None

    dashboard = Dashboard("ws-test")
    dashboard.add_widget(
        "tp", LineChart(metric="throughput", title="Throughput", refresh_interval=1)
    )
    dashboard.add_widget("lat", Histogram(metric="latency", title="Latency", buckets=[10, 100]))
    analytics = StreamAnalytics(metrics, alerts, dashboard, interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(dashboard.serve)
        async with connect(dashboard.ws_url) as ws:
            init = orjson.loads(await ws.recv())
            assert init["type"] == "init" and [w["id"] for w in init["layout"]] == ["tp", "lat"]
            assert init["layout"][1]["labels"] == ["<=10", "10-100", ">100"]
            for ms in (5, 50, 500):
                await metrics.record({"latency_ms": ms})
            await analytics.tick()
            frame = orjson.loads(await ws.recv())
            assert frame["type"] == "update"
            assert frame["widgets"]["lat"]["values"] == [1, 1, 1]
            assert frame["figures"]["throughput"]["total"] == 3
            assert 0 < frame["widgets"]["tp"]["points"][-1][1]["per_second"] <= 30.0
            assert frame["alerts"] == []
            state["bad"] = True
            await analytics.tick()
            with trio.fail_after(5):
                while True:
                    frame = orjson.loads(await ws.recv())
                    if frame["alerts"]:
                        break
            assert frame["alerts"][0]["rule"] == "error_spike"
            assert frame["alerts"][0]["suggested_action"] == "Investigate"
            assert dashboard.clients == 1
        nursery.cancel_scope.cancel()


def test_bad_widgets_and_unstarted_dashboards() -> None:
    with pytest.raises(ConfigError, match="increasing"):
        Histogram(metric="latency", buckets=[50, 10])
    with pytest.raises(ConfigError, match="refresh_interval"):
        LineChart(metric="throughput", refresh_interval=0)
    dashboard = Dashboard("x")
    dashboard.add_widget("a", LineChart(metric="throughput"))
    with pytest.raises(ConfigError, match="already has"):
        dashboard.add_widget("a", LineChart(metric="throughput"))
    with pytest.raises(ConfigError, match="LineChart or Histogram"):
        dashboard.add_widget("b", "chart")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not serving"):
        _ = dashboard.url
    with pytest.raises(ConfigError, match="needs a snapshot"):
        trio.run(dashboard.update)
