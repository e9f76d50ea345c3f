"""Metrics sampled from real running pipelines (no per-item hooks): latency, backpressure, rates."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from haive_plugin_observability import MetricsCollector

from haive.dataflow import FilterNode, StreamConfig, StreamingPipeline, StreamSink, TransformNode
from haive.dataflow.builtins.sources import IterableSource

from .conftest import PacedSource


async def sleep_then(x: Any, seconds: float) -> Any:
    await trio.sleep(seconds)
    return x


async def test_end_to_end_latency_is_exact_for_a_one_to_one_pipeline(autojump_clock: Any) -> None:
    metrics = MetricsCollector(interval=0.25)
    pipeline = StreamingPipeline("exact")
    pipeline.set_source(PacedSource(100, every=0.1))
    pipeline.add_processor(lambda x: x + 1)

    async def slow(x: int) -> int:
        return await sleep_then(x, 0.02)

    pipeline.add_processor(TransformNode(name="slow", transform_fn=slow))
    pipeline.add_monitor(metrics)
    report = await pipeline.execute()
    assert report.processed == 100
    lat = metrics.get_current().latency
    assert lat.count == 100
    assert lat.p50 == pytest.approx(20.0, rel=0.01)
    assert lat.p99 == pytest.approx(20.0, rel=0.01)
    assert lat.min == pytest.approx(20.0, rel=0.01)


async def test_filters_are_corrected_by_selectivity(autojump_clock: Any) -> None:
    metrics = MetricsCollector(interval=0.25)
    pipeline = StreamingPipeline("filtered")
    pipeline.set_source(PacedSource(1000, every=0.1, batch=10))
    pipeline.add_processor(FilterNode(name="even", filter_fn=lambda x: x % 2 == 0))

    async def slow(x: int) -> int:
        return await sleep_then(x, 0.001)

    pipeline.add_processor(TransformNode(name="slow", transform_fn=slow))
    pipeline.add_monitor(metrics)
    report = await pipeline.execute()
    assert report.processed == 500
    lat = metrics.get_current().latency
    # Each batch of 10 loses 5 to the filter and takes 5 x 1 ms: every item waits 5 ms.
    # Without the selectivity correction delivered item k would be matched with read item
    # k and latency would grow with the run (to seconds).
    assert lat.count == 500
    assert lat.p50 == pytest.approx(5.0, rel=0.02)
    assert lat.max < 6.0


async def test_backpressure_of_pipeline_edges(autojump_clock: Any) -> None:
    class SlowSink(StreamSink):
        async def write_batch(self, items: list[Any]) -> None:
            await trio.sleep(0.01 * len(items))

    metrics = MetricsCollector(interval=0.25)
    pipeline = StreamingPipeline("jam", config=StreamConfig(buffer_size=64, chunk_size=16))
    pipeline.set_source(IterableSource(range(2000)))
    pipeline.add_processor(lambda x: x * 2)
    pipeline.set_sink(SlowSink())
    pipeline.add_monitor(metrics)
    seen: list[float] = []

    async def watch() -> None:
        await trio.sleep(5)
        seen.append(metrics.get_current().backpressure.max_pressure)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await pipeline.execute()
    assert seen and seen[0] >= 0.9  # mid-run the edges are full
    snap = metrics.get_current()
    edges = snap.backpressure.edges
    assert set(edges) == {"jam/<lambda>_0.in", "jam/output"}
    assert edges["jam/output"].blocked_seconds > 10  # the node waited on the sink
    assert edges["jam/output"].max_depth == 64
    assert snap.backpressure.dropped == 0
    # Throughput follows the sink: 100 items/s.
    assert snap.throughput.total == 2000
    assert snap.pipelines["jam"].running is False
    assert snap.pipelines["jam"].processed == 2000


async def test_throughput_error_rate_and_per_node_rates_mid_run(autojump_clock: Any) -> None:
    metrics = MetricsCollector(interval=0.25)
    pipeline = StreamingPipeline("paced", on_error="skip")
    pipeline.set_source(PacedSource(5000, every=0.1, batch=100))

    def fail_some(x: int) -> int:
        if x % 20 == 0:
            raise ValueError(f"bad {x}")
        return x

    pipeline.add_processor(TransformNode(name="check", transform_fn=fail_some))
    pipeline.add_monitor(metrics)
    mid: dict[str, Any] = {}

    async def watch() -> None:
        await trio.sleep(3.05)
        snap = metrics.get_current()
        mid["per_second"] = snap.throughput.per_second
        mid["input"] = snap.throughput.input_per_second
        mid["node"] = snap.throughput.nodes["paced/check"]
        mid["errors"] = snap.error_rate.current
        mid["running"] = snap.pipelines["paced"].running

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await pipeline.execute()
    assert mid["running"] is True
    assert mid["input"] == pytest.approx(1000, rel=0.15)
    assert mid["per_second"] == pytest.approx(950, rel=0.15)
    assert mid["node"] == pytest.approx(950, rel=0.15)
    assert mid["errors"] == pytest.approx(0.05, rel=0.1)
    final = metrics.get_current()
    assert final.error_rate.errors == 250 and final.throughput.total == 4750
    assert final.error_rate.nodes == {"paced/check": 250}
    await trio.sleep(120)
    assert metrics.get_current().throughput.per_second == 0.0


async def test_one_collector_for_two_pipelines(autojump_clock: Any) -> None:
    metrics = MetricsCollector(interval=0.25)
    pipelines = []
    for name in ("a", "b"):
        p = StreamingPipeline(name)
        p.set_source(PacedSource(50, every=0.01, batch=5))
        p.add_processor(TransformNode(name="inc", transform_fn=lambda x: x + 1))
        p.add_monitor(metrics)
        pipelines.append(p)
    async with trio.open_nursery() as nursery:
        for p in pipelines:
            nursery.start_soon(p.execute)
    snap = metrics.get_current()
    assert set(snap.pipelines) == {"a", "b"}
    assert snap.throughput.total == 100
    assert {"a/inc.in", "b/inc.in"} <= set(snap.backpressure.edges)
    assert snap.latency.count == 100


def test_per_node_latency_estimates_service_time() -> None:
    """Real clock: a node that spends ~2 ms per batch shows ~2 ms node latency."""

    def busy(x: int) -> int:
        time.sleep(0.002)
        return x

    async def main() -> Any:
        metrics = MetricsCollector(interval=0.05)
        pipeline = StreamingPipeline("nodes")
        pipeline.set_source(PacedSource(40, every=0.01))
        pipeline.add_processor(TransformNode(name="busy", transform_fn=busy))
        pipeline.add_processor(TransformNode(name="quick", transform_fn=lambda x: x))
        pipeline.add_monitor(metrics)
        await pipeline.execute()
        return metrics.get_current().latency.nodes

    nodes = trio.run(main)
    assert 1.5 <= nodes["nodes/busy"].p50 <= 20.0
    assert nodes["nodes/quick"].p50 < nodes["nodes/busy"].p50


async def test_error_rate_is_not_diluted_by_a_backlog(autojump_clock: Any) -> None:
    metrics = MetricsCollector(interval=0.25)
    # Counters move per batch: a slow node taking 1024 items at once would count them as
    # taken long before it fails some of them; batches of 100 keep that small.
    pipeline = StreamingPipeline("lagging", on_error="skip", config=StreamConfig(chunk_size=100))
    pipeline.set_source(PacedSource(3000, every=0.1, batch=100))  # 1000 items/s in

    async def slow_and_flaky(x: int) -> int:
        await trio.sleep(0.002)  # 500 items/s out: a growing backlog
        if x % 4 == 0:
            raise RuntimeError("flaky")
        return x

    pipeline.add_processor(TransformNode(name="parse", transform_fn=lambda x: x))
    pipeline.add_processor(TransformNode(name="flaky", transform_fn=slow_and_flaky))
    pipeline.add_monitor(metrics)
    mid: list[float] = []

    async def watch() -> None:
        await trio.sleep(2.5)
        mid.append(metrics.get_current().error_rate.current)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await pipeline.execute()
    # Errors / items read would say ~12 % here (half the items still queue before "flaky").
    assert mid[0] == pytest.approx(0.25, abs=0.03)
    assert metrics.get_current().error_rate.errors == 750
