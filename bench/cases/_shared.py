"""Pieces several benchmark cases use (not a case itself: its name starts with ``_``)."""

from __future__ import annotations

from typing import Any

from haive.dataflow import StreamingPipeline, StreamSink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.defaults import DEFAULT_CHUNK_SIZE

#: Processors in the pipeline of the ``pipeline`` and ``metrics`` cases.
STAGES = 5

#: The micro-batch the pipeline moves between stages; the batched baselines move the same.
BATCH = DEFAULT_CHUNK_SIZE


def step(x: int) -> int:
    """The per-item work of every stage, on every side of the comparison."""
    return x + 1


def expected_total(n: int) -> int:
    """What a sink sums after ``range(n)`` went through ``STAGES`` :func:`step` stages."""
    return n * (n - 1) // 2 + STAGES * n


class CountSink(StreamSink):
    """Counts and sums what it is given (ints) and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    async def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)
        if items and type(items[0]) is int:
            self.total += sum(items)


def five_stage_pipeline(n: int, name: str) -> tuple[StreamingPipeline, CountSink]:
    """``n`` ints through ``STAGES`` :func:`step` processors into a :class:`CountSink`."""
    pipeline = StreamingPipeline(name)
    pipeline.set_source(IterableSource(range(n)))
    for _ in range(STAGES):
        pipeline.add_processor(step)
    sink = CountSink()
    pipeline.set_sink(sink)
    return pipeline, sink
