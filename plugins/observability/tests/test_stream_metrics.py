"""StreamMetrics: the product description's monitoring example, end to end."""

from __future__ import annotations

import trio

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sources import MemorySource


async def test_the_seed_monitoring_loop_reads_live_figures(autojump_clock):
    from haive_plugin_observability import MetricsCollector

    from haive.dataflow.streaming import StreamMetrics

    assert issubclass(StreamMetrics, MetricsCollector)
    metrics = StreamMetrics(interval=0.1)
    pipeline = StreamingPipeline("documents")
    source = MemorySource(buffer_size=100)
    pipeline.set_source(source)

    async def slow(n: int) -> int:
        await trio.sleep(0.5)  # half a second in the pipeline
        return n

    pipeline.add_processor(TransformNode(name="slow", transform_fn=slow, concurrency=32))
    pipeline.add_monitor(metrics)
    emitted: list[dict[str, float]] = []

    async def feed() -> None:
        for n in range(600):  # 20 items a second for 30 s
            await source.push(n)
            await trio.sleep(0.05)
        source.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        async with pipeline.run() as stream:
            processed = 0
            async for result in stream:
                assert result.success
                processed += 1
                if processed % 100 == 0:
                    emitted.append(
                        {"throughput": float(metrics.throughput), "latency": metrics.avg_latency}
                    )
    assert processed == 600 and metrics.throughput.total == 600
    assert len(emitted) == 6
    # Items arrive at 20/s; once the first seconds are past the figure says so.
    assert all(abs(e["throughput"] - 20) < 2 for e in emitted[2:]), emitted
    # Each item spends 0.5 s in the processor and 32 run at once, so nothing queues: the
    # mean end-to-end latency is 500 ms plus the batching of the flow marks.
    assert all(500 <= e["latency"] < 650 for e in emitted), emitted


def test_stream_metrics_is_a_public_name_of_the_plugin():
    import haive_plugin_observability

    from haive.dataflow.streaming import StreamMetrics

    assert haive_plugin_observability.StreamMetrics is StreamMetrics
    assert sorted(StreamMetrics()) == ["backpressure", "error_rate", "latency", "throughput"]
