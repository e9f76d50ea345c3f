"""At-least-once from one RabbitMQ queue to a topic exchange, with a dead letter.

A producer publishes orders to the queue ``<name>.orders``; a StreamingPipeline consumes it
(prefetch 500: the broker never hands the worker more unacknowledged messages than that),
prices the orders and publishes the results to the topic exchange ``<name>.priced`` with
the routing key ``priced.<region>``, each publish persistent, mandatory and confirmed by
the broker. Messages are acknowledged (one multiple-ack per acknowledgment point) only
after the sink wrote their results, so a crash redelivers instead of losing. One order has
a negative quantity on purpose: it fails in the processor and lands in
``<name>.orders.dead`` with the reason in its ``x-haive-reason`` header, and the pipeline
goes on. The windowed count uses each message's timestamp as event time. The source stops
once the queue is empty (``stop_when_drained``).

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and haive-plugin-rabbitmq.
"""

from __future__ import annotations

import os
import uuid

import trio
from haive_plugin_rabbitmq import (
    RabbitMessage,
    delete_exchange,
    delete_queues,
    queue_message_count,
)

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.state.windows import Count, TumblingWindow, WindowedAggregateNode
from haive.dataflow.streaming import RabbitMQSink, RabbitMQSource, StreamingPipeline

ORDERS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 20_000


def price(message: RabbitMessage) -> dict[str, object]:
    order = message.body
    if order["qty"] <= 0:
        raise ValueError(f"order {order['id']}: quantity must be positive, got {order['qty']}")
    return {"id": order["id"], "region": order["region"],
            "total": order["qty"] * order["price"], "at": message.timestamp}


async def main() -> None:
    name = f"example-{uuid.uuid4().hex[:8]}"
    orders, priced, everything = f"{name}.orders", f"{name}.priced", f"{name}.priced-all"
    # declare=True: the queue, its dead-letter queue, the exchange and the binding.
    source = RabbitMQSource(orders, declare=True, prefetch=500, stop_when_drained=True)
    results = RabbitMQSource(everything, declare=True, exchange=priced, exchange_type="topic",
                             routing_keys=["priced.*"], stop_when_drained=True)
    try:
        async with source, results:
            pass
        async with RabbitMQSink(routing_key=orders) as producer:
            batch = [{"id": i, "qty": 1 + i % 5, "price": 2.5, "region": ("eu", "us")[i % 2]}
                     for i in range(ORDERS)]
            batch[7]["qty"] = -1
            await producer.write_batch(batch)

        # Priced orders to the topic exchange, routed by region. Publishing is mandatory: a
        # result no queue is bound for would be refused (and dead-lettered), never dropped.
        sink = RabbitMQSink(priced, routing_key=lambda item: f"priced.{item['region']}")
        pipeline = StreamingPipeline("pricing")
        pipeline.set_source(source)
        pipeline.add_processor(price)
        pipeline.set_sink(sink)
        report = await pipeline.execute()
        print(f"priced {report.processed} orders, {report.failed} failed "
              f"(dead-lettered: {source.stats.dead_lettered}), "
              f"published {sink.stats.published} with publisher confirms")
        assert report.processed == ORDERS - 1 and source.stats.dead_lettered == 1
        assert await queue_message_count(f"{orders}.dead") == 1

        # How many results arrived per minute, in event time (the message timestamp).
        per_minute = MemorySink()
        counting = StreamingPipeline("per-minute")
        counting.set_source(results)
        counting.add_node(WindowedAggregateNode(
            name="per_minute", window=TumblingWindow("1m"), key=lambda m: "all",
            aggregate=Count()))
        counting.set_sink(per_minute)
        await counting.execute()
        print(f"results per minute (event time): {[w.count for w in per_minute.items]}")
        assert sum(w.count for w in per_minute.items) == ORDERS - 1
    finally:
        await delete_queues(orders, f"{orders}.dead", everything, f"{everything}.dead")
        await delete_exchange(priced)


if __name__ == "__main__":
    trio.run(main)
