"""The seed's real-time dashboard snippet, on trio.

Serves the ``streaming-analytics`` dashboard on 127.0.0.1 (a free port): the page updates
live over a WebSocket, ``/metrics`` is the Prometheus exposition and ``/healthz`` the health
check, all on one port. A pipeline runs meanwhile; the example then reads the page, the
metrics and one live frame the way a browser and a Prometheus scraper would, and exits.
Without ``HAIVE_EXAMPLE_QUICK`` it keeps serving for 30 s: open the printed address.
"""

from __future__ import annotations

import os

import httpx
import orjson
import trio
from websockets.trio.client import connect

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.io.sources import DataSource
from haive.dataflow.streaming import (
    Alert,
    AlertManager,
    Dashboard,
    Histogram,
    LineChart,
    MetricsCollector,
    StreamAnalytics,
)

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
SECONDS = 2.0 if QUICK else 30.0

# Real-time dashboard
dashboard = Dashboard("streaming-analytics")
dashboard.add_widget(
    "throughput_chart",
    LineChart(metric="throughput", title="Stream Throughput", refresh_interval=1000),
)
dashboard.add_widget(
    "latency_histogram",
    Histogram(
        metric="latency",
        title="Processing Latency Distribution",
        buckets=[10, 50, 100, 500, 1000, 5000],
    ),
)
dashboard.add_widget("latency_chart", LineChart(metric="latency", title="Latency percentiles (ms)"))

metrics = MetricsCollector()
alerts = AlertManager()


@alerts.rule("high_latency")
async def check_latency(metrics):
    """Alert on high latency."""
    if metrics.latency.p99 > 20:  # low on purpose, so the page shows an alert
        return Alert(
            severity="warning",
            message=f"High latency detected: {metrics.latency.p99:.1f}ms",
            suggested_action="Scale up processing nodes",
        )
    return None


class Ticks(DataSource):
    """Batches of market ticks every 20 ms for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def batches(self, chunk_size):
        n = 0
        while n < self.seconds * 50:
            yield [{"symbol": "AAPL", "price": 100 + (n % 7)} for _ in range(20)]
            n += 1
            await trio.sleep(0.02)


async def score(tick: dict) -> dict:
    await trio.sleep(0.0002)
    return {**tick, "signal": tick["price"] > 103}


async def main() -> None:
    pipeline = StreamingPipeline("market-feed")
    pipeline.set_source(Ticks(SECONDS))
    pipeline.add_processor(TransformNode(name="score", transform_fn=score))
    analytics = StreamAnalytics(metrics, alerts, dashboard, interval=0.25)
    analytics.watch(pipeline)

    async with trio.open_nursery() as nursery:
        url = await nursery.start(dashboard.serve)
        print(f"dashboard: {url}  (Prometheus: {url}metrics, health: {url}healthz)")
        nursery.start_soon(pipeline.execute)
        await trio.sleep(min(SECONDS, 1.5))

        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            print(
                f"GET /         {page.status_code} {page.headers['content-type']}, {len(page.content):,} bytes"
            )
            health = (await client.get(url + "healthz")).json()
            print(f"GET /healthz  {health['status']}, {health['clients']} live page(s)")
            prometheus = (await client.get(url + "metrics")).text
            lines = [
                line for line in prometheus.splitlines() if line.startswith("haive_pipeline_items")
            ]
            print("GET /metrics ", *lines, sep="\n  ")

        async with connect(dashboard.ws_url) as websocket:
            init = orjson.loads(await websocket.recv())
            print("widgets:", ", ".join(w["title"] for w in init["layout"]))
            frame = orjson.loads(await websocket.recv())
            fig = frame["figures"]
            print(
                f"live frame: {fig['throughput']['per_second']:,.0f} ev/s, "
                f"p99 {fig['latency']['p99']:.2f} ms, alerts {[a['rule'] for a in frame['alerts']]}"
            )
        await trio.sleep(max(0.0, SECONDS - 1.5))
        nursery.cancel_scope.cancel()
    assert page.status_code == 200 and health["status"] == "ok" and lines


if __name__ == "__main__":
    trio.run(main)
