"""Fixtures: a pipeline around a webhook source served on a free port of 127.0.0.1, and a
real HTTP receiver (Hypercorn + Starlette, :mod:`receiver`) for the sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from haive_plugin_http import WebhookSource

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.config import StreamConfig

from .receiver import Receiver


@attrs.define
class Running:
    source: WebhookSource
    pipeline: StreamingPipeline
    sink: MemorySink | StreamSink
    reports: list[Any]
    finished: trio.Event = attrs.field(factory=trio.Event)

    @property
    def items(self) -> list[Any]:
        assert isinstance(self.sink, MemorySink)
        return self.sink.items


@asynccontextmanager
async def running(
    source: WebhookSource,
    *processors: Callable[[Any], Any],
    sink: StreamSink | None = None,
    dead_letter: StreamSink | None = None,
    config: StreamConfig | None = None,
) -> AsyncIterator[Running]:
    """Serve ``source`` and run a pipeline reading it; on leaving, stop the source (which
    drains what was accepted) and wait for the pipeline to finish."""
    pipeline = StreamingPipeline("webhook-test", config=config)
    pipeline.set_source(source)
    for processor in processors:
        pipeline.add_processor(processor)
    out = sink if sink is not None else MemorySink()
    pipeline.set_sink(out)
    if dead_letter is not None:
        pipeline.set_dead_letter_sink(dead_letter)
    run = Running(source, pipeline, out, [])

    async def execute() -> None:
        run.reports.append(await pipeline.execute())
        run.finished.set()

    async with source.serving(), trio.open_nursery() as nursery:
        nursery.start_soon(execute)
        try:
            yield run
        finally:
            source.stop()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    served = Receiver()
    await nursery.start(served.run)
    return served
