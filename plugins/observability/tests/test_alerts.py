"""Alert rules under MockClock: dedup, resolution, escalation, plugin rules, notifiers."""

from __future__ import annotations

import logging
from typing import Any

import h11
import orjson
import pytest
import trio
from haive_plugin_observability import (
    Alert,
    AlertEvent,
    AlertManager,
    AlertRule,
    ErrorRateMetric,
    LatencyMetric,
    MetricsCollector,
    SinkNotifier,
    StreamAnalytics,
    WebhookNotifier,
)
from haive_plugin_observability.metrics import (
    BackpressureSnapshot,
    EdgeSnapshot,
    ErrorRateSnapshot,
    LatencySnapshot,
    MetricsSnapshot,
)

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, UnknownPluginError
from haive.dataflow.plugins import get_registry
from haive.dataflow.runtime.retry import RetryPolicy


def seed_manager() -> AlertManager:
    """The seed's two rules, verbatim apart from the imports."""
    alerts = AlertManager()

    @alerts.rule("high_latency")
    async def check_latency(metrics: Any) -> Alert | None:
        if metrics.latency.p99 > 1000:  # 1 second
            return Alert(
                severity="warning",
                message=f"High latency detected: {metrics.latency.p99}ms",
                suggested_action="Scale up processing nodes",
            )
        return None

    @alerts.rule("error_spike")
    def check_errors(metrics: Any) -> Alert | None:  # a sync rule
        if metrics.error_rate.current > 0.05:  # 5% errors
            return Alert(
                severity="critical",
                message=f"Error rate spike: {metrics.error_rate.current:.2%}",
                suggested_action="Investigate error logs immediately",
            )
        return None

    return alerts


async def test_seed_rules_fire_once_and_resolve_when_clear(autojump_clock: Any) -> None:
    metrics = MetricsCollector(
        {
            "latency": LatencyMetric(percentiles=[50, 95, 99], window="10s"),
            "error_rate": ErrorRateMetric(threshold=0.01, window="10s"),
        }
    )
    alerts = seed_manager()
    events: list[AlertEvent] = []
    alerts.add_notifier(events.append)

    # Healthy traffic: nothing fires.
    for _ in range(100):
        await metrics.record({"latency_ms": 20, "success": True})
    assert await alerts.evaluate(metrics) == []

    # Slow and failing traffic: both fire, once.
    for i in range(100):
        await metrics.record({"latency_ms": 2500, "success": i % 5 != 0})
    fired = await alerts.evaluate(metrics)
    assert sorted(a.severity for a in fired) == ["critical", "warning"]
    assert set(alerts.active) == {"high_latency", "error_spike"}
    assert await alerts.evaluate(metrics) == []  # still holding: deduplicated
    assert alerts.active["error_spike"].evaluations == 2
    assert [e.status for e in events] == ["firing", "firing"]

    # Ten seconds later the windows hold only healthy traffic: both resolve.
    await trio.sleep(11)
    for _ in range(50):
        await metrics.record({"latency_ms": 10, "success": True})
    assert await alerts.evaluate(metrics) == []
    assert alerts.active == {}
    resolved = [e for e in events if e.status == "resolved"]
    assert {e.rule for e in resolved} == {"high_latency", "error_spike"}
    assert all(e.duration == pytest.approx(11, abs=0.01) for e in resolved)
    assert [e.status for e in alerts.history] == ["firing", "firing", "resolved", "resolved"]


def snap(rate: float = 0.0, p99: float = 0.0) -> MetricsSnapshot:
    return MetricsSnapshot(
        time=0.0,
        values={
            "error_rate": ErrorRateSnapshot(current=rate),
            "latency": LatencySnapshot(percentiles={"p99": p99}),
        },
    )


async def test_severity_change_fires_again(autojump_clock: Any) -> None:
    alerts = AlertManager()

    @alerts.rule("errors")
    def graded(metrics: Any) -> Alert | None:
        rate = metrics.error_rate.current
        if rate > 0.2:
            return Alert("critical", f"{rate:.0%}")
        if rate > 0.05:
            return Alert("warning", f"{rate:.0%}")
        return None

    assert [a.severity for a in await alerts.evaluate(snap(0.1))] == ["warning"]
    assert await alerts.evaluate(snap(0.12)) == []
    assert alerts.active["errors"].alert.message == "12%"  # message follows, no new event
    assert [a.severity for a in await alerts.evaluate(snap(0.5))] == ["critical"]
    assert [a.severity for a in await alerts.evaluate(snap(0.1))] == ["warning"]


