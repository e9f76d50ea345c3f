"""StreamConfig: validation errors, and every field a pipeline uses really applied."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from haive.dataflow import ConfigError, StreamConfig, StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.pipelines.streaming_pipeline import PipelineRun


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_size": 0}, r"buffer_size must be an integer >= 1, got 0"),
        ({"chunk_size": "big"}, r"chunk_size must be an integer >= 1, got 'big'"),
        ({"worker_threads": True}, r"worker_threads must be an integer >= 1, got True"),
        ({"max_memory_usage": "2 gigs"}, r"max_memory_usage must be a size"),
        ({"max_memory_usage": "1MB"}, r"of at least 32MB"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StreamConfig(**kwargs)


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        StreamConfig.from_dict({"buffer_size": 10, "worker_thread": 2})


@pytest.mark.parametrize("key", ["compression", "tcp_nodelay", "keep_alive"])
def test_settings_that_were_never_applied_are_gone(key: str) -> None:
    """They used to be validated and then read by nothing; now they cannot be set at all."""
    value: Any = "snappy" if key == "compression" else True
    with pytest.raises(TypeError, match=key):
        StreamConfig(**{key: value})
    with pytest.raises(ConfigError, match=rf"invalid StreamConfig: {key} \(.+\): remove this key"):
        StreamConfig.from_dict({"buffer_size": 10, key: value})


class Watch:
    """A monitor that records what the running pipeline really uses."""

    def __init__(self) -> None:
        self.buffer_sizes: list[int] = []
        self.chunk_sizes: list[int] = []
        self.governor: Any = None

    async def monitor(self, run: PipelineRun) -> None:
        self.buffer_sizes = [buf.buffer_size for buf in run.buffers()]
        self.chunk_sizes = [buf.chunk_size for buf in run.buffers()]
        self.governor = run.memory


async def test_buffer_and_chunk_sizes_are_applied() -> None:
    batches: list[int] = []

    def record(item: int) -> int:
        return item

    class CountingSink(MemorySink):
        async def write_batch(self, items: list[Any]) -> None:
            batches.append(len(items))
            await super().write_batch(items)

    watch = Watch()
    pipeline = StreamingPipeline("p", config=StreamConfig(buffer_size=50, chunk_size=7))
    pipeline.set_source(IterableSource(range(100)))
    pipeline.add_node(TransformNode(name="t", transform_fn=record))
    pipeline.set_sink(CountingSink())
    pipeline.add_monitor(watch)
    report = await pipeline.execute()
    assert report.processed == 100
    assert set(watch.buffer_sizes) == {50} and set(watch.chunk_sizes) == {7}
    assert max(batches) <= 7
    assert watch.governor is None  # no cap, no gc_interval: nothing to govern


async def test_memory_cap_and_gc_interval_are_applied() -> None:
    watch = Watch()
    config = StreamConfig(buffer_size=100_000, chunk_size=5, max_memory_usage="4GB", gc_interval=10)
    pipeline = StreamingPipeline("p", config=config)
    pipeline.set_source(IterableSource([b"x" * 100_000] * 30))
    pipeline.add_node(TransformNode(name="t", transform_fn=bytes))
    pipeline.add_monitor(watch)
    collections = gc.get_stats()[1]["collections"]
    report = await pipeline.execute()
    assert report.processed == 30
    governor = watch.governor
    assert governor is not None and governor.limit == 4_000_000_000
    assert governor.item_size > 100_000
    assert all(buf.buffer_size < 100_000 for buf in governor.buffers)
    assert gc.get_stats()[1]["collections"] >= collections + 3
