"""The seed's "Real-Time Stream Analytics" snippet, on trio.

A stream of model responses (some slow, a few failing) is monitored as in the seed: every
event is recorded in the ``MetricsCollector``, the alert rules are evaluated and the
dashboard gets the current figures. A second part shows the pipeline form: the seed's
``AIStreamingPipeline`` adds the collector as a monitor and reads ``throughput`` /
``avg_latency`` while results stream, with nothing recorded per item.
"""

from __future__ import annotations

import os
import random

import trio

from haive.dataflow import Result, StreamingPipeline, TransformNode
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.streaming import (
    Alert,
    AlertManager,
    BackpressureMetric,
    Dashboard,
    ErrorRateMetric,
    Histogram,
    LatencyMetric,
    LineChart,
    MetricsCollector,
    StreamAnalytics,
    ThroughputMetric,
)

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
EVENTS = 400 if QUICK else 5000

# Initialize stream analytics
analytics = StreamAnalytics()

# Configure metrics collection
metrics = MetricsCollector(
    {
        "throughput": ThroughputMetric(window="1m"),
        "latency": LatencyMetric(percentiles=[50, 95, 99]),
        "error_rate": ErrorRateMetric(threshold=0.01),
        "backpressure": BackpressureMetric(),
    }
)

# Set up alerting
alerts = AlertManager()


@alerts.rule("high_latency")
async def check_latency(metrics):
    """Alert on high latency."""
    if metrics.latency.p99 > 1000:  # 1 second
        return Alert(
            severity="warning",
            message=f"High latency detected: {metrics.latency.p99}ms",
            suggested_action="Scale up processing nodes",
        )
    return None


@alerts.rule("error_spike")
async def check_errors(metrics):
    """Alert on error rate spike."""
    if metrics.error_rate.current > 0.05:  # 5% errors
        return Alert(
            severity="critical",
            message=f"Error rate spike: {metrics.error_rate.current:.2%}",
            suggested_action="Investigate error logs immediately",
        )
    return None


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

notified: list[Alert] = []


async def notify_ops_team(alert: Alert) -> None:
    notified.append(alert)
    print(f"  -> ops notified: [{alert.severity}] {alert.message}")


async def model_responses():
    """Responses of a model service: latency in ms, 2 % failures, then an outage."""
    rng = random.Random(7)
    for i in range(EVENTS):
        outage = i > EVENTS * 3 // 4
        latency = rng.lognormvariate(4.0, 0.5) * (40 if outage else 1)
        failed = rng.random() < (0.3 if outage else 0.02)
        yield {"request": i, "latency_ms": latency, "success": not failed}
        await trio.sleep(0.0005)


# Monitor stream
async def monitor_stream(stream):
    """Monitor stream with analytics."""
    async for event in stream:
        # Collect metrics
        await metrics.record(event)

        # Check alerts
        alerts_triggered = await alerts.evaluate(metrics)
        for alert in alerts_triggered:
            await notify_ops_team(alert)

        # Update dashboard
        await dashboard.update(metrics.get_current())


class AIStreamingPipeline:
    """The seed's pipeline wrapper: metrics through a monitor, not per-item calls."""

    def __init__(self, name: str) -> None:
        self.pipeline = StreamingPipeline(name)
        self.metrics = MetricsCollector(interval=0.05)

    def add_processor(self, processor) -> None:
        self.pipeline.add_node(processor)

    async def process_stream(self, source) -> tuple[int, int]:
        self.pipeline.set_source(source)
        self.pipeline.add_monitor(self.metrics)
        processed = errors = 0
        async with self.pipeline.run() as stream:
            async for result in stream:
                if result.success:
                    processed += 1
                else:
                    errors += 1
                if processed and processed % 500 == 0:
                    print(
                        f"  processed {processed}, errors {errors}, "
                        f"throughput {self.metrics.throughput.per_second:,.0f}/s, "
                        f"avg latency {self.metrics.avg_latency:.2f} ms"
                    )
        return processed, errors


async def main() -> None:
    print(f"monitoring {EVENTS} model responses")
    await monitor_stream(model_responses())
    snapshot = metrics.get_current()
    print(
        f"throughput total {snapshot.throughput.total}, "
        f"latency p50 {snapshot.latency.p50:.0f} ms / p99 {snapshot.latency.p99:.0f} ms, "
        f"error rate {snapshot.error_rate.current:.2%}"
    )
    print("active alerts:", sorted(alerts.active))
    assert snapshot.throughput.total == EVENTS
    assert {a.severity for a in notified} == {"warning", "critical"}
    assert dashboard.updates == EVENTS

    print("pipeline with a metrics monitor")
    ai = AIStreamingPipeline("document-processor")

    def embed(text: str) -> int:
        if text.endswith("13"):
            raise ValueError("unlucky document")
        return len(text)

    ai.add_processor(TransformNode(name="chunk", transform_fn=str.strip))
    ai.add_processor(TransformNode(name="embed", transform_fn=embed))
    processed, errors = await ai.process_stream(
        IterableSource(f" doc-{i} " for i in range(2000 if QUICK else 20000))
    )
    snap = ai.metrics.get_current()
    print(
        f"  done: {processed} processed, {errors} failed; e2e p99 {snap.latency.p99:.2f} ms; "
        f"node latency p50 {snap.latency.nodes['document-processor/embed'].p50:.2f} ms"
    )
    assert errors == snap.error_rate.errors and processed == snap.throughput.total
    assert isinstance(analytics, StreamAnalytics) and Result.ok(1).success


if __name__ == "__main__":
    trio.run(main)
