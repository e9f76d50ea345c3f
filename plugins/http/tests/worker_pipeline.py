"""A worker pipeline for the kill -9 test, run with ``haive run``: a webhook source in
"written" mode on ``HAIVE_HTTP_TEST_PORT`` copying each event's data to the HTTP receiver
at ``HAIVE_HTTP_TEST_SINK_URL``.

With ``HAIVE_HTTP_TEST_HANG_AFTER=K`` and ``HAIVE_HTTP_TEST_HANG_FILE=PATH`` the worker
stops at its K-th event, creates PATH and waits to be killed: the test kills it at a known
point, not after a sleep. ``HAIVE_HTTP_TEST_HANG_IN=processor`` (default) stops in the
middle of a batch in the processor (earlier outputs written, the requests of this batch
and of the buffered ones unanswered); ``sink`` stops right after the sink wrote the batch
holding the K-th event, before the pipeline could acknowledge it (written, unanswered: the
senders will send those events again).
"""

from __future__ import annotations

import os
from typing import Any

import trio
from haive_plugin_http import HttpSink, WebhookEvent, WebhookSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.retry import RetryPolicy

port = int(os.environ.get("HAIVE_HTTP_TEST_PORT", "8080"))
sink_url = os.environ.get("HAIVE_HTTP_TEST_SINK_URL", "http://127.0.0.1:8081/ingest")
hang_after = int(os.environ.get("HAIVE_HTTP_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_HTTP_TEST_HANG_FILE")
hang_in = os.environ.get("HAIVE_HTTP_TEST_HANG_IN", "processor")
seen = 0
written = 0


async def hang() -> None:
    assert hang_file is not None
    await trio.Path(hang_file).touch()
    await trio.sleep_forever()


async def copy(event: WebhookEvent) -> object:
    global seen
    seen += 1
    if hang_in == "processor" and hang_after and seen == hang_after and hang_file:
        await hang()
    return event.data


class HangingSink(HttpSink):
    async def write_batch(self, items: list[Any]) -> None:
        global written
        await super().write_batch(items)
        written += len(items)
        if hang_in == "sink" and hang_after and hang_file and written >= hang_after:
            await hang()


pipeline = StreamingPipeline("webhook-worker")
pipeline.set_source(WebhookSource(port=port, path="/events", ack="written", buffer_size=200,
                                  ack_every=100))
pipeline.add_processor(copy)
pipeline.set_sink(HangingSink(sink_url, batch_size=50,
                           retry=RetryPolicy(attempts=20, backoff=0.05, max_backoff=1.0)))
