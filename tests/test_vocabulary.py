"""One vocabulary (issue 14): one defaults module, one settings object, one name per concept.

``buffer_size`` (items a buffer holds), ``chunk_size`` (the largest micro-batch taken at once)
and ``error_buffer_size`` (failed results waiting) run unchanged from ``StreamConfig`` and the
pipelines down to every ``BoundedBuffer`` they build.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from haive.dataflow import BoundedBuffer, ConfigError, StreamConfig
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.pipelines.event_pipeline import EventPipeline
from haive.dataflow.pipelines.streaming_pipeline import PipelineRun, StreamingPipeline
from haive.dataflow.runtime.defaults import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ERROR_BUFFER_SIZE,
)
from haive.dataflow.runtime.nodes import TransformNode

CORE = Path(__file__).resolve().parents[1] / "core" / "src" / "haive" / "dataflow"


def test_the_default_buffer_size_is_written_only_in_the_defaults_module() -> None:
    """It was written in 8 places (pipelines, run settings, nodes, reactive, sources)."""
    found = [
        f"{path.relative_to(CORE)}:{number}: {line.strip()}"
        for path in sorted(CORE.rglob("*.py"))
        if path.name != "defaults.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<![\d_])1024(?![\d_])", line)
    ]
    assert not found, "1024 outside defaults.py:\n" + "\n".join(found)


def test_stream_config_defaults_are_the_defaults_module() -> None:
    config = StreamConfig()
    assert (config.buffer_size, config.chunk_size, config.error_buffer_size) == (
        DEFAULT_BUFFER_SIZE,
        DEFAULT_CHUNK_SIZE,
        DEFAULT_ERROR_BUFFER_SIZE,
    )


def _sizes(buffers: Any) -> set[tuple[int, int]]:
    return {(buf.buffer_size, buf.chunk_size) for buf in buffers}


def _event_pipeline(**options: Any) -> EventPipeline:
    pipeline = EventPipeline("sized", on_error="result", **options)
    pipeline.add_node(TransformNode(name="t", transform_fn=lambda x: 1 // x))
    pipeline.connect("input", "t").connect("t", "output")
    return pipeline


class Watch:
    """Records the buffers of a running StreamingPipeline."""

    def __init__(self) -> None:
        self.run: PipelineRun | None = None

    async def monitor(self, run: PipelineRun) -> None:
        self.run = run


async def _streaming_run(config: StreamConfig | None) -> PipelineRun:
    pipeline = StreamingPipeline("sized", config=config)
    pipeline.set_source(IterableSource([1, 0, 2]))
    pipeline.add_processor(lambda x: 1 // x)
    pipeline.set_sink(MemorySink())
    watch = Watch()
    pipeline.add_monitor(watch)
    report = await pipeline.execute()
    assert (report.processed, report.failed) == (2, 1)
    assert watch.run is not None
    return watch.run


async def test_a_stream_config_reaches_every_buffer_of_both_pipeline_kinds() -> None:
    config = StreamConfig(buffer_size=48, chunk_size=6, error_buffer_size=33)

    async with _event_pipeline(config=config).process() as handle:
        assert _sizes(handle.run.buffers()) == {(48, 6)}
        assert handle.run.errors is not None
        assert handle.run.errors.buffer_size == 33
        assert (await handle.send(0)).errors  # the failure went through that buffer

    run = await _streaming_run(config)
    assert _sizes(run.buffers()) == {(48, 6)}
    assert run.errors.buffer_size == 33


async def test_event_pipeline_sizes_given_directly_reach_its_buffers() -> None:
    async with _event_pipeline(buffer_size=48, chunk_size=6).process() as handle:
        assert _sizes(handle.run.buffers()) == {(48, 6)}
        result = await handle.send_batch(range(1, 21))
    assert len(result.outputs) == 20


async def test_both_pipeline_kinds_have_the_same_error_buffer_by_default() -> None:
    async with _event_pipeline().process() as handle:
        assert _sizes(handle.run.buffers()) == {(DEFAULT_BUFFER_SIZE, DEFAULT_CHUNK_SIZE)}
        event_errors = handle.run.errors
    run = await _streaming_run(None)
    assert _sizes(run.buffers()) == {(DEFAULT_BUFFER_SIZE, DEFAULT_CHUNK_SIZE)}
    assert event_errors is not None
    assert event_errors.buffer_size == run.errors.buffer_size == DEFAULT_ERROR_BUFFER_SIZE
    # Drained by a task into the dead-letter sink: never drops a failure. Polled by
    # failures(): keeps the latest rather than stall on a caller who never asks.
    assert run.errors.strategy.blocks
    assert event_errors.strategy.PLUGIN_NAME == "drop_oldest"


def test_max_batch_still_works_deprecated_naming_chunk_size() -> None:
    with pytest.warns(DeprecationWarning, match=r"max_batch=\) is deprecated: use chunk_size="):
        pipeline = EventPipeline(max_batch=5)
    assert pipeline.settings.chunk_size == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigError, match="max_batch is the deprecated name of chunk_size"):
            EventPipeline(max_batch=5, chunk_size=6)


def test_a_buffer_takes_at_most_its_chunk_size() -> None:
    buffer: BoundedBuffer[int] = BoundedBuffer(10, chunk_size=3)
    buffer.put_nowait_batch(range(7))
    assert [buffer.get_nowait_batch() for _ in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    whole: BoundedBuffer[int] = BoundedBuffer(10)
    whole.put_nowait_batch(range(7))
    assert whole.chunk_size == 10 and whole.get_nowait_batch() == list(range(7))
