"""The core acknowledgment protocol this plugin relies on (no Redis needed).

``DataSource.acknowledges`` / ``acknowledge(count)``: StreamingPipeline settles (every item
read so far written by the sink, dead-lettered or filtered out) when an acknowledging source
yields an empty batch, and at the end of the input, before acknowledging.
"""

from __future__ import annotations

import pytest
import trio

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import NodeError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.nodes import FilterNode


class Broker(DataSource):
    """Yields the given batches; an empty batch asks for an acknowledgment point."""

    acknowledges = True

    def __init__(self, batches, log):
        self._batches = batches
        self.log = log
        self.acked = 0

    async def batches(self, chunk_size):
        for batch in self._batches:
            yield batch

    async def acknowledge(self, count):
        self.acked += count
        self.log.append(("ack", count))


class SlowSink(StreamSink):
    def __init__(self, log):
        self.log = log

    async def write_batch(self, items):
        await trio.sleep(0.01)  # autojump clock: the ack must still wait for this
        self.log.append(("wrote", list(items)))


async def test_ack_waits_for_the_sink_and_counts_every_item(autojump_clock):
    log: list = []
    source = Broker([[1, 2, 3], [4], [], [5, 6], []], log)
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.add_processor(FilterNode(name="no4", filter_fn=lambda x: x != 4))
    pipeline.set_sink(SlowSink(log))
    await pipeline.execute()
    acks = [i for i, entry in enumerate(log) if entry[0] == "ack"]
    assert [log[i] for i in acks] == [("ack", 4), ("ack", 2)]
    written = [x for entry in log[: acks[0]] if entry[0] == "wrote" for x in entry[1]]
    assert written == [1, 2, 3]  # 4 was filtered out, and still acknowledged
    assert source.acked == 6


async def test_failed_items_are_acknowledged_after_the_dead_letter_sink(autojump_clock):
    log: list = []
    dead = MemorySink()
    source = Broker([[1, 0, 2], []], log)
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: 10 // x)
    pipeline.set_dead_letter_sink(dead)
    pipeline.set_sink(SlowSink(log))
    await pipeline.execute()
    assert log[-1] == ("ack", 3)
    assert len(dead.items) == 1


async def test_end_of_input_acknowledges_once_everything_is_written(autojump_clock):
    log: list = []
    source = Broker([[1, 2], [3]], log)  # never asks: the end of input acknowledges
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.set_sink(SlowSink(log))
    async with pipeline.run() as results:
        assert [r.data async for r in results] == [1, 2, 3]
    assert log[-1] == ("ack", 3)


async def test_sources_that_do_not_acknowledge_are_never_asked(autojump_clock):
    class Plain(Broker):
        acknowledges = False

    log: list = []
    source = Plain([[1], [], [2]], log)
    pipeline = StreamingPipeline("plain")
    pipeline.set_source(source)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [1, 2] and source.acked == 0


async def test_a_sink_failure_at_the_end_of_input_is_not_acknowledged(autojump_clock):
    """The end-of-input acknowledgment waited for the sink loop to end, failed or not."""

    class Broken(StreamSink):
        async def write_batch(self, items):
            raise OSError("disk full")

    log: list = []
    source = Broker([[1, 2], [3]], log)  # never asks: only the end of input acknowledges
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.set_sink(Broken())
    with pytest.raises(NodeError, match="disk full"):
        await pipeline.execute()
    assert source.acked == 0 and log == []


async def test_failures_without_a_dead_letter_sink_go_to_the_source_before_the_ack(
    autojump_clock,
):
    class Rejecting(Broker):
        async def reject(self, failed):
            await trio.sleep(0.01)  # the acknowledgment must wait for this
            self.log.append(("reject", [r.data for r in failed], failed[0].node))

    log: list = []
    source = Rejecting([[1, 0, 2], [], [0, 5]], log)
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: 10 // x)
    await pipeline.execute()
    assert log == [
        ("reject", [0], "<lambda>_0"),
        ("ack", 3),
        ("reject", [0], "<lambda>_0"),
        ("ack", 2),
    ]
