"""Each metric under trio's MockClock: windows, percentiles, error rate, backpressure."""

from __future__ import annotations

import orjson
import pytest
import trio
from haive_plugin_observability import (
    BackpressureMetric,
    ErrorRateMetric,
    LatencyMetric,
    Metric,
    MetricsCollector,
    ThroughputMetric,
)
from haive_plugin_observability.metrics import is_error, latency_of

from haive.dataflow import BackpressureManager, BoundedBuffer, Event, Result
from haive.dataflow.errors import ConfigError


async def test_throughput_windows_follow_the_rate_and_decay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = MetricsCollector({"throughput": ThroughputMetric(window="10s")})
    # 100 events/s for 30 s, then 400 events/s for 2 s.
    for _ in range(300):
        await metrics.record_many([{}] * 10)
        await trio.sleep(0.1)
    t = metrics.throughput
    assert t.per_second == pytest.approx(100, rel=0.05)
    assert t.current == pytest.approx(100, rel=0.05)
    assert t.per_minute == pytest.approx(100, rel=0.05)
    for _ in range(20):
        await metrics.record_many([{}] * 40)
        await trio.sleep(0.1)
    assert t.per_second == pytest.approx(400, rel=0.05)
    assert 100 < t.current < 400
    assert t.total == 3000 + 800
    await trio.sleep(61)
    assert t.per_second == 0.0 and t.current == 0.0 and t.per_minute == 0.0
    assert t.total == 3800
    assert f"{t:.0f}" == "0"


async def test_latency_percentiles_over_the_window(autojump_clock: trio.testing.MockClock) -> None:
    metrics = MetricsCollector(
        {"latency": LatencyMetric(percentiles=[50, 95, 99, 99.9], window="10s")}
    )
    for ms in range(1, 1001):
        await metrics.record({"latency_ms": ms})
    lat = metrics.latency
    assert lat.p50 == pytest.approx(500, rel=0.01)
    assert lat.p95 == pytest.approx(950, rel=0.01)
    assert lat.p99 == pytest.approx(990, rel=0.01)
    assert lat.p99_9 == pytest.approx(999, rel=0.01)
    assert lat.max == 1000.0 and lat.count == 1000
    assert lat.mean == pytest.approx(500.5, rel=0.001)
    snap = metrics.get_current().latency
    assert snap.percentiles.keys() >= {"p50", "p95", "p99", "p99_9"}
    assert snap.p99 == lat.p99
    below_100, middle, above_500 = snap.distribution([100, 500])
    assert below_100 == 100 and middle + above_500 == 900
    assert middle == pytest.approx(400, abs=400 * 0.01)
    # Ten seconds later the window is empty again, the cumulative histogram is not.
    await trio.sleep(11)
    await metrics.record({"latency": 0.002})
    assert metrics.latency.count == 1 and metrics.latency.p99 == pytest.approx(2.0, rel=0.01)
    assert metrics.latency.total_count == 1001
    with pytest.raises(AttributeError):
        _ = metrics.latency.pxyz


async def test_error_rate_window_and_threshold(autojump_clock: trio.testing.MockClock) -> None:
    metrics = MetricsCollector({"error_rate": ErrorRateMetric(threshold=0.01, window="5s")})
    for i in range(1000):
        ok = i % 50 != 0  # 2 %
        await metrics.record(Result.ok(i) if ok else Result.failed(i, ValueError("bad")))
        if i % 100 == 99:
            await trio.sleep(0.1)
    er = metrics.error_rate
    assert er.current == pytest.approx(0.02)
    assert er.exceeded and er.errors == 20 and er.total == 1000
    await trio.sleep(6)
    await metrics.record({"status": "ok"})
    assert er.current == 0.0 and not er.exceeded
    assert metrics.get_current().error_rate.errors == 20


def test_events_are_read_for_latency_and_errors() -> None:
    assert latency_of({"latency_ms": 12}) == 0.012
    assert latency_of(Event(type="x", metadata={"latency_ms": 5})) == 0.005
    assert latency_of(Event(type="x", timestamp=1.7e9), wall_now=1.7e9 + 0.25) == 0.25
    assert latency_of(Result.ok(1)) is None
    assert (
        is_error(ValueError("x")) and is_error({"error": "boom"}) and is_error({"success": False})
    )
    assert not is_error(Result.ok(1)) and not is_error(None) and not is_error("error")


