"""BoundedBuffer strategies, exact drop counts and signals to producers."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from haive.dataflow import (
    BackpressureManager,
    BoundedBuffer,
    BufferStrategy,
    ConfigError,
    DropStrategy,
    FlowController,
    UnknownPluginError,
)
from haive.dataflow.runtime.backpressure import SlidingWindowStrategy


def drain(buf: BoundedBuffer) -> list:
    out = []
    while True:
        try:
            out.extend(buf.get_nowait_batch())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


@pytest.mark.parametrize(
    ("strategy", "kept", "dropped"),
    [
        (DropStrategy.OLDEST_FIRST, list(range(900, 1000)), 900),
        (DropStrategy.NEWEST_FIRST, list(range(100)), 900),
        (BufferStrategy.DROP_OLDEST, list(range(900, 1000)), 900),
    ],
)
def test_drop_strategies_exact_counts(strategy, kept, dropped):
    buf = BoundedBuffer(100, strategy)
    for start in range(0, 1000, 7):  # uneven batches across the boundary
        buf.put_nowait_batch(range(start, min(start + 7, 1000)))
    assert drain(buf) == kept
    assert buf.stats.dropped == dropped
    assert buf.stats.items_in + buf.stats.dropped - 0 >= 1000 - dropped


def test_drop_oldest_batch_larger_than_buffer_size():
    buf = BoundedBuffer(3, "drop_oldest")
    buf.put_nowait_batch([1, 2])
    buf.put_nowait_batch([3, 4, 5, 6, 7])
    assert drain(buf) == [5, 6, 7]
    assert buf.stats.dropped == 4


def test_block_strategy_refuses_nowait_when_full():
    buf = BoundedBuffer(2)
    buf.put_nowait_batch([1, 2])
    with pytest.raises(trio.WouldBlock):
        buf.put_nowait(3)
    assert drain(buf) == [1, 2]
    assert buf.stats.dropped == 0


async def test_block_strategy_blocks_until_room_and_keeps_order(autojump_clock):
    buf = BoundedBuffer(10)
    got = []

    async def consume():
        while True:
            try:
                batch = await buf.get_batch(4)
            except trio.EndOfChannel:
                return
            assert len(batch) <= 4
            got.extend(batch)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        async with buf.open_producer() as producer:
            await producer.put_batch(range(95))  # far larger than the buffer
            await producer.put(95)
    assert got == list(range(96))
    assert buf.stats.blocked_count > 0
    assert buf.stats.max_depth <= 10
    assert buf.stats.dropped == 0


async def test_sliding_window_drops_by_age(autojump_clock):
    buf = BoundedBuffer(1000, SlidingWindowStrategy(window=5.0))
    for second in range(10):
        buf.put_nowait_batch([second] * 10)
        await trio.sleep(1)
    # at t=10 only chunks put at t >= 5 are younger than the window
    assert drain(buf) == [s for s in range(5, 10) for _ in range(10)]
    assert buf.stats.dropped == 50


async def test_sliding_window_by_name_and_buffer_size():
    buf = BoundedBuffer(5, "sliding_window")
    assert isinstance(buf.strategy, SlidingWindowStrategy)
    buf.put_nowait_batch(range(8))
    assert buf.stats.dropped == 3


def test_bad_configuration_errors():
    with pytest.raises(ConfigError, match="buffer_size must be an integer >= 1"):
        BoundedBuffer(0)
    with pytest.raises(
        UnknownPluginError, match=r"no backpressure named 'drop_oldst'.*Did you mean 'drop_oldest'"
    ):
        BoundedBuffer(5, "drop_oldst")
    with pytest.raises(ConfigError, match="strategy must be a backpressure strategy name"):
        BoundedBuffer(5, 42)


async def test_end_of_channel_after_all_producers_close():
    buf = BoundedBuffer(10)
    a = buf.open_producer()
    b = a.clone()
    await a.put(1)
    a.close()
    await b.put(2)
    assert await buf.get_batch() == [1, 2]
    b.close()
    with pytest.raises(trio.EndOfChannel):
        await buf.get_batch()
    with pytest.raises(trio.ClosedResourceError):
        await b.put(3)


async def test_consumer_gone_breaks_blocked_producer():
    buf = BoundedBuffer(1)
    buf.put_nowait(0)
    async with trio.open_nursery() as nursery:

        async def close_later():
            await trio.sleep(0.01)
            buf.close_receiving()

        nursery.start_soon(close_later)
        with pytest.raises(trio.BrokenResourceError):
            await buf.put(1)


async def test_flow_controller_pauses_and_resumes(autojump_clock):
    buf = BoundedBuffer(100, "drop_newest")
    flow = FlowController(buf, high=0.8, low=0.2)
    produced = 0
    resumed_at = []

    async def consumer():
        await trio.sleep(1)  # stalled for a second
        while True:
            try:
                await buf.get_batch(10)
            except trio.EndOfChannel:
                return
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        for _ in range(300):
            if flow.paused:
                await flow.wait_resumed()
                resumed_at.append(trio.current_time())
            buf.put_nowait(produced)
            produced += 1
        buf.close()
    # the producer slowed down instead of overflowing: nothing was dropped
    assert buf.stats.dropped == 0
    assert flow.pauses >= 1
    assert resumed_at and resumed_at[0] >= 1.0


async def test_stalled_consumer_pauses_producer_immediately(autojump_clock):
    buf = BoundedBuffer(50)
    put_times = []

    async def producer():
        for n in range(200):
            await buf.put(n)
            put_times.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.sleep(10)  # consumer stalled for 10 s
        assert len(put_times) == 50  # the producer stopped as soon as the buffer filled
        assert all(t == 0 for t in put_times)
        while len(put_times) < 200:
            await buf.get_batch()
            await trio.lowlevel.checkpoint()


def test_manager_snapshot():
    manager = BackpressureManager()
    buf = manager.buffer("ingest", buffer_size=10, strategy="drop_newest")
    buf.put_nowait_batch(range(15))
    snap = manager.snapshot()["ingest"]
    assert snap["dropped"] == 5
    assert snap["depth"] == 10
    assert snap["pressure"] == 1.0
    assert snap["strategy"] == "drop_newest"
    assert manager.flow_controller("ingest").paused


async def test_wait_below_returns_when_drained():
    buf = BoundedBuffer(10)
    buf.put_nowait_batch(range(10))
    with trio.move_on_after(0.05) as scope:
        await buf.wait_below(0.5)
    assert scope.cancelled_caught
    buf.get_nowait_batch(6)
    with trio.fail_after(1):
        await buf.wait_below(0.5)


async def test_pipeline_edge_strategy_drops_and_counts(autojump_clock):
    """A slow node behind a drop_newest edge: exact accounting of processed + dropped."""
    from haive.dataflow import StreamingPipeline, StreamProcessor
    from haive.dataflow.builtins.sinks import MemorySink
    from haive.dataflow.builtins.sources import IterableSource

    class Slow(StreamProcessor):
        async def process(self, item):
            await trio.sleep(0.001)
            return item

    pipeline = StreamingPipeline("lossy", backpressure="drop_newest")
    pipeline.set_source(IterableSource(range(5000)))
    pipeline.add_processor(Slow("slow"))
    sink = MemorySink()
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.dropped > 0
    assert report.processed + report.dropped == 5000
    assert sink.items == sorted(sink.items)
