"""Keyed partitions on Redis: two workers share 12 partitions, state goes with each partition.

A producer writes page views of 50 users into the partitioned stream ``<name>`` (12 Redis
streams ``{<name>:p0}`` ... ``{<name>:p11}``; a user's views always go to the same one). Two
workers, here two pipelines in one process (in production: ``haive worker FILE.py --group
views -n 2`` on any number of machines), join group ``views``: they agree through Redis on
who owns which partition (leases with an epoch), count views per user in the partition's
keyed state and write each view, numbered per user, next to its partition. Exactly once:
state, output and read position of a partition commit in one MULTI/EXEC. Both stop once
every partition is drained, and the example checks every count and the per-user order.

Needs Redis on 127.0.0.1:6379 and haive-plugin-redis.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

import orjson
import trio
from haive_plugin_redis import RedisClient

from haive.dataflow.streaming import (
    PartitionedStreamSink,
    PartitionedStreamSource,
    StreamingPipeline,
)

VIEWS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 30_000
PARTITIONS = 12


def worker(name: str, consumer: str) -> tuple[StreamingPipeline, PartitionedStreamSource]:
    source = PartitionedStreamSource(
        name, PARTITIONS, group="views", consumer=consumer, delivery="exactly_once",
        stop_when_drained=True, block="20ms", lease_ttl="2s",
    )  # fmt: skip
    views = source.state("views")

    async def number(view: dict) -> dict:
        n = await views.incr(view["user"])  # per-user count, in the partition's state
        return {**view, "n": n}

    pipeline = StreamingPipeline(f"views-{consumer}")
    pipeline.set_source(source)
    pipeline.add_processor(number)
    pipeline.set_sink(source.sink("numbered"))
    return pipeline, source


async def main() -> None:
    name = f"example-{uuid.uuid4().hex[:8]}"
    producer = PartitionedStreamSink(name, PARTITIONS, key="user")
    async with producer:
        await producer.write_batch([{"user": f"u{i % 50}", "seq": i} for i in range(VIEWS)])

    workers = [worker(name, "worker-1"), worker(name, "worker-2")]
    async with trio.open_nursery() as nursery:
        for pipeline, _ in workers:
            nursery.start_soon(pipeline.execute)
    client = RedisClient()
    try:
        numbered = producer.layout.with_suffix(":numbered")
        outputs = []
        for stream in numbered.streams():
            entries = await client.execute("XRANGE", stream, "-", "+")
            outputs.extend(orjson.loads(fields[b"data"]) for _, fields in entries)
        for _, source in workers:
            stats = source.membership()
            print(f"{stats['consumer']}: read {stats['read']} views, took {stats['acquired']} "
                  f"partitions, {stats['commits']} commits")  # fmt: skip
        per_user = Counter(o["user"] for o in outputs)
        in_order = all(
            [o["n"] for o in outputs if o["user"] == user] == list(range(1, count + 1))
            for user, count in per_user.items()
        )
        print(
            f"{len(outputs)} numbered views of {len(per_user)} users, per-user order kept: {in_order}"
        )
        assert len(outputs) == VIEWS and in_order and per_user["u0"] == VIEWS // 50
    finally:
        keys = await client.call(lambda: list(client.redis.scan_iter(match=f"*{name}*")))
        if keys:
            await client.execute("DEL", *keys)
        client.close()


if __name__ == "__main__":
    trio.run(main)
