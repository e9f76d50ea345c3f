"""A worker pipeline for ``haive worker`` tests: count events per key, echo them downstream.

Configured by environment variables so the test can point it at its own keys:
``HAIVE_TEST_STREAM`` (input), ``HAIVE_TEST_OUT`` (output), ``HAIVE_TEST_DELIVERY``
(``at_least_once`` / ``exactly_once``), ``HAIVE_TEST_CLAIM_IDLE``,
``HAIVE_TEST_ENDLESS=1`` (keep waiting for entries when drained: only a signal stops it).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from haive_plugin_redis import RedisStreamSource

from haive.dataflow.nodes import Node, NodeContext
from haive.dataflow.streaming_pipeline import StreamingPipeline

stream = os.environ.get("HAIVE_TEST_STREAM", "{haive-example}:in")
source = RedisStreamSource(
    stream,
    group="set-by-haive-worker",
    delivery=os.environ.get("HAIVE_TEST_DELIVERY", "at_least_once"),
    claim_idle=os.environ.get("HAIVE_TEST_CLAIM_IDLE", "1s"),
    block="20ms",
    stop_when_drained=os.environ.get("HAIVE_TEST_ENDLESS") != "1",
)
counts = source.state("counts")


class CountByKey(Node):
    """Adds each batch's per-key counts to the state in one call; emits ``{seq, key}``."""

    name = "count_by_key"

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        await counts.add_many(Counter(event["key"] for event in batch))
        return [{"seq": event["seq"], "key": event["key"]} for event in batch]


pipeline = StreamingPipeline("keyed-count")
pipeline.set_source(source)
pipeline.add_processor(CountByKey())
pipeline.set_sink(source.sink(os.environ.get("HAIVE_TEST_OUT", "{haive-example}:out")))
