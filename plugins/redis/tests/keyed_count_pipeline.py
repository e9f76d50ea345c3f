"""A worker pipeline for ``haive worker`` tests: count events per key, echo them downstream.

Configured by environment variables so the test can point it at its own keys:
``HAIVE_TEST_STREAM`` (input), ``HAIVE_TEST_OUT`` (output), ``HAIVE_TEST_DELIVERY``
(``at_least_once`` / ``exactly_once``), ``HAIVE_TEST_CLAIM_IDLE``, ``HAIVE_TEST_BATCH``
(the source's ``batch_size``).

Fault tests also set ``HAIVE_TEST_FAIL_EVERY=K`` (a first processor raises on every event
whose ``seq`` is a multiple of K, so those entries go to the dead-letter stream) and
``HAIVE_TEST_HANG_DIR``: once a file ``hang-<consumer>`` appears there, the worker stops in
the middle of its next batch (state counted, outputs not written, entries pending) and
creates ``hanging-<consumer>``, so the test kills it at a known point, not after a sleep;
while ``pause-<consumer>`` exists the worker waits before its next batch (so the victim is
sure to get entries to hang on).
``HAIVE_TEST_ENDLESS=1`` (keep waiting for entries when drained: only a signal stops it).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import trio
from haive_plugin_redis import RedisStreamSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.nodes import Node, NodeContext

stream = os.environ.get("HAIVE_TEST_STREAM", "{haive-example}:in")
source = RedisStreamSource(
    stream,
    group="set-by-haive-worker",
    delivery=os.environ.get("HAIVE_TEST_DELIVERY", "at_least_once"),
    claim_idle=os.environ.get("HAIVE_TEST_CLAIM_IDLE", "1s"),
    block="20ms",
    batch_size=int(os.environ.get("HAIVE_TEST_BATCH", "1000")),
    stop_when_drained=os.environ.get("HAIVE_TEST_ENDLESS") != "1",
)
counts = source.state("counts")
fail_every = int(os.environ.get("HAIVE_TEST_FAIL_EVERY", "0"))
hang_dir = os.environ.get("HAIVE_TEST_HANG_DIR")


def reject_poison(event: dict[str, Any]) -> dict[str, Any]:
    """Fails for good on every ``fail_every``-th event (no retry policy)."""
    if fail_every and event["seq"] % fail_every == 0:
        raise ValueError(f"poison event {event['seq']}")
    return event


class CountByKey(Node):
    """Adds each batch's per-key counts to the state in one call; emits ``{seq, key}``."""

    name = "count_by_key"

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        if hang_dir is not None:
            # (a file another process creates: polling is the only way to see it)
            while await trio.Path(hang_dir, f"pause-{source.consumer}").exists():  # noqa: ASYNC110
                await trio.sleep(0.01)
        await counts.add_many(Counter(event["key"] for event in batch))
        if hang_dir is not None and await trio.Path(hang_dir, f"hang-{source.consumer}").exists():
            await trio.Path(hang_dir, f"hanging-{source.consumer}").touch()
            await trio.sleep_forever()  # until the test's SIGKILL
        return [{"seq": event["seq"], "key": event["key"]} for event in batch]


pipeline = StreamingPipeline("keyed-count")
pipeline.set_source(source)
if fail_every:
    pipeline.add_processor(reject_poison)
pipeline.add_processor(CountByKey())
pipeline.set_sink(source.sink(os.environ.get("HAIVE_TEST_OUT", "{haive-example}:out")))