async def test_failing_or_wrong_rules_are_counted_not_fatal(
    autojump_clock: Any, caplog: Any
) -> None:
    alerts = AlertManager()

    @alerts.rule("broken")
    def broken(metrics: Any) -> Alert | None:
        raise KeyError("missing")

    @alerts.rule("wrong")
    async def wrong(metrics: Any) -> Any:
        return "alarm!"

    @alerts.rule("fine")
    def fine(metrics: Any) -> Alert | None:
        return Alert("info", "ok")

    with caplog.at_level(logging.ERROR, logger="haive.alerts"):
        fired = await alerts.evaluate(snap())
    assert [a.message for a in fired] == ["ok"]
    assert alerts.rule_errors == {"broken": 1, "wrong": 1}
    assert "broken" in caplog.text and "expected an Alert or None" in caplog.text
    with pytest.raises(ConfigError, match="defined twice"):
        alerts.add_rule(fine, name="fine")
    with pytest.raises(ConfigError, match="severity"):
        Alert("panic", "x")
    # Removing a rule resolves its alert at the next evaluation.
    alerts.remove_rule("fine")
    await alerts.evaluate(snap())
    assert "fine" not in alerts.active and alerts.history[-1].status == "resolved"


async def test_plugin_rules_and_notifiers_are_registered() -> None:
    registry = get_registry()
    assert {"high_latency", "error_spike", "queue_saturation", "dropping_items"} <= set(
        registry.names("alert_rule")
    )
    assert {"log", "webhook", "sink", "callback"} <= set(registry.names("alert_notifier"))
    alerts = AlertManager(rules=["error_spike"])
    alerts.use("high_latency", threshold_ms=100)
    alerts.use("queue_saturation", name="queues", max_pressure=0.5)
    fired = await alerts.evaluate(snap(rate=0.5, p99=150.0))
    assert sorted(a.message for a in fired) == [
        "Error rate spike: 50.00%",
        "High latency detected: p99 150.0 ms (threshold 100 ms)",
    ]
    edge = EdgeSnapshot(name="p/x.in", depth=60, capacity=100)
    full = MetricsSnapshot(time=0.0, values={"bp": BackpressureSnapshot(edges={edge.name: edge})})
    assert [a.message for a in await alerts.evaluate(full)] == ["Queue p/x.in is 60% full"]
    with pytest.raises(UnknownPluginError, match="high_latency"):
        alerts.use("high_latencyy")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        alerts.use("error_spike", name="e2", treshold=0.1)
    with pytest.raises(ConfigError, match="needs settings"):
        AlertManager(notifiers=["webhook"])


async def test_rule_classes_receive_a_snapshot_even_from_a_collector(autojump_clock: Any) -> None:
    class Loud(AlertRule):
        PLUGIN_NAME = "loud"

        async def evaluate(self, metrics: MetricsSnapshot) -> Alert | None:
            assert isinstance(metrics, MetricsSnapshot)
            return Alert("info", f"{metrics.throughput.total} events")

    metrics = MetricsCollector()
    await metrics.record({})
    alerts = AlertManager()
    alerts.add_rule(Loud)
    assert [a.message for a in await alerts.evaluate(metrics)] == ["1 events"]


