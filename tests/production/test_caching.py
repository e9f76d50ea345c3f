"""Result caching: LRU by bytes, TTL on trio's clock, hit rates, pipelines and executors."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow import (
    AggregateNode,
    ConfigError,
    FilterNode,
    StreamingPipeline,
    StreamProcessor,
    TransformNode,
)
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.caching import ResultCache, default_key, enable_node_caching
from haive.dataflow.runtime.nodes import NodeContext


def square(x: int) -> int:
    return x * x


async def test_lru_eviction_by_approximate_bytes() -> None:
    cache = ResultCache(12_000, ttl=None)
    for key in "abc":
        assert cache.put(key, b"x" * 3000)
    assert cache.get("a")[0]  # a is now the most recently used
    cache.put("d", b"x" * 3000)
    assert "b" not in cache and "a" in cache and "c" in cache and "d" in cache
    assert cache.stats.evictions == 1
    assert cache.total_bytes <= cache.max_bytes
    assert not cache.put("huge", b"x" * 20_000)
    assert cache.stats.rejected == 1 and "huge" not in cache


async def test_ttl_uses_trios_clock(autojump_clock: trio.testing.MockClock) -> None:
    cache = ResultCache("1MB", ttl="5m")
    cache.put("k", 1)
    await trio.sleep(299)
    assert cache.get("k") == (True, 1)
    cache.put("later", 2)
    await trio.sleep(2)
    assert cache.get("k") == (False, None)
    assert cache.get("later") == (True, 2)
    assert cache.stats.expirations == 1
    await trio.sleep(400)
    cache.put("fresh", 3)  # a put sweeps what has expired
    assert len(cache) == 1 and cache.stats.expirations == 2


async def test_bad_settings_are_clear() -> None:
    with pytest.raises(ConfigError, match=r"ResultCache\(max_bytes='lots'\): max_bytes must be a size"):
        ResultCache("lots")
    with pytest.raises(ConfigError, match=r"ResultCache\(ttl=0\): ttl must be a duration"):
        ResultCache("1MB", ttl=0)


def test_default_key_handles_unhashable_items() -> None:
    assert default_key({"a": [1, 2]}) == default_key({"a": [1, 2]})
    assert default_key({"a": [1, 2]}) != default_key({"a": [2, 1]})
    assert default_key(5) == 5


async def test_pipeline_caching_counts_hits_per_node() -> None:
    calls: list[int] = []

    def slow_square(x: int) -> int:
        calls.append(x)
        return x * x

    pipeline = StreamingPipeline("p")
    cache = pipeline.enable_caching(cache_size="10MB", ttl=300)
    pipeline.set_source(IterableSource([1, 2, 1, 2, 3, 1]))
    pipeline.add_node(TransformNode(name="square", transform_fn=slow_square))
    pipeline.add_node(FilterNode(name="big", filter_fn=lambda x: x > 1))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [4, 4, 9]
    assert calls == [1, 2, 3]
    square_stats = cache.stats_for("square")
    assert (square_stats.hits, square_stats.misses) == (3, 3)
    assert square_stats.hit_rate == 0.5
    assert cache.stats_for("big").hits == 3
    assert cache.snapshot()["namespaces"]["square"]["hit_rate"] == 0.5


async def test_key_function_and_node_selection() -> None:
    calls: list[str] = []

    def embed(doc: dict) -> int:
        calls.append(doc["text"])
        return len(doc["text"])

    pipeline = StreamingPipeline("p")
    cache = pipeline.enable_caching("1MB", ttl=60, nodes=["embed"], key=lambda d: d["text"])
    docs = [{"id": 1, "text": "hello"}, {"id": 2, "text": "hello"}, {"id": 3, "text": "hi"}]
    pipeline.set_source(IterableSource(docs))
    pipeline.add_node(TransformNode(name="embed", transform_fn=embed))
    pipeline.add_node(TransformNode(name="double", transform_fn=lambda n: 2 * n))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [10, 10, 4] and calls == ["hello", "hi"]
    assert cache.stats_for("double").lookups == 0

    pipeline.enable_caching("1MB", nodes=["nope"])
    with pytest.raises(ConfigError, match="unknown node"):
        await pipeline.execute()


async def test_failures_are_not_cached() -> None:
    attempts: list[int] = []

    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError("first call fails")
        return x

    node = TransformNode(name="flaky", transform_fn=flaky, on_error="skip")
    enable_node_caching(node, ResultCache("1MB"))
    ctx = NodeContext("flaky", error_policy="skip")
    assert await node.process_batch([7], ctx) == []
    assert await node.process_batch([7], ctx) == [7]
    assert await node.process_batch([7], ctx) == [7]
    assert attempts == [7, 7]


async def test_async_misses_of_one_key_compute_once() -> None:
    started: list[int] = []

    async def lookup(x: int) -> int:
        started.append(x)
        await trio.sleep(1)
        return x + 100

    node = TransformNode(name="lookup", transform_fn=lookup, concurrency=4)
    cached = enable_node_caching(node, ResultCache("1MB"))
    results: list[int] = []

    async def call() -> None:
        results.append(await node.transform_fn(5))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(call)
    assert results == [105] * 4 and started == [5]
    assert cached.stats.hits == 3


async def test_stream_processors_are_cached_and_aggregates_refused() -> None:
    class Upper(StreamProcessor):
        def __init__(self) -> None:
            super().__init__("upper")
            self.calls = 0

        def process(self, item: str) -> str:
            self.calls += 1
            return item.upper()

    upper = Upper()
    enable_node_caching(upper, ResultCache("1MB"))
    assert await upper.process_batch(["a", "a", "b"], NodeContext("upper")) == ["A", "A", "B"]
    assert upper.calls == 2
    with pytest.raises(ConfigError, match="cannot be cached"):
        enable_node_caching(
            AggregateNode(name="sum", window_size=2, aggregate_fn=sum), ResultCache("1MB")
        )


async def test_process_executor_sends_only_misses() -> None:
    pipeline = StreamingPipeline("p")
    cache = pipeline.enable_caching("1MB")
    pipeline.set_source(IterableSource([3, 3, 4, 3, 4, 5]))
    pipeline.add_node(TransformNode(name="sq", transform_fn=square, executor="process"))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [9, 9, 16, 9, 16, 25]
    stats = cache.stats_for("sq")
    # One batch, one chunk: every look-up misses, but each key travels (and is stored) once.
    assert stats.lookups == 6 and stats.stores == 3

    pipeline.set_source(IterableSource([3, 4, 5, 6]))
    await pipeline.execute()
    assert sink.items[-4:] == [9, 16, 25, 36]
    assert (stats.hits, stats.stores) == (3, 4)
