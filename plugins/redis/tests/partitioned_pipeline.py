"""A worker pipeline for keyed-partition tests: counts events per key, echoes them downstream.

Configured by environment variables: ``HAIVE_TEST_NAME`` (the partitioned stream),
``HAIVE_TEST_PARTITIONS``, ``HAIVE_TEST_DELIVERY``, ``HAIVE_TEST_LEASE_TTL``,
``HAIVE_TEST_BATCH``; ``HAIVE_TEST_ENDLESS=1`` keeps waiting when drained (only a signal
stops it). Fault tests also set ``HAIVE_TEST_HANG_DIR``: once ``hang-<consumer>`` exists
there, the worker stops in the middle of its next batch (state staged or counted, outputs
not written) and creates ``hanging-<consumer>``, so the test kills it at a known point.
``HAIVE_TEST_PAUSE_MARK``: the first batch holding key ``pause`` creates that file and
blocks for ``HAIVE_TEST_PAUSE_SECONDS`` (the test SIGSTOPs the worker meanwhile).
``HAIVE_TEST_FIRST_EVENT``: a file where the first event this worker processes writes
``<monotonic time> <partition>`` (the rebalance benchmark).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import trio
from haive_plugin_redis import PartitionedStreamSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.nodes import Node, NodeContext

source = PartitionedStreamSource(
    os.environ.get("HAIVE_TEST_NAME", "haive-example-partitioned"),
    int(os.environ.get("HAIVE_TEST_PARTITIONS", "12")),
    group="set-by-haive-worker",
    delivery=os.environ.get("HAIVE_TEST_DELIVERY", "exactly_once"),
    lease_ttl=os.environ.get("HAIVE_TEST_LEASE_TTL", "2s"),
    batch_size=int(os.environ.get("HAIVE_TEST_BATCH", "200")),
    block="50ms",
    stop_when_drained=os.environ.get("HAIVE_TEST_ENDLESS") != "1",
)
counts = source.state("counts")
hang_dir = os.environ.get("HAIVE_TEST_HANG_DIR")
pause_mark = os.environ.get("HAIVE_TEST_PAUSE_MARK")
first_event = os.environ.get("HAIVE_TEST_FIRST_EVENT")


class CountByKey(Node):
    """Adds each batch's per-key counts to the partition's state; emits ``{seq, key}``."""

    name = "count_by_key"

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        global first_event
        if first_event is not None and batch:
            member = source.current_member
            partition = member.partition if member is not None else -1
            await trio.Path(first_event).write_text(f"{time.monotonic()} {partition}")
            first_event = None
        await counts.add_many(Counter(event["key"] for event in batch))
        if hang_dir is not None and await trio.Path(hang_dir, f"hang-{source.consumer}").exists():
            await trio.Path(hang_dir, f"hanging-{source.consumer}").touch()
            await trio.sleep_forever()  # until the test's SIGKILL
        if (
            pause_mark is not None
            and any(event["key"] == "pause" for event in batch)
            and not await trio.Path(pause_mark).exists()
        ):
            await trio.Path(pause_mark).touch()
            # Block the whole process (not just this task): the test SIGSTOPs it meanwhile.
            time.sleep(float(os.environ.get("HAIVE_TEST_PAUSE_SECONDS", "1")))  # noqa: ASYNC251
        return [{"seq": event["seq"], "key": event["key"]} for event in batch]


pipeline = StreamingPipeline("partitioned-keyed-count")
pipeline.set_source(source)
pipeline.add_processor(CountByKey())
pipeline.set_sink(source.sink("out"))
