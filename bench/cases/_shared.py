"""Pieces several benchmark cases use (not a case itself: its name starts with ``_``)."""

from __future__ import annotations

from typing import Any

from haive.dataflow import StreamingPipeline, StreamSink
from haive.dataflow.builtins.sources import IterableSource

#: Processors in the pipeline of the ``pipeline`` and ``metrics`` cases.
STAGES = 5


class CountSink(StreamSink):
    """Counts what it is given and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    async def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


def five_stage_pipeline(n: int, name: str) -> tuple[StreamingPipeline, CountSink]:
    """``n`` ints through ``STAGES`` trivial ``x + 1`` processors into a :class:`CountSink`."""
    pipeline = StreamingPipeline(name)
    pipeline.set_source(IterableSource(range(n)))
    for _ in range(STAGES):
        pipeline.add_processor(lambda x: x + 1)
    sink = CountSink()
    pipeline.set_sink(sink)
    return pipeline, sink
