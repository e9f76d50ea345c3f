"""At-least-once from one NATS JetStream subject to another, with a dead letter.

A producer publishes orders to ``<stream>.orders``; a StreamingPipeline reads them as the
durable pull consumer ``pricing`` (batches of 256, at most 2 batches fetched ahead), prices
them and publishes the results to ``<stream>.priced``, each publish confirmed by JetStream.
Messages are acknowledged only after the sink wrote their results, so a crash redelivers
instead of losing. One order has a negative quantity on purpose: it fails in the
processor and lands on ``<stream>.orders.dead`` with the reason in its headers, and the
pipeline goes on. The windowed count uses each message's JetStream timestamp as event time.
The source stops once the consumer has nothing pending (``stop_when_drained``).

Needs NATS with JetStream on 127.0.0.1:4222 (``nats-server -js``) and haive-plugin-nats.
"""

from __future__ import annotations

import os
import uuid

import trio
from haive_plugin_nats import NatsMessage, delete_stream, ensure_stream

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.state.windows import Count, TumblingWindow, WindowedAggregateNode
from haive.dataflow.streaming import JetStreamSink, JetStreamSource, StreamingPipeline

ORDERS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 50_000


def price(message: NatsMessage) -> dict[str, object]:
    order = message.data
    if order["qty"] <= 0:
        raise ValueError(f"order {order['id']}: quantity must be positive, got {order['qty']}")
    return {"id": order["id"], "total": order["qty"] * order["price"], "at": message.timestamp}


async def main() -> None:
    stream = f"EXAMPLE-{uuid.uuid4().hex[:8]}"
    orders, priced = f"{stream}.orders", f"{stream}.priced"
    await ensure_stream(stream, [orders, f"{orders}.dead", priced], storage="memory")
    try:
        async with JetStreamSink(orders) as producer:
            batch = [{"id": i, "qty": 1 + i % 5, "price": 2.5} for i in range(ORDERS)]
            batch[7]["qty"] = -1
            await producer.write_batch(batch)

        # How many orders JetStream stored per minute, in event time (the message timestamp).
        per_minute = MemorySink()
        counting = StreamingPipeline("per-minute")
        counting.set_source(JetStreamSource(orders, durable="counting", stop_when_drained=True))
        counting.add_node(WindowedAggregateNode(
            name="per_minute", window=TumblingWindow("1m"), key=lambda m: "all",
            aggregate=Count()))
        counting.set_sink(per_minute)
        await counting.execute()

        source = JetStreamSource(orders, durable="pricing", stop_when_drained=True)
        sink = JetStreamSink(priced)
        pipeline = StreamingPipeline("pricing")
        pipeline.set_source(source)
        pipeline.add_processor(price)
        pipeline.set_sink(sink)
        report = await pipeline.execute()

        print(f"priced {report.processed} orders, {report.failed} failed "
              f"(dead-lettered: {source.stats.dead_lettered}), "
              f"published {sink.stats.published} with publish acks")
        print(f"orders per minute (event time): {[w.count for w in per_minute.items]}")
        assert report.processed == ORDERS - 1 and source.stats.dead_lettered == 1
        assert sum(w.count for w in per_minute.items) == ORDERS
    finally:
        await delete_stream(stream)


if __name__ == "__main__":
    trio.run(main)
