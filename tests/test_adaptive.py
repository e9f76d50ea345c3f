"""AdaptiveConcurrency: a TransformNode's items in flight follow its input backlog."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow import (
    AdaptiveConcurrency,
    ConfigError,
    StreamConfig,
    StreamingPipeline,
    TransformNode,
)
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import MemorySource


class WatchedSink(MemorySink):
    """A MemorySink that says when it holds ``n`` items."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[int, trio.Event]] = []

    async def holding(self, n: int) -> None:
        event = trio.Event()
        self._waiting.append((n, event))
        if len(self.items) < n:
            await event.wait()

    async def write_batch(self, items: list) -> None:
        await super().write_batch(items)
        for n, event in self._waiting:
            if len(self.items) >= n:
                event.set()


class SlowService:
    """An async call taking one second; records how many calls overlap and the limit then."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.node: TransformNode | None = None
        self.over_limit: list[tuple[int, int]] = []

    async def __call__(self, item: int) -> int:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        assert self.node is not None
        if self.in_flight > self.node.current_concurrency:
            self.over_limit.append((self.in_flight, self.node.current_concurrency))
        try:
            await trio.sleep(1)
        finally:
            self.in_flight -= 1
        return item * 10


async def test_concurrency_rises_under_backlog_and_falls_when_idle(autojump_clock):
    service = SlowService()
    node = TransformNode(
        name="enrich", transform_fn=service, concurrency=AdaptiveConcurrency(min=1, max=16)
    )
    service.node = node
    pipeline = StreamingPipeline("adaptive", config=StreamConfig(buffer_size=100, chunk_size=10))
    source = MemorySource(buffer_size=100)
    pipeline.set_source(source)
    pipeline.add_node(node)
    sink = WatchedSink()
    pipeline.set_sink(sink)
    limits: list[int] = []

    async def sample() -> None:
        while True:
            limits.append(node.current_concurrency)
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        nursery.start_soon(sample)
        await source.push_batch(range(400))  # a burst: the input buffer stays full
        await sink.holding(400)
        assert max(limits) == 16
        assert service.peak == 16
        burst_elapsed = trio.current_time()
        # Idle: nothing arrives, so the limit comes back down to min.
        await trio.sleep(2)
        assert node.current_concurrency == 1
        # A trickle (one item a second) never builds a backlog: the limit stays low.
        for n in range(400, 405):
            await source.push(n)
            await trio.sleep(1)
        assert max(limits[-40:]) <= 2
        source.close()
        await sink.holding(405)
        nursery.cancel_scope.cancel()
    assert sink.items == [n * 10 for n in range(405)]  # in input order (ordered=True)
    assert service.over_limit == []  # never more in flight than the limit of the moment
    # 400 one-second calls: 16 at a time after a short ramp, far below 400 s one by one.
    assert burst_elapsed < 400 / 16 + 5


async def test_a_lower_limit_waits_for_running_items(autojump_clock):
    """Lowering the limit never cancels work: items in flight finish, fewer start."""
    service = SlowService()
    node = TransformNode(
        name="enrich",
        transform_fn=service,
        concurrency=AdaptiveConcurrency(min=2, max=8, interval=0.5),
        ordered=False,
    )
    service.node = node
    pipeline = StreamingPipeline("adaptive", config=StreamConfig(buffer_size=50, chunk_size=5))
    source = MemorySource(buffer_size=50)
    pipeline.set_source(source)
    pipeline.add_node(node)
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        await source.push_batch(range(120))
        source.close()
    assert sorted(sink.items) == [n * 10 for n in range(120)]
    assert service.peak == 8 and service.over_limit == []
    assert node.current_concurrency == 2  # back to the policy's min once the run ended


def test_adaptive_concurrency_needs_an_async_function():
    with pytest.raises(ConfigError, match=r"TransformNode 'double': concurrency=Adaptive.*async"):
        TransformNode(name="double", transform_fn=abs, concurrency=AdaptiveConcurrency())


async def _noop(item: int) -> int:
    return item


def test_adaptive_concurrency_needs_the_inline_executor():
    with pytest.raises(ConfigError, match=r"inline executor"):
        TransformNode(
            name="t", transform_fn=abs, executor="thread", concurrency=AdaptiveConcurrency()
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min": 0}, r"AdaptiveConcurrency.min must be an int >= 1, got 0"),
        ({"max": 2.5}, r"AdaptiveConcurrency.max must be an int >= 1, got 2.5"),
        ({"min": 4, "max": 2}, r"min \(4\) must not exceed max \(2\)"),
        ({"high": 1.5}, r"AdaptiveConcurrency.high must be a fraction .* got 1.5"),
        ({"low": 0.9, "high": 0.5}, r"low \(0.9\) must be below high \(0.5\)"),
        ({"interval": 0}, r"interval must be seconds > 0, got 0"),
    ],
)
def test_bad_policies_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AdaptiveConcurrency(**kwargs)


def test_enable_parallel_processing_keeps_an_adaptive_node_bounds():
    from haive.dataflow.parallel.runner import ParallelSettings, apply_parallelism

    policy = AdaptiveConcurrency(min=2, max=6)
    node = TransformNode(name="t", transform_fn=_noop, concurrency=policy)
    assert apply_parallelism([node], ParallelSettings(32), StreamConfig()) == {}
    assert node.concurrency is policy
