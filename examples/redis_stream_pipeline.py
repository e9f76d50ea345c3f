"""At-least-once from one Redis stream to another, with a consumer group and keyed state.

A producer writes sensor readings into ``{example}:readings``; a StreamingPipeline reads them
as consumer ``worker-1`` of group ``alerts``, keeps a per-sensor count in Redis state, turns
readings above a threshold into alerts and appends them to ``{example}:alerts``. One reading
is corrupt on purpose: it lands in the dead-letter stream with the reason and the pipeline
goes on. Entries are acknowledged only after the alerts sink wrote them, so a crash
redelivers instead of losing. The source stops once the group has nothing pending
(``stop_when_drained``), so the example exits by itself.

Needs Redis on 127.0.0.1:6379 and haive-plugin-redis. To scale out, put the pipeline in a
file and run ``haive worker FILE.py --group alerts --processes 4``.
"""

from __future__ import annotations

import os
import random
import uuid

import trio

from haive.dataflow.streaming import (
    FilterNode,
    RedisStreamSink,
    RedisStreamSource,
    StreamingPipeline,
)

READINGS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 50_000
THRESHOLD = 0.95


async def main() -> None:
    tag = f"example-{uuid.uuid4().hex[:8]}"  # a fresh hash tag: keys of one run share a slot
    readings, alerts = f"{{{tag}}}:readings", f"{{{tag}}}:alerts"

    # Producer: pipelined XADDs of JSON readings, plus one corrupt entry.
    producer = RedisStreamSink(readings, maxlen=100_000)
    async with producer:
        rng = random.Random(7)
        batch = [{"sensor": f"s{i % 10}", "value": rng.random()} for i in range(READINGS)]
        await producer.write_batch(batch)
        await producer.client.execute("XADD", readings, "*", "data", b"{not json")

    source = RedisStreamSource(
        readings, group="alerts", consumer="worker-1", stop_when_drained=True, block="20ms"
    )
    seen = source.state("seen")  # keyed state stored next to the stream

    async def count(reading: dict) -> dict:
        await seen.add(reading["sensor"])
        return reading

    pipeline = StreamingPipeline("sensor-alerts")
    pipeline.set_source(source)
    pipeline.add_processor(count)
    pipeline.add_processor(FilterNode(name="hot", filter_fn=lambda r: r["value"] > THRESHOLD))
    pipeline.add_processor(lambda r: {"alert": "hot", **r})
    pipeline.set_sink(source.sink(alerts, maxlen=10_000))

    report = await pipeline.execute()
    client = source.client
    try:
        n_alerts = await client.execute("XLEN", alerts)
        dead = await client.execute("XRANGE", source.dead_letter, "-", "+")
        s0 = await seen.get("s0")
        groups = await client.call(client.redis.xinfo_groups, readings)
        print(
            f"read {source.stats.read} readings, {report.processed} alerts written ({n_alerts} in {alerts})"
        )
        print(f"sensor s0 seen {int(s0 or 0)} times; pending after the run: {groups[0]['pending']}")
        print(f"dead letters: {len(dead)}, reason: {dead[0][1][b'reason'].decode()}")
        assert n_alerts == report.processed and groups[0]["pending"] == 0 and len(dead) == 1
    finally:
        keys = await client.call(lambda: list(client.redis.scan_iter(match=f"{{{tag}}}*")))
        if keys:
            await client.execute("DEL", *keys)
        client.close()


if __name__ == "__main__":
    trio.run(main)
