"""The seed's "Intelligent Flow Management" snippet, on trio.

A fast producer and a slow consumer share a bounded buffer of 1000. The producer applies
backpressure (waits for the buffer to drain to the low-water mark) when it keeps finding it
full, otherwise the buffer drops the oldest items; the consumer adapts its parallelism to the
queue depth.
"""

from __future__ import annotations

import os

import trio

from haive.dataflow.streaming import (
    BoundedBuffer,
    BufferStrategy,
    DropStrategy,
    FlowController,
)


class SlowConsumer:
    def __init__(self) -> None:
        self.parallelism = 1
        self.processed = 0

    async def process(self, batch: list[int]) -> None:
        await trio.sleep(0.001 * len(batch) / self.parallelism)
        self.processed += len(batch)

    async def increase_parallelism(self) -> None:
        self.parallelism = min(self.parallelism * 2, 8)

    async def decrease_parallelism(self) -> None:
        self.parallelism = max(self.parallelism // 2, 1)


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
        self.buffer = BoundedBuffer(1000, self.drop_strategy, name="smart")
        self.flow_controller = FlowController(self.buffer, high=0.9, low=0.5)
        self.backpressure_applied = 0

    async def handle_stream(self, fast_producer: FastProducer, slow_consumer: SlowConsumer) -> None:
        buffer = self.buffer
        pressure_gauge = 0

        async def produce() -> None:
            nonlocal pressure_gauge
            async with buffer.open_producer() as out:
                async for data in fast_producer:
                    if self.flow_controller.paused:
                        pressure_gauge += 1
                        if pressure_gauge > 10:
                            await self.apply_backpressure(fast_producer)
                            pressure_gauge = 0
                    else:
                        pressure_gauge = max(0, pressure_gauge - 1)
                    out.put_nowait_batch([data])  # full buffer: the oldest item is dropped
                    await trio.lowlevel.checkpoint()

        async def consume() -> None:
            while True:
                try:
                    batch = await buffer.get_batch(50)
                except trio.EndOfChannel:
                    return
                await slow_consumer.process(batch)
                if len(buffer) > 800:
                    await slow_consumer.increase_parallelism()
                elif len(buffer) < 200:
                    await slow_consumer.decrease_parallelism()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(consume)

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
        f"backpressure applied {manager.backpressure_applied} times"
    )
    assert consumer.processed + stats.dropped == count


if __name__ == "__main__":
    trio.run(main)
