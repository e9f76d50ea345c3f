"""A worker pipeline for the kill -9 test, run with ``haive run``: a webhook source in
"written" mode on ``HAIVE_HTTP_TEST_PORT`` copying each event's data to the HTTP receiver
at ``HAIVE_HTTP_TEST_SINK_URL``.

With ``HAIVE_HTTP_TEST_HANG_AFTER=K`` and ``HAIVE_HTTP_TEST_HANG_FILE=PATH`` the worker
stops in the middle of a batch at its K-th event (earlier outputs written, the requests of
this batch and of the buffered ones unanswered), creates PATH and waits to be killed: the
test kills it at a known point, not after a sleep.
"""

from __future__ import annotations

import os

import trio
from haive_plugin_http import HttpSink, WebhookEvent, WebhookSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.retry import RetryPolicy

port = int(os.environ.get("HAIVE_HTTP_TEST_PORT", "8080"))
sink_url = os.environ.get("HAIVE_HTTP_TEST_SINK_URL", "http://127.0.0.1:8081/ingest")
hang_after = int(os.environ.get("HAIVE_HTTP_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_HTTP_TEST_HANG_FILE")
seen = 0


async def copy(event: WebhookEvent) -> object:
    global seen
    seen += 1
    if hang_after and seen == hang_after and hang_file:
        await trio.Path(hang_file).touch()
        await trio.sleep_forever()
    return event.data


pipeline = StreamingPipeline("webhook-worker")
pipeline.set_source(WebhookSource(port=port, path="/events", ack="written", buffer_size=200,
                                  ack_every=100))
pipeline.add_processor(copy)
pipeline.set_sink(HttpSink(sink_url, batch_size=50,
                           retry=RetryPolicy(attempts=20, backoff=0.05, max_backoff=1.0)))