async def test_backpressure_of_watched_buffers(autojump_clock: trio.testing.MockClock) -> None:
    bp = BackpressureMetric(window="10s")
    metrics = MetricsCollector({"backpressure": bp})
    manager = BackpressureManager()
    ingest = manager.buffer("ingest", buffer_size=100, strategy="drop_oldest")
    bp.watch_manager(manager)
    blocking = BoundedBuffer(10, "block", name="slow")
    bp.watch(blocking)
    metrics.sample()
    ingest.put_nowait_batch(range(150))

    async def consumer() -> None:
        for _ in range(5):
            await trio.sleep(1)
            blocking.get_nowait_batch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await blocking.put_batch(range(50))  # blocks while the consumer drains 10 per second
    snap = metrics.get_current().backpressure
    assert snap.edges["ingest"].dropped == 50 and snap.edges["ingest"].depth == 100
    assert snap.edges["ingest"].pressure == 1.0 and snap.max_pressure == 1.0
    slow = snap.edges["slow"]
    assert slow.blocked_count == 4
    assert slow.blocked_seconds == pytest.approx(4.0)
    assert slow.blocked_fraction == pytest.approx(4.0 / 5.0, rel=0.05)
    assert snap.dropped == 50
    assert snap.drops_per_second == pytest.approx(50 / 5.0, rel=0.05)
    await trio.sleep(30)
    later = metrics.get_current().backpressure
    assert later.blocked_fraction == 0.0 and later.drops_per_second == 0.0 and later.dropped == 50
    with pytest.raises(ConfigError):
        bp.watch(object())


async def test_collector_access_snapshot_and_json(autojump_clock: trio.testing.MockClock) -> None:
    metrics = MetricsCollector()
    assert list(metrics) == ["throughput", "latency", "error_rate", "backpressure"]
    await metrics.record({"latency_ms": 3, "success": True})
    snap = metrics.get_current()
    assert snap.throughput.total == 1 and snap["latency"].count == 1
    data = orjson.loads(orjson.dumps(snap.to_dict()))
    assert data["kinds"]["latency"] == "latency"
    assert data["metrics"]["latency"]["percentiles"]["p99"] == pytest.approx(3.0, rel=0.01)
    with pytest.raises(AttributeError, match="metrics: throughput"):
        _ = metrics.nope
    with pytest.raises(AttributeError, match="no metric 'nope'"):
        _ = snap.nope
    assert metrics.avg_latency == pytest.approx(3.0, rel=0.01)


def test_collector_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="must be a Metric"):
        MetricsCollector({"throughput": "fast"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="identifier"):
        MetricsCollector({"record": ThroughputMetric()})
    with pytest.raises(ConfigError, match="percentiles"):
        LatencyMetric(percentiles=[0])
    with pytest.raises(ConfigError, match="threshold"):
        ErrorRateMetric(threshold=2)
    with pytest.raises(ConfigError, match="duration"):
        ThroughputMetric(window="soon")
    with pytest.raises(ConfigError, match="mapping"):
        MetricsCollector([ThroughputMetric()])  # type: ignore[arg-type]
    metrics = MetricsCollector({"t": ThroughputMetric()})
    with pytest.raises(ConfigError, match="already"):
        metrics.add_metric("t", ThroughputMetric())


async def test_custom_metrics_and_gauges(autojump_clock: trio.testing.MockClock) -> None:
    class Largest(Metric):
        kind = "largest"

        def __init__(self) -> None:
            self.value = 0

        def observe(self, event: object, now: float) -> None:
            if isinstance(event, dict):
                self.value = max(self.value, event.get("size", 0))

        def snapshot(self, now: float) -> int:
            return self.value

    metrics = MetricsCollector({"largest": Largest()})
    metrics.add_gauges("queue", lambda: {"depth": 7})
    await metrics.record({"size": 9})
    await metrics.record({"size": 4})
    snap = metrics.get_current()
    assert snap.largest == 9 and snap.gauges == {"queue.depth": 7.0}
