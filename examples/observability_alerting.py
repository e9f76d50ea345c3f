"""The seed's alerting snippet, on trio: ``@alerts.rule`` functions, deduplicated alerts,
delivery to the log, a webhook and a stream sink, plus a rule class from the plugin hook.

A local webhook receiver (127.0.0.1, a free port) stands in for the ops team's endpoint.
The monitored pipeline calls a flaky service: healthy, then a burst of failures and slow
calls, then healthy again — each alert fires once and resolves when its condition clears.
"""

from __future__ import annotations

import logging
import os
import sys

import h11
import orjson
import trio
from haive_plugin_observability import SinkNotifier, WebhookNotifier

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.streaming import (
    Alert,
    AlertManager,
    ErrorRateMetric,
    LatencyMetric,
    MetricsCollector,
    StreamAnalytics,
    ThroughputMetric,
)

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="  log: %(levelname)s %(message)s"
)
logging.getLogger("httpx").setLevel(logging.WARNING)

# Set up alerting (the seed's two rules)
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


# A reusable rule class registered by the plugin hook, enabled by name.
alerts.use("queue_saturation", max_pressure=0.95)


class Requests(DataSource):
    """One request every 10 ms for ``seconds`` seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def batches(self, chunk_size):
        for n in range(int(self.seconds * 100)):
            yield [n]
            await trio.sleep(0.01)


class Receiver:
    """A minimal HTTP endpoint (h11 on trio) that records the JSON it is POSTed."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        self.received.append(orjson.loads(body))
        await stream.send_all(conn.send(h11.Response(status_code=204, headers=[])))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        task_status.started(f"http://127.0.0.1:{port}/alerts")
        await trio.serve_listeners(self.handle, listeners)


async def main() -> None:
    phase = {"failing": False}
    seconds = 4.0 if QUICK else 12.0

    async def call_service(n: int) -> int:
        if phase["failing"]:
            await trio.sleep(0.002)
            if n % 5 == 0:
                raise ConnectionError("service unavailable")
        return n

    pipeline = StreamingPipeline("calls", on_error="skip")
    pipeline.set_source(Requests(seconds))
    pipeline.add_processor(TransformNode(name="call_service", transform_fn=call_service))

    sink = MemorySink()
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(receiver.serve)
        alerts.add_notifier("log")
        alerts.add_notifier(WebhookNotifier(url))
        alerts.add_notifier(SinkNotifier(sink))
        metrics = MetricsCollector(
            {
                "throughput": ThroughputMetric(window="1m"),
                "latency": LatencyMetric(percentiles=[50, 95, 99], window="1s"),
                "error_rate": ErrorRateMetric(threshold=0.01, window="1s"),
            },
            interval=0.1,
        )
        analytics = StreamAnalytics(metrics, alerts, interval=0.2)
        analytics.watch(pipeline)

        async def incident() -> None:
            await trio.sleep(seconds / 4)
            print("incident starts")
            phase["failing"] = True
            await trio.sleep(seconds / 4)
            print("incident over")
            phase["failing"] = False

        nursery.start_soon(incident)
        await pipeline.execute()
        await alerts.aclose()
        nursery.cancel_scope.cancel()

    print("webhook received:", [(e["status"], e["rule"]) for e in receiver.received])
    print("stream sink got:", [(e["status"], e["rule"]) for e in sink.items])
    assert [(e["status"], e["rule"]) for e in receiver.received] == [
        ("firing", "error_spike"),
        ("resolved", "error_spike"),
    ]
    assert [e["status"] for e in sink.items] == ["firing", "resolved"]
    assert alerts.active == {}


if __name__ == "__main__":
    trio.run(main)
