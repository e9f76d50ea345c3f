"""Retention and the right to erasure on Redis streams.

A page-view stream keeps at most ``MAXLEN`` entries and nothing older than a day
(``RetainedStreamSink`` trims on every write). A pipeline counts views per user in Redis
state and writes enriched views to an output stream. Then user ``u2`` asks to be
forgotten: ``Erasure.forget("u2")`` removes their counters, their entries in the input,
output and dead-letter streams, and their IDs from every consumer group's pending list,
and leaves everyone else's data alone.

Needs Redis on 127.0.0.1:6379 and haive-plugin-redis.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import trio

from haive.dataflow.streaming import (
    Erasure,
    RedisStreamSource,
    RetainedStreamSink,
    Retention,
    StreamingPipeline,
)

VIEWS = 500 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 20_000
MAXLEN = VIEWS * 4 // 5  # the oldest fifth is trimmed away


async def main() -> None:
    tag = f"example-{uuid.uuid4().hex[:8]}"
    views, enriched = f"{{{tag}}}:views", f"{{{tag}}}:enriched"

    # approximate=False trims exactly (the default "~" trims whole nodes: cheaper, a bit more kept)
    retention = Retention(maxlen=MAXLEN, max_age="1d", approximate=False)
    producer = RetainedStreamSink(views, retention)
    async with producer:
        await producer.write_batch(
            [{"user": f"u{i % 5}", "page": f"/p/{i % 7}"} for i in range(VIEWS)]
        )
    client = producer.client

    source = RedisStreamSource(views, group="stats", stop_when_drained=True, block="20ms")
    counts = source.state("views")

    async def count(view: dict[str, Any]) -> dict[str, Any]:
        await counts.add(view["user"])
        return {**view, "counted": True}

    pipeline = StreamingPipeline("page-views")
    pipeline.set_source(source)
    pipeline.add_processor(count)
    pipeline.set_sink(source.sink(enriched))
    report = await pipeline.execute()
    length = await client.execute("XLEN", views)
    print(f"wrote {VIEWS} views, the stream keeps {length}; counted {report.processed}")
    assert length == MAXLEN == report.processed

    erasure = (
        Erasure(client)
        .add_source(source, "views", key_field="user")
        .add_stream(enriched, key_field="user")
    )
    try:
        forgotten = await erasure.forget("u2")
        print(
            f"forgot u2: {forgotten.state_keys} state key(s), stream entries "
            f"{ {k.split(':', 1)[1]: v for k, v in forgotten.stream_entries.items()} }"
        )
        left = await client.execute("XRANGE", enriched, "-", "+")
        assert not any(b'"u2"' in fields[b"data"] for _, fields in left)
        assert await counts.get("u2") is None and await counts.get("u1") is not None
        print(f"u1 still has {int(await counts.get('u1'))} views; u2 has none")
    finally:
        keys = await client.call(lambda: list(client.redis.scan_iter(match=f"{{{tag}}}*")))
        if keys:
            await client.execute("DEL", *keys)
        client.close()
        source.client.close()


if __name__ == "__main__":
    trio.run(main)
