"""Webhooks in, HTTP out: GitHub-style signed webhooks through a pipeline to an HTTP service.

``ingest`` serves ``POST /hooks/github`` with a WebhookSource: each request must carry
``X-Hub-Signature-256: sha256=<HMAC of the body>`` (GitHub's scheme), may hold one event or
a JSON array of them, and is answered 200 only once the pipeline *wrote* its events
(``ack="written"``). Its pipeline keeps the push events, counts commits per repository in
one-minute windows of event time (each event's receive time) and POSTs every result to a
downstream service with HttpSink, in batches, retrying with backoff.

The downstream service is itself a haive pipeline here (a WebhookSource with a bearer
token), so the example runs on its own: no external server. A request with a bad
signature is refused (403) and one with a malformed body too (400); neither enters.

Needs only haive-plugin-http.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import httpx
import orjson
import trio
from haive_plugin_http import BearerToken, HmacSignature, WebhookEvent

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.state.windows import Count, TumblingWindow, WindowedAggregateNode
from haive.dataflow.streaming import HttpSink, StreamingPipeline, WebhookSource

PUSHES = 50 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 500
SECRET = b"github-webhook-secret"
TOKEN = "downstream-token"


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={digest}"}


def keep_pushes(event: WebhookEvent) -> WebhookEvent | None:
    return event if event.headers.get("x-github-event") == "push" else None


async def main() -> None:
    # The downstream HTTP service: receives the counts.
    received = MemorySink()
    downstream_source = WebhookSource(port=0, path="/counts", auth=BearerToken(TOKEN))
    downstream = StreamingPipeline("downstream")
    downstream.set_source(downstream_source)
    downstream.add_processor(lambda event: event.data)
    downstream.set_sink(received)

    ingest_source = WebhookSource(port=0, path="/hooks/github", auth=HmacSignature(SECRET),
                                  ack="written")
    ingest = StreamingPipeline("ingest")
    ingest.set_source(ingest_source)
    ingest.add_processor(keep_pushes)
    ingest.add_node(WindowedAggregateNode(
        name="commits_per_minute", window=TumblingWindow("1m"),
        key=lambda event: event.data["repository"], aggregate=Count()))

    async with downstream_source.serving() as downstream_url, trio.open_nursery() as outer:
        outer.start_soon(downstream.execute)
        ingest.set_sink(HttpSink(downstream_url, bearer_token=TOKEN, batch_size=100))
        async with ingest_source.serving() as ingest_url, trio.open_nursery() as inner:
            inner.start_soon(ingest.execute)
            async with httpx.AsyncClient() as github:
                for start in range(0, PUSHES, 10):  # GitHub sends one; batches work too
                    body = orjson.dumps([{"repository": f"repo-{i % 3}", "commits": 1}
                                         for i in range(start, start + 10)])
                    answer = await github.post(ingest_url, content=body, headers=signed(body))
                    assert answer.status_code == 200, answer.text  # written, not just received
                forged = await github.post(
                    ingest_url, content=b"[]",
                    headers={**signed(b"[]"), "X-Hub-Signature-256": "sha256=00"})
                broken = await github.post(ingest_url, content=b"{", headers=signed(b"{"))
            print(f"forged signature: {forged.status_code}, malformed body: {broken.status_code}")
            ingest_source.stop()  # drains: the open windows are flushed and POSTed downstream
        downstream_source.stop()  # the ingest pipeline has finished: stop the downstream

    total = sum(count["value"] for count in received.items)  # WindowResult.to_dict()
    print(f"{PUSHES} pushes -> {len(received.items)} window counts downstream, "
          f"{total} commits counted")
    assert total == PUSHES


if __name__ == "__main__":
    trio.run(main)