class WebhookServer:
    """A real HTTP/1.1 server (h11 over trio TCP) that records POSTed JSON bodies."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[Any] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Data):
                body += event.data
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                return
        self.bodies.append(orjson.loads(body))
        reply = b"ok"
        await stream.send_all(
            conn.send(
                h11.Response(status_code=self.status, headers=[("content-length", str(len(reply)))])
            )
        )
        await stream.send_all(conn.send(h11.Data(data=reply)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self.handle, listeners, task_status=task_status)


async def test_webhook_log_and_sink_delivery(caplog: Any) -> None:
    server = WebhookServer()
    sink = MemorySink()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        webhook = WebhookNotifier(f"http://127.0.0.1:{server.port}/alerts")
        alerts = AlertManager(notifiers=["log", webhook, SinkNotifier(sink)])
        state = {"rate": 0.5}

        @alerts.rule("error_spike")
        def check(metrics: Any) -> Alert | None:
            if state["rate"] > 0.05:
                return Alert("critical", "Error rate spike", "Investigate error logs immediately")
            return None

        with caplog.at_level(logging.INFO, logger="haive.alerts"):
            await alerts.evaluate(snap())
            await alerts.evaluate(snap())
            state["rate"] = 0.0
            await alerts.evaluate(snap())
        await alerts.aclose()
        nursery.cancel_scope.cancel()
    assert [b["status"] for b in server.bodies] == ["firing", "resolved"]
    assert server.bodies[0]["alert"] == {
        "severity": "critical",
        "message": "Error rate spike",
        "suggested_action": "Investigate error logs immediately",
        "labels": {},
    }
    assert webhook.delivered == 2
    assert [item["status"] for item in sink.items] == ["firing", "resolved"]
    assert "FIRING error_spike [critical]: Error rate spike" in caplog.text
    assert "RESOLVED error_spike" in caplog.text
    assert [r.levelname for r in caplog.records if r.name == "haive.alerts"] == ["CRITICAL", "INFO"]


async def test_failing_webhook_is_retried_then_counted(caplog: Any) -> None:
    server = WebhookServer(status=503)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        webhook = WebhookNotifier(
            f"http://127.0.0.1:{server.port}/",
            retry=RetryPolicy(attempts=2, backoff=0.01, jitter=0),
        )
        alerts = AlertManager(notifiers=[webhook])
        alerts.add_rule(lambda m: Alert("warning", "w"), name="always")
        with caplog.at_level(logging.ERROR, logger="haive.alerts"):
            fired = await alerts.evaluate(snap())
        nursery.cancel_scope.cancel()
    assert len(fired) == 1 and len(server.bodies) == 2
    assert alerts.notifier_failures == {"webhook": 1}
    assert "HTTP 503" in caplog.text


async def test_a_hanging_notifier_is_cut_off(autojump_clock: Any) -> None:
    async def hang(event: AlertEvent) -> None:
        await trio.sleep_forever()

    got: list[str] = []
    alerts = AlertManager(notifiers=[hang, lambda e: got.append(e.rule)], notify_timeout=2.0)
    alerts.add_rule(lambda m: Alert("warning", "w"), name="always")
    start = trio.current_time()
    await alerts.evaluate(snap())
    assert trio.current_time() - start == pytest.approx(2.0)
    assert got == ["always"] and alerts.notifier_failures == {"callback": 1}


async def test_stream_analytics_fires_during_a_run_and_resolves_after(autojump_clock: Any) -> None:
    from haive.dataflow import StreamingPipeline, TransformNode

    from .conftest import PacedSource

    analytics = StreamAnalytics(
        MetricsCollector({"error_rate": ErrorRateMetric(threshold=0.05, window="2s")}),
        AlertManager(rules=["error_spike"]),
        interval=0.5,
    )
    pipeline = StreamingPipeline("spiky", on_error="skip")
    pipeline.set_source(PacedSource(100, every=0.1))

    def flaky(x: int) -> int:
        if 30 <= x < 50:  # a two-second burst of failures
            raise RuntimeError("downstream unavailable")
        return x

    pipeline.add_processor(TransformNode(name="flaky", transform_fn=flaky))
    analytics.watch(pipeline)
    start = trio.current_time()
    await pipeline.execute()
    statuses = [(e.status, e.rule) for e in analytics.alerts.history]
    assert statuses == [("firing", "error_spike"), ("resolved", "error_spike")]
    fired, resolved = analytics.alerts.history
    # Failures start 3 s in; the first tick after that (every 0.5 s) fires. They stop 2 s
    # later and resolve once the 2 s window no longer holds them.
    assert 3.0 <= fired.at - start <= 3.6
    assert 2.0 <= resolved.at - fired.at <= 4.0
    assert analytics.ticks >= 10
