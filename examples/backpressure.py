"""The seed's "Intelligent Flow Management" snippet, on trio.

A fast producer and a slow consumer share a bounded buffer of 1000. The producer applies
backpressure (waits for the buffer to drain to the low-water mark) when it keeps finding it
full, otherwise the buffer drops the oldest items. The seed's "adaptive processing" (more
parallelism while the queue is deep, less when it is shallow) is the consumer node's
``concurrency=AdaptiveConcurrency(min=1, max=8)``: the pipeline raises and lowers it.
"""

from __future__ import annotations

import os

import trio

from haive.dataflow.streaming import (
    AdaptiveConcurrency,
    BufferStrategy,
    DropStrategy,
    FlowController,
    MemorySource,
    StreamConfig,
    StreamingPipeline,
    TransformNode,
)


class SlowConsumer:
    """Each item takes 1 ms of (simulated) I/O: only running several at once keeps up."""

    def __init__(self) -> None:
        self.processed = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def process(self, item: int) -> int:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        await trio.sleep(0.001)
        self.in_flight -= 1
        self.processed += 1
        return item


class FastProducer:
    def __init__(self, count: int) -> None:
        self.count = count
        self.delay = 0.0

    async def __aiter__(self):
        for n in range(self.count):
            if self.delay:
                await trio.sleep(self.delay)
            yield n

    async def slow_down(self, factor: float) -> None:
        self.delay = 0.0001 / factor

    async def resume_normal(self) -> None:
        self.delay = 0.0


class SmartBackpressure:
    """Intelligent backpressure management."""

    def __init__(self) -> None:
        self.buffer_strategy = BufferStrategy.SLIDING_WINDOW
        self.drop_strategy = DropStrategy.OLDEST_FIRST
        self.source = MemorySource(buffer_size=1000, backpressure=self.drop_strategy)
        self.buffer = self.source.buffer
        self.flow_controller = FlowController(self.buffer, high=0.9, low=0.5)
        self.backpressure_applied = 0

    async def handle_stream(self, fast_producer: FastProducer, slow_consumer: SlowConsumer) -> None:
        pressure_gauge = 0
        pipeline = StreamingPipeline("flow", config=StreamConfig(buffer_size=1000))
        pipeline.set_source(self.source)
        # Adaptive processing: up to 8 items in flight while the consumer's input buffer
        # fills (800 of 1000), back down towards 1 when it is nearly empty (200).
        pipeline.add_node(
            TransformNode(
                name="consume",
                transform_fn=slow_consumer.process,
                concurrency=AdaptiveConcurrency(min=1, max=8, high=0.8, low=0.2),
            )
        )

        async def produce() -> None:
            nonlocal pressure_gauge
            async for data in fast_producer:
                if self.flow_controller.paused:
                    pressure_gauge += 1
                    if pressure_gauge > 10:
                        await self.apply_backpressure(fast_producer)
                        pressure_gauge = 0
                else:
                    pressure_gauge = max(0, pressure_gauge - 1)
                self.source.push_nowait(data)  # full buffer: the oldest item is dropped
                await trio.lowlevel.checkpoint()
            self.source.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(pipeline.execute)

    async def apply_backpressure(self, producer: FastProducer) -> None:
        self.backpressure_applied += 1
        await producer.slow_down(factor=0.5)
        await self.flow_controller.wait_resumed()  # instead of sleeping a fixed 5 s
        await producer.resume_normal()


async def main() -> None:
    count = 20_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 200_000
    manager = SmartBackpressure()
    consumer = SlowConsumer()
    await manager.handle_stream(FastProducer(count), consumer)
    stats = manager.buffer.stats
    print(
        f"produced {count}, consumed {consumer.processed}, dropped {stats.dropped}, "
        f"backpressure applied {manager.backpressure_applied} times, "
        f"up to {consumer.peak_in_flight} items in flight"
    )
    assert consumer.processed + stats.dropped == count
    assert consumer.peak_in_flight > 1  # the adaptive limit rose under load


if __name__ == "__main__":
    trio.run(main)
