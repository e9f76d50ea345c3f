"""A worker pipeline for the kill -9 test, run with ``haive run``: copies ``<stream>.in`` to
``<stream>.out`` through the durable consumer ``workers``.

Configured by environment variables: ``HAIVE_NATS_TEST_URL``, ``HAIVE_NATS_TEST_STREAM``;
with ``HAIVE_NATS_TEST_HANG_AFTER=K`` and ``HAIVE_NATS_TEST_HANG_FILE=PATH`` the worker
stops in the middle of a batch at its K-th item (earlier outputs written, this batch and
the prefetched ones unacknowledged), creates PATH and waits to be killed: the test kills
it at a known point, not after a sleep.
"""

from __future__ import annotations

import os

import trio
from haive_plugin_nats import JetStreamSink, JetStreamSource, NatsMessage

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

url = os.environ.get("HAIVE_NATS_TEST_URL", "nats://127.0.0.1:4222")
stream = os.environ.get("HAIVE_NATS_TEST_STREAM", "HAIVE-EXAMPLE")
hang_after = int(os.environ.get("HAIVE_NATS_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_NATS_TEST_HANG_FILE")
seen = 0


async def copy(message: NatsMessage) -> object:
    global seen
    seen += 1
    if hang_after and seen == hang_after and hang_file:
        await trio.Path(hang_file).touch()
        await trio.sleep_forever()
    return message.data


pipeline = StreamingPipeline("nats-worker")
pipeline.set_source(
    JetStreamSource(
        f"{stream}.in", durable="workers", url=url, batch_size=200, ack_wait="2s",
        stop_when_drained=True,
    )
)
pipeline.add_processor(copy)
pipeline.set_sink(JetStreamSink(f"{stream}.out", url=url))
