"""A worker pipeline for the kill -9 test, run with ``haive run``: copies the queue
``<name>.in`` to ``<name>.out``.

Configured by environment variables: ``HAIVE_RABBITMQ_TEST_URL``,
``HAIVE_RABBITMQ_TEST_NAME``; with ``HAIVE_RABBITMQ_TEST_HANG_AFTER=K`` and
``HAIVE_RABBITMQ_TEST_HANG_FILE=PATH`` the worker stops in the middle of a batch at its K-th
item (earlier outputs written, this batch and the prefetched messages unacknowledged),
writes its source's counts to PATH and waits to be killed: the test kills it at a known
point, not after a sleep.
"""

from __future__ import annotations

import os

import orjson
import trio
from haive_plugin_rabbitmq import RabbitMessage, RabbitMQSink, RabbitMQSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

url = os.environ.get("HAIVE_RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/")
name = os.environ.get("HAIVE_RABBITMQ_TEST_NAME", "haive-example")
hang_after = int(os.environ.get("HAIVE_RABBITMQ_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_RABBITMQ_TEST_HANG_FILE")
seen = 0

source = RabbitMQSource(f"{name}.in", url=url, batch_size=100, prefetch=400,
                        stop_when_drained=True)


async def copy(message: RabbitMessage) -> object:
    global seen
    seen += 1
    if hang_after and seen == hang_after and hang_file:
        counts = {"received": source.stats.received, "acknowledged": source.stats.acknowledged}
        partial = trio.Path(f"{hang_file}.partial")
        await partial.write_bytes(orjson.dumps(counts))
        await partial.rename(hang_file)  # whole when it appears
        await trio.sleep_forever()
    return message.body


pipeline = StreamingPipeline("rabbitmq-worker")
pipeline.set_source(source)
pipeline.add_processor(copy)
pipeline.set_sink(RabbitMQSink(routing_key=f"{name}.out", url=url))
